"""`atelier forget RECORD_ID_OR_CREATOR` or `--image FILE`: erasure of a data subject's work (issue 18, item 4).

A takedown stops training on a work; an erasure also deletes it. The records are found as a takedown finds them
(app/takedown.py: a record id, a creator under any spelling or alias, or a picture by sha256 or perceptual
hash with its duplicate group); then, in this order:
1. the tombstone: policy/erasures.csv gets one row per record (atelier/erasures.py: its digest, when, why, who asked;
   no personal data), so ingest excludes it wherever it appears again (reason `erased`); written first, so a forget
   that stops half-way still keeps the record out of the next run;
2. the raw store: its bytes leave the packs (rewritten without it, still encrypted), and its rows in
   data/raw/records.parquet and the ingest index keep only source and row, with ingest_error "erased: ...";
3. data/clean: its rows leave records, rejects and decoded, its PNG leaves the packs, and chunks.parquet is removed
   (the next clean run rebuilds its bookkeeping); text naming it (a duplicate's "same bytes as <uri>") is redacted;
4. data/licensed: rebuilt from the erased data/clean by the license stage's own code (tables, attribution, cards);
5. reports/: every text file that names it (record id, title, caption, file, URL; the creator when forgetting a
   creator) is redacted in place; a binary file holding its bytes is deleted;
6. the DVC cache: every object that holds it (its record id, its original or training bytes, a personal string, or
   a Parquet table with a row of it) is deleted, and the run cache (hashes only) is cleared so DVC cannot try to
   restore an erased output. Not `dvc gc --workspace`: that keeps what dvc.lock still names (the erased outputs)
   and deletes every other version, including the training data that older model versions' lineage reads;
7. the ledger: provenance/ledger.erase_record (personal fields of the nearest-training-image items, the content of
   the log entries that held them; an 'erasure' entry); the signed head is sealed again when there is one;
8. the registry: the model versions trained on it get the `takedown` tag (as a takedown sets it), so promotion
   refuses them and an audit of their artworks says so; the next `atelier run` retrains without it (its training
   table changed).

What stays, honestly: artworks already published keep their embedded signed manifests (and sidecars) naming the
nearest training images as they were; the source itself is its owner's (ingest only excludes it until the file is
removed there); model weights trained on it exist until retraining replaces them. `--dry-run` finds and counts,
and writes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app import takedown
from atelier import erasures, paths, rawstore
from atelier.config import load_params
from atelier.io import ParquetStream, read_frame, read_table, write_bytes
from atelier.rights import creator_matches, read_opt_outs
from provenance import ledger
from provenance.usage import used_by

REDACTED = "(erased)"
MIN_NEEDLE = 8  # a personal string shorter than this is too common to search the cache for


def find(target: str | None, image: Path | None, creator: bool = False) -> dict:
    """The records to forget: {"kind", "target", "record_ids", "sources"} (sources: {source: rows found})."""
    raw = read_frame(paths.RAW_RECORDS, ["record_id", "source", "source_uri", "title", "creator", "license_raw"])
    if image is not None:
        data = Path(image).read_bytes()
        matches = takedown.matching_records(data, load_params().clean.near_duplicate_hamming)
        ids = set(matches["record_id"]) | {hashlib.sha256(data).hexdigest()}
        kind, target = "image", str(image)
    elif (resolved := takedown.resolve_target(target, creator))[0] == "record_id":
        ids, kind, target = {resolved[1]}, "record_id", resolved[1]
    else:
        hits = creator_matches(raw.to_dict("records"), target, read_opt_outs(paths.OPT_OUT))
        ids, kind = set(raw.loc[hits, "record_id"]), "creator"
    found = raw[raw["record_id"].isin(ids)]
    return {
        "kind": kind,
        "target": target,
        "record_ids": sorted(ids),
        "sources": found["source"].value_counts().sort_index().to_dict(),
    }


def needles(record_ids: set[str], by_creator: bool) -> tuple[list[str], list[bytes]]:
    """What identifies the records, to search for: (text: record ids, titles, captions, file names and URLs, the
    creator when forgetting a creator; bytes: the originals and the training copies). Read before anything is erased."""
    text, blobs = set(record_ids), []
    if paths.RAW_RECORDS.exists():
        raw = pd.read_parquet(paths.RAW_RECORDS)
        rows = raw[raw["record_id"].isin(record_ids)]
        for column in ("title", "caption", "source_uri", "source_url") + (("creator",) if by_creator else ()):
            if column in rows:
                text |= {v for v in rows[column].dropna() if len(v) >= MIN_NEEDLE}
        stored = rows.dropna(subset=["raw_pack"]) if "raw_pack" in rows else rows.iloc[:0]
        for record in stored.drop_duplicates("record_id").to_dict("records"):
            try:
                blobs.append(rawstore.read_bytes(record))
            except FileNotFoundError:
                pass
    for pack in sorted(paths.CLEAN_PACKS.glob("*.parquet")) if paths.CLEAN_PACKS.exists() else []:
        blobs += rawstore.read_pack(pack, record_ids).values()
    return sorted(text, key=lambda t: (-len(t), t)), blobs


def _rewrite(path: Path, table: pa.Table) -> None:
    with ParquetStream(path, table.schema) as out:
        out.write_table(table)


def _redact_table(table: pa.Table, text: list[str]) -> pa.Table:
    """Every string column with each of `text` replaced by REDACTED."""
    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            column = table.column(i)
            for needle in text:
                column = pc.replace_substring(column, needle, REDACTED)
            table = table.set_column(i, field, column)
    return table


def erase_raw(record_ids: set[str], erasure: str) -> int:
    """Take the records out of the raw store and its index (rows kept as erasures.erased_record); return packs
    rewritten."""
    changed = rawstore.remove_records(paths.RAW_PACKS, record_ids)
    for path in (paths.RAW_RECORDS, paths.INGEST_INDEX):
        if not path.exists():
            continue
        table = read_table(path)
        rows = [erasures.erased_record(r, erasure) if r["record_id"] in record_ids else r for r in table.to_pylist()]
        if path == paths.INGEST_INDEX:  # no chunk is copied whole after an erasure: each is checked again
            rows = [{**r, "chunk": "", "lines_key": ""} for r in rows]
        _rewrite(path, pa.Table.from_pylist(rows, schema=table.schema))
    paths.INGEST_COMPACTED.unlink(missing_ok=True)
    return changed


def erase_clean(record_ids: set[str], text: list[str]) -> int:
    """Take the records out of data/clean (tables, packs; chunk bookkeeping removed); return rows removed."""
    removed = 0
    for path in (paths.CLEAN_RECORDS, paths.CLEAN_REJECTS, paths.CLEAN_DECODED):
        if not path.exists():
            continue
        table = read_table(path)
        keep = pc.invert(pc.is_in(table["record_id"], pa.array(sorted(record_ids), pa.string())))
        kept = _redact_table(table.filter(keep), text)
        removed += table.num_rows - kept.num_rows
        _rewrite(path, kept)
    rawstore.remove_records(paths.CLEAN_PACKS, record_ids)
    paths.CLEAN_CHUNKS.unlink(missing_ok=True)
    return removed


def rebuild_licensed() -> bool:
    """Write data/licensed again from the erased data/clean with the license stage's code; False when no clean data."""
    if not paths.CLEAN_RECORDS.exists():
        return False
    from stages import license as license_stage

    with contextlib.redirect_stdout(sys.stderr):  # the stage's own line: the command's answer stays on stdout
        license_stage.main()
    return True


