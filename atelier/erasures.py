"""The erasure tombstones (policy/erasures.csv): one row per record erased by `atelier forget`, so that ingest never
takes it in again. A row holds no personal data and not even the record id (the image's sha256), only its digest:

    erasure,record_digest,erased_at,reason,requested_by

`record_digest` is sha256 of the record id's hex text (record_digest()); `erasure` numbers the request (E1, E2, ...;
the rows of one request share it); `erased_at` is UTC, ISO 8601; `reason` and `requested_by` are stored as given.
The ingest stage hashes each record id it computes and excludes a match with ingest_error "erased: ..." and every
identifying field blanked (erased_record()); the clean stage then rejects it with reason `erased`.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

from atelier import paths
from atelier.io import write_text
from atelier.rights import csv_cell, from_csv_cell


def tombstones_path() -> Path:
    """policy/erasures.csv (paths.ERASURES when paths defines it), looked up when called so tests can move it."""
    return getattr(paths, "ERASURES", paths.ROOT / "policy" / "erasures.csv")


HEADER = ("erasure", "record_digest", "erased_at", "reason", "requested_by")
# Fields of a raw record that name or describe the work or a person: blanked in an erased record's row.
PERSONAL = ("title", "creator", "caption", "license_raw", "license_url", "source_url")


def record_digest(record_id: str) -> str:
    """The tombstone's name for a record: sha256 of its record id (hex text)."""
    return hashlib.sha256(record_id.strip().lower().encode()).hexdigest()


def read_tombstones(path: Path | None = None) -> list[dict]:
    """Every tombstone row (an absent file: none)."""
    path = path or tombstones_path()
    if not path.exists():
        return []
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    if rows and set(HEADER) - set(rows[0]):
        raise ValueError(f"{path}: expected the columns {', '.join(HEADER)}; restore its header")
    return [{k: from_csv_cell(row[k] or "") for k in HEADER} for row in rows]


def erased_digests(path: Path | None = None) -> dict[str, str]:
    """record digest -> the erasure that erased it."""
    return {row["record_digest"]: row["erasure"] for row in read_tombstones(path)}


def erasure_count(path: Path | None = None) -> int:
    """How many records have been erased (distinct tombstones): for the dataset card and the audit."""
    return len(erased_digests(path))


def add_tombstones(record_ids: list[str], erased_at: str, reason: str, by: str, path: Path | None = None) -> str:
    """Append one erasure's rows (records already erased are skipped); return the erasure's name (E1, E2, ...)."""
    path = path or tombstones_path()
    rows = read_tombstones(path)
    done = {row["record_digest"] for row in rows}
    name = f"E{1 + len({row['erasure'] for row in rows})}"
    text = path.read_text(encoding="utf-8") if path.exists() else ",".join(HEADER) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for digest in sorted({record_digest(r) for r in record_ids} - done):
        writer.writerow([name, digest, erased_at, csv_cell(reason), csv_cell(by)])
    write_text(path, text.rstrip("\n") + "\n" + buf.getvalue())
    return name


def erased_record(record: dict, erasure: str) -> dict:
    """A raw record (records.parquet or ingest index row) as it stays after an erasure: its source and row (where the
    operator removes it from the source), ingest_error "erased: ...", and nothing that identifies the work."""
    digest = record_digest(record["record_id"]) if not record["record_id"].startswith("erased-") else None
    out = dict(record)
    out.update({k: "" for k in PERSONAL if k in out})
    out.update(
        record_id=f"erased-{digest[:56]}" if digest else record["record_id"],
        source_uri="(erased)",
        raw_pack=None,
        bytes=None,
        ingest_error=f"erased: by erasure {erasure} (policy/erasures.csv)",
    )
    for k in ("fingerprint", "chunk", "lines_key"):  # index rows: nothing that names the file, never reused whole
        if k in out:
            out[k] = None if k == "fingerprint" else ""
    return out
