"""ingest stage: read each source in params.yaml, copy every file content-addressed, write data/raw/records.parquet.

Nothing vanishes: a missing file, a malformed metadata row or a path outside the source folder stays in the table
with `ingest_error` set, and the clean stage turns it into a reject with that reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from atelier import paths
from atelier.config import Columns, SourceParams, load_params
from atelier.io import write_bytes, write_parquet
from atelier.progress import progress_enabled

RAW_COLUMNS = [
    "record_id", "source", "source_uri", "row", "title", "creator", "caption", "license_raw", "license_url",
    "source_url", "noai", "raw_path", "bytes", "ingest_error",
]
TRUE_WORDS = {"1", "true", "yes", "y", "noai", "noimageai"}


@dataclass
class MetadataRow:
    """One row of a source's metadata file, or the reason it could not be parsed."""
    line: int
    fields: dict
    error: str | None = None


def read_metadata(folder: Path) -> list[MetadataRow]:
    """Parse metadata.jsonl or metadata.csv in `folder` (BOM tolerated); malformed rows are returned with an error."""
    jsonl, csv_path = folder / "metadata.jsonl", folder / "metadata.csv"
    if jsonl.exists():
        return parse_jsonl(jsonl.read_bytes())
    if csv_path.exists():
        return parse_csv(csv_path.read_bytes())
    raise FileNotFoundError(f"{folder}: no metadata.jsonl or metadata.csv; add one with a file_name column per image")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", errors="replace")


def parse_jsonl(data: bytes) -> list[MetadataRow]:
    """Parse JSON Lines; each non-blank line is one row."""
    rows = []
    for n, line in enumerate(_decode(data).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(MetadataRow(n, {}, f"metadata_malformed: line {n} is not valid JSON ({exc.msg})"))
            continue
        if not isinstance(obj, dict):
            rows.append(MetadataRow(n, {}, f"metadata_malformed: line {n} is not a JSON object"))
            continue
        rows.append(MetadataRow(n, obj))
    return rows


def parse_csv(data: bytes) -> list[MetadataRow]:
    """Parse CSV with a header row; a row with the wrong number of fields is malformed."""
    reader = csv.reader(io.StringIO(_decode(data).replace("\x00", ""), newline=""))
    rows: list[MetadataRow] = []
    header: list[str] | None = None
    for values in reader:
        n = reader.line_num
        if header is None:
            header = [h.strip() for h in values]
            continue
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            rows.append(MetadataRow(n, {}, f"metadata_malformed: line {n} has {len(values)} fields, header has {len(header)}"))
            continue
        rows.append(MetadataRow(n, dict(zip(header, values))))
    return rows


def _text(value: object) -> str:
    if value is None:
        return ""
    return str(value).replace("\x00", "").strip()


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return _text(value).lower() in TRUE_WORDS


def _extension(file_name: str) -> str:
    ext = Path(file_name).suffix.lower().lstrip(".")
    return ext if re.fullmatch(r"[a-z0-9]{1,5}", ext) else "bin"


def resolve_inside(folder: Path, file_name: str) -> Path | None:
    """The file's path if `file_name` stays inside `folder` (symlinks resolved), else None."""
    if not file_name or Path(file_name).is_absolute():
        return None
    root = folder.resolve()
    target = (root / file_name).resolve()
    return target if target.is_relative_to(root) else None


def ingest_row(row: MetadataRow, folder: Path, source: str, columns: Columns, images_dir: Path) -> dict:
    """Turn one metadata row into one raw record, copying its file content-addressed into `images_dir`."""
    f = row.fields
    file_name = _text(f.get(columns.file_name))
    record = {
        "source": source,
        "source_uri": file_name or f"<line {row.line}>",
        "row": row.line,
        "title": _text(f.get(columns.title)),
        "creator": _text(f.get(columns.creator)),
        "caption": _text(f.get(columns.caption)),
        "license_raw": _text(f.get(columns.license)),
        "license_url": _text(f.get(columns.license_url)),
        "source_url": _text(f.get(columns.source_url)),
        "noai": _flag(f.get(columns.noai)),
        "raw_path": None,
        "bytes": None,
        "ingest_error": row.error,
    }
    if record["ingest_error"] is None and not file_name:
        record["ingest_error"] = f"metadata_malformed: line {row.line} has no '{columns.file_name}' value"
    if record["ingest_error"] is None:
        path = resolve_inside(folder, file_name)
        if path is None:
            record["ingest_error"] = f"path_outside_source: '{file_name}' points outside source '{source}'; refused"
        elif not path.is_file():
            record["ingest_error"] = f"file_missing: '{file_name}' (line {row.line}) does not exist in source '{source}'"
    if record["ingest_error"] is not None:
        key = f"{source}\0{record['source_uri']}\0{row.line}".encode()
        record["record_id"] = "missing-" + hashlib.sha256(key).hexdigest()[:56]
        return record
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    target = images_dir / f"{digest}.{_extension(file_name)}"
    if not target.exists():
        write_bytes(target, data)
    record.update(record_id=digest, raw_path=paths.relative(target), bytes=len(data))
    return record


def ingest_source(source: SourceParams, images_dir: Path) -> list[dict]:
    """Ingest every metadata row of one folder source."""
    folder = (paths.ROOT / source.path) if not Path(source.path).is_absolute() else Path(source.path)
    if not folder.is_dir():
        raise FileNotFoundError(f"source '{source.name}': folder {folder} does not exist (params.yaml ingest.sources)")
    rows = read_metadata(folder)
    return [ingest_row(r, folder, source.name, source.columns, images_dir)
            for r in tqdm(rows, desc=f"ingest {source.name}", disable=not progress_enabled())]


def main() -> dict:
    """Ingest all sources into data/raw; return counts per source and errors per reason."""
    params = load_params().ingest
    records = []
    for source in params.sources:
        records.extend(ingest_source(source, paths.RAW_IMAGES))
    frame = pd.DataFrame(records, columns=RAW_COLUMNS)
    write_parquet(paths.RAW_RECORDS, frame)
    errors = Counter(e.split(":")[0] for e in frame["ingest_error"].dropna())
    summary = {"records_per_source": frame["source"].value_counts().to_dict(), "ingest_errors": dict(errors)}
    print(f"ingest: {len(frame)} records {summary['records_per_source']}; errors {dict(errors)}")
    return summary


if __name__ == "__main__":
    main()