def redact_reports(text: list[str], blobs: list[bytes]) -> list[str]:
    """Redact `text` in every text file under reports/ that holds any; delete a binary file holding a blob; return
    the files changed (relative)."""
    changed = []
    for path in sorted(p for p in paths.REPORTS.rglob("*") if p.is_file()) if paths.REPORTS.exists() else []:
        data = path.read_bytes()
        if any(b in data for b in blobs):
            path.unlink()
            changed.append(paths.relative(path))
            continue
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        redacted = content
        for needle in text:
            redacted = redacted.replace(needle, REDACTED)
        if redacted != content:
            write_bytes(path, redacted.encode("utf-8"))
            changed.append(paths.relative(path))
    return changed


def _holds(path: Path, record_ids: set[str], patterns: list[bytes]) -> bool:
    """Whether a file holds any of `patterns`, or is a Parquet table with a row of `record_ids`."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return False
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if any(data.find(p) != -1 for p in patterns):
                return True
            parquet = data[:4] == b"PAR1"
    if parquet:
        try:
            schema = pq.read_schema(path)
            if "record_id" in schema.names:
                ids = read_table(path, columns=["record_id"])["record_id"]
                return bool(pc.any(pc.is_in(ids, pa.array(sorted(record_ids), pa.string()))).as_py())
        except (pa.ArrowException, OSError):
            return False
    return False


def erase_cache(record_ids: set[str], text: list[str], blobs: list[bytes]) -> int:
    """Delete every DVC cache object holding the records (and the run cache); return objects deleted."""
    cache = paths.ROOT / ".dvc" / "cache"
    patterns = [t.encode("utf-8") for t in text] + blobs
    deleted = 0
    files = cache / "files"
    for path in sorted(p for p in files.rglob("*") if p.is_file()) if files.exists() else []:
        if _holds(path, record_ids, patterns):
            path.chmod(0o600)  # DVC keeps its objects read-only
            path.unlink()
            deleted += 1
    shutil.rmtree(cache / "runs", ignore_errors=True)  # hashes of earlier runs: never restore an erased output
    return deleted


def erase_ledger(record_ids: set[str], at: str, reason: str) -> dict:
    """ledger.erase_record for each record; the signed head sealed again when there is one; return counts."""
    if not ledger.exists():
        return {"artworks": 0, "refusals": 0, "entries_erased": 0}
    from provenance import publiclog

    conn = ledger.open_ledger()
    try:
        entries = [
            ledger.erase_record(conn, rid, erasures.record_digest(rid), at, reason) for rid in sorted(record_ids)
        ]
        if publiclog.head_path(conn).exists():
            from provenance.keys import ensure_signing_identity

            publiclog.seal(conn, ensure_signing_identity())
    finally:
        conn.close()
    return {k: len({x for e in entries for x in e[k]}) for k in ("artworks", "refusals", "entries_erased")}


def forget(
    target: str | None = None,
    image: Path | None = None,
    reason: str = "",
    by: str = "",
    dry_run: bool = False,
    creator: bool = False,
) -> dict:
    """Find the records of `target` (record id or creator) or `image`, and unless `dry_run` erase them everywhere
    (see the module docstring); return what was found and done."""
    if (target is None) == (image is None):
        raise ValueError("forget needs a creator name or record id, or --image FILE (one of them)")
    if not reason.strip():
        raise ValueError("forget needs --reason: why the record is erased (kept in the tombstone)")
    report = find(target, image, creator)
    ids = set(report["record_ids"])
    lineage = (
        used_by(lambda records: records["record_id"].isin(ids))
        if ids
        else {"model": None, "versions": [], "artworks": [], "versions_with_unknown_data": []}
    )
    report |= {k: lineage[k] for k in ("model", "versions", "artworks", "versions_with_unknown_data")}
    report["dry_run"] = dry_run
    if dry_run or not ids:
        return report
    text, blobs = needles(ids, by_creator=report["kind"] == "creator")
    at = datetime.now(UTC).isoformat(timespec="seconds")
    erasure = erasures.add_tombstones(sorted(ids), at, reason, by)
    report |= {
        "erasure": erasure,
        "erased_at": at,
        "raw_packs_rewritten": erase_raw(ids, erasure),
        "clean_rows_removed": erase_clean(ids, text),
        "licensed_rebuilt": rebuild_licensed(),
        "reports_redacted": redact_reports(text, blobs),
        "cache_objects_deleted": erase_cache(ids, text, blobs),
        "ledger": erase_ledger(ids, at, reason),
    }
    if report["versions"]:
        from registry import tracking

        note = f"{at[:10]}: trained on a record erased by {erasure} (policy/erasures.csv: {reason}); retrain without it"
        for v in report["versions"]:
            tracking.tag_version(report["model"], v["version"], "takedown", note)
    return report


def format_report(r: dict) -> str:
    """Plain-text answer for the data subject and the operator (no personal data beyond what was asked)."""
    head = "Dry run: erasure" if r["dry_run"] else "Erasure"
    lines = [
        f"{head} of {r['kind']} '{r['target']}': {len(r['record_ids'])} records "
        f"({', '.join(f'{s}: {n}' for s, n in r['sources'].items()) or 'none in the raw store'})"
    ]
    lines += [
        f"  model versions trained on it: {[v['version'] for v in r['versions']] or 'none'}",
        f"  artworks those versions made: {len(r['artworks'])}",
    ]
    if not r["record_ids"]:
        return "\n".join(lines + ["  nothing to erase"])
    if r["dry_run"]:
        return "\n".join(lines + ["  dry run: nothing was erased; run without --dry-run to erase it"])
    lines += [
        f"  tombstone {r['erasure']} in policy/erasures.csv (ingest excludes it as `erased` from now on)",
        f"  raw packs rewritten: {r['raw_packs_rewritten']}; clean rows removed: {r['clean_rows_removed']}; "
        f"data/licensed rebuilt: {'yes' if r['licensed_rebuilt'] else 'no data'}",
        f"  reports redacted: {len(r['reports_redacted'])}; DVC cache objects deleted: {r['cache_objects_deleted']}",
        f"  ledger: {r['ledger']['artworks']} artworks and {r['ledger']['refusals']} refusals scrubbed, "
        f"{r['ledger']['entries_erased']} log entries erased (the chain still verifies)",
    ]
    if r["versions"]:
        lines.append("  those versions are now marked `takedown`; the next `atelier run` retrains without it")
    lines.append(
        "  artworks already published keep their embedded signed manifests; remove the file from its "
        "source too (until then ingest excludes it)"
    )
    return "\n".join(lines)
