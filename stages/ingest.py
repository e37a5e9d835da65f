"""ingest stage: read each source in params.yaml, copy every file content-addressed, write data/raw/records.parquet.

Nothing vanishes: a missing file, a malformed metadata row or a path outside the source folder stays in the table
with `ingest_error` set, and the clean stage turns it into a reject with that reason.

Hostile metadata is refused row by row, never by crashing: bytes that are not UTF-8, lone surrogates, JSON nested
too deeply or with absurd numbers, a field longer than MAX_FIELD_CHARS (refused, not cut: a cut creator name would
misattribute), a `file_name` with a NUL byte, a folder, a pipe, a link loop or a file over MAX_FILE_BYTES.
A `noai` value fails closed: anything but an explicit no (false, 0, no, empty) opts the work out.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
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
FALSE_WORDS = {"", "0", "false", "no", "n", "off", "none", "null"}  # the only `noai` values that do not opt out
MAX_FIELD_CHARS = 10_000      # a longer metadata field is refused (metadata_malformed), never cut
MAX_FILE_BYTES = 256 * 2**20  # a bigger file is refused (file_too_large) before it is read into memory


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
    """UTF-8 text, a leading BOM dropped; bytes that are not UTF-8 become lone surrogates for _not_text to report."""
    return data.decode("utf-8-sig", errors="surrogateescape")


def _not_text(text: str) -> str | None:
    """Why `text` cannot be stored (bytes that were not UTF-8, or a JSON escape of a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        if 0xDC80 <= code <= 0xDCFF:
            return f"is not valid UTF-8 (byte 0x{code - 0xDC00:02X}); save the metadata file as UTF-8"
        return f"contains an unpaired surrogate (\\u{code:04x}), which is not text"
    return None


def parse_jsonl(data: bytes) -> list[MetadataRow]:
    """Parse JSON Lines; each non-blank line (split on newlines only, as JSON Lines says) is one row."""
    rows = []
    for n, line in enumerate(_decode(data).split("\n"), start=1):
        if not line.strip():
            continue
        problem = _not_text(line)
        if problem:
            rows.append(MetadataRow(n, {}, f"metadata_malformed: line {n} {problem}"))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(MetadataRow(n, {}, f"metadata_malformed: line {n} is not valid JSON ({exc.msg})"))
            continue
        except (ValueError, RecursionError) as exc:  # an integer of thousands of digits; absurdly deep nesting
            why = "is nested too deeply" if isinstance(exc, RecursionError) else f"holds an unreadable value ({exc})"
            rows.append(MetadataRow(n, {}, f"metadata_malformed: line {n} {why}"))
            continue
        if not isinstance(obj, dict):
            rows.append(MetadataRow(n, {}, f"metadata_malformed: line {n} is not a JSON object"))
            continue
        problem = _not_text(json.dumps(obj, ensure_ascii=False))
        if problem:
            rows.append(MetadataRow(n, {}, f"metadata_malformed: line {n} {problem}"))
            continue
        rows.append(MetadataRow(n, obj))
    return rows


def parse_csv(data: bytes) -> list[MetadataRow]:
    """Parse CSV with a header row; a row with the wrong number of fields, or that cannot be read, is malformed."""
    reader = csv.reader(io.StringIO(_decode(data), newline=""))
    rows: list[MetadataRow] = []
    header: list[str] | None = None
    header_problem: str | None = None
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit() (131072 characters)
            values, problem = None, f"cannot be read as CSV ({exc})"
        else:
            problem = _not_text("".join(values))
        n = reader.line_num
        if header is None:
            header = [h.replace("\x00", "").strip() for h in values or []]
            duplicated = sorted({h for h in header if header.count(h) > 1})
            header_problem = problem or (f"names column(s) {duplicated} twice" if duplicated else None)
            continue
        if values is not None and not any(v.strip() for v in values):
            continue
        if header_problem:
            rows.append(MetadataRow(n, {}, f"metadata_malformed: line {n}: the header row {header_problem}"))
        elif problem:
            rows.append(MetadataRow(n, {}, f"metadata_malformed: line {n} {problem}"))
        elif len(values) != len(header):
            rows.append(MetadataRow(n, {}, f"metadata_malformed: line {n} has {len(values)} fields, header has {len(header)}"))
        else:
            rows.append(MetadataRow(n, dict(zip(header, values))))
    return rows


def _text(value: object) -> str:
    """A metadata value as text: NUL bytes dropped, stripped, at most MAX_FIELD_CHARS (longer rows are refused)."""
    if value is None:
        return ""
    return str(value).replace("\x00", "").strip()[:MAX_FIELD_CHARS]


def _flag(value: object) -> bool:
    """A noai/noimageai flag. Fails closed: only an explicit no (FALSE_WORDS, 0, false) leaves the work in."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0  # NaN != 0: opted out
    return _text(value).lower() not in FALSE_WORDS


def _field_problem(fields: dict, columns: Columns) -> str | None:
    """Why a parsed row's fields cannot be used (a JSON object or list as text, a field too long, a NUL in a name)."""
    for key, column in columns.model_dump().items():
        value = fields.get(column)
        if key != "noai" and isinstance(value, (dict, list)):
            return f"field '{column}' is a JSON {'object' if isinstance(value, dict) else 'list'}, not text"
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            return f"field '{column}' has {len(value)} characters, over the limit of {MAX_FIELD_CHARS}; shorten it"
    if "\x00" in str(fields.get(columns.file_name) or ""):
        return f"field '{columns.file_name}' contains a NUL byte"
    return None


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


def locate(folder: Path, file_name: str, source: str, line: int) -> tuple[Path | None, str | None]:
    """The regular file that `file_name` names inside `folder`, or None and why not (an `ingest_error`)."""
    where = f"'{file_name}' (line {line})"
    try:
        path = resolve_inside(folder, file_name)
        if path is None:
            return None, f"path_outside_source: '{file_name}' points outside source '{source}'; refused"
        if not path.exists():
            if os.path.lexists(folder / file_name):
                return None, f"file_missing: {where} is a link to nothing in source '{source}'"
            return None, f"file_missing: {where} does not exist in source '{source}'"
        if path.is_dir():
            return None, f"file_unreadable: {where} is a folder, not a file"
        if not path.is_file():
            return None, f"file_unreadable: {where} is not a regular file (a pipe, socket or device); refused"
        size = path.stat().st_size
    except RuntimeError:  # pathlib's symlink loop
        return None, f"file_unreadable: {where} is a loop of symbolic links"
    except OSError as exc:
        return None, f"file_unreadable: {where} cannot be opened: {exc.strerror or exc}"
    if size > MAX_FILE_BYTES:
        return None, f"file_too_large: {where} has {size} bytes, over the limit of {MAX_FILE_BYTES} for one image"
    return path, None


def ingest_row(row: MetadataRow, folder: Path, source: str, columns: Columns, images_dir: Path) -> dict:
    """Turn one metadata row into one raw record, copying its file content-addressed into `images_dir`."""
    f = row.fields
    file_name = _text(f.get(columns.file_name))
    if row.error is None and (problem := _field_problem(f, columns)):
        row = MetadataRow(row.line, f, f"metadata_malformed: line {row.line} {problem}")
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
        path, record["ingest_error"] = locate(folder, file_name, source, row.line)
    if record["ingest_error"] is None:
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            record["ingest_error"] = (f"file_unreadable: '{file_name}' (line {row.line}) cannot be read: "
                                      f"{exc.strerror or exc}")
        else:
            if len(data) > MAX_FILE_BYTES:  # it grew after locate() looked
                record["ingest_error"] = (f"file_too_large: '{file_name}' (line {row.line}) is over "
                                          f"{MAX_FILE_BYTES} bytes")
    if record["ingest_error"] is not None:
        key = f"{source}\0{record['source_uri']}\0{row.line}".encode()
        record["record_id"] = "missing-" + hashlib.sha256(key).hexdigest()[:56]
        return record
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
