"""Streaming parsers for metadata files (JSON Lines and CSV). Malformed rows are returned with an error, never
dropped; bytes that are not UTF-8, lone surrogates and absurd JSON are malformed rows, not crashes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class MetadataRow:
    """One row of a metadata file, or the reason it could not be parsed."""

    line: int
    fields: dict
    error: str | None = None
    text: str = ""  # the row as written (a JSON line; CSV values joined): what ingest's chunk key hashes


def not_text(text: str) -> str | None:
    """Why `text` cannot be stored (bytes that were not UTF-8, or a JSON escape of a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        if 0xDC80 <= code <= 0xDCFF:
            return f"is not valid UTF-8 (byte 0x{code - 0xDC00:02X}); save the metadata file as UTF-8"
        return f"contains an unpaired surrogate (\\u{code:04x}), which is not text"
    return None


def iter_jsonl(lines: Iterable[bytes], first: int = 1) -> Iterator[MetadataRow]:
    """Parse JSON Lines from raw byte lines (split on b"\\n" only, as JSON Lines says), the first being line `first`
    of its file; a leading BOM is dropped."""
    for n, raw in enumerate(lines, start=first):
        if n == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:  # strict UTF-8 cannot hold a lone surrogate: only a line that fails here needs a closer look
            line, problem = raw.decode("utf-8").rstrip("\n"), None
        except UnicodeDecodeError:
            line = raw.decode("utf-8", errors="surrogateescape").rstrip("\n")
            problem = not_text(line)
        if not line.strip():
            continue
        if problem:
            yield MetadataRow(n, {}, f"metadata_malformed: line {n} {problem}")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield MetadataRow(n, {}, f"metadata_malformed: line {n} is not valid JSON ({exc.msg})")
            continue
        except (ValueError, RecursionError) as exc:  # an integer of thousands of digits; absurdly deep nesting
            why = "is nested too deeply" if isinstance(exc, RecursionError) else f"holds an unreadable value ({exc})"
            yield MetadataRow(n, {}, f"metadata_malformed: line {n} {why}")
            continue
        if not isinstance(obj, dict):
            yield MetadataRow(n, {}, f"metadata_malformed: line {n} is not a JSON object")
            continue
        # a lone surrogate can only come from a \\u escape (raw ones were refused above): look only then
        problem = not_text(json.dumps(obj, ensure_ascii=False)) if "\\u" in line else None
        if problem:
            yield MetadataRow(n, {}, f"metadata_malformed: line {n} {problem}")
            continue
        yield MetadataRow(n, obj, text=line)


def iter_csv(text: Iterable[str]) -> Iterator[MetadataRow]:
    """Parse CSV with a header row from text opened with newline=""; a row with the wrong number of fields, or that
    cannot be read, is malformed."""
    reader = csv.reader(text)
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
            problem = not_text("".join(values))
        n = reader.line_num
        if header is None:
            header = [h.replace("\x00", "").strip() for h in values or []]
            header_text = "\x1f".join(header)  # the columns are part of each row's meaning
            duplicated = sorted({h for h in header if header.count(h) > 1})
            header_problem = problem or (f"names column(s) {duplicated} twice" if duplicated else None)
            continue
        if values is not None and not any(v.strip() for v in values):
            continue
        if header_problem:
            yield MetadataRow(n, {}, f"metadata_malformed: line {n}: the header row {header_problem}")
        elif problem:
            yield MetadataRow(n, {}, f"metadata_malformed: line {n} {problem}")
        elif len(values) != len(header):
            yield MetadataRow(n, {}, f"metadata_malformed: line {n} has {len(values)} fields, header has {len(header)}")
        else:
            yield MetadataRow(n, dict(zip(header, values)), text=header_text + "\x1e" + "\x1f".join(values))


def parse_jsonl(data: bytes) -> list[MetadataRow]:
    """All rows of JSON Lines held in memory (tests and small files)."""
    return list(iter_jsonl(io.BytesIO(data)))


def parse_csv(data: bytes) -> list[MetadataRow]:
    """All rows of a CSV file held in memory (tests and small files)."""
    return list(
        iter_csv(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", errors="surrogateescape", newline=""))
    )


def iter_metadata_file(path: Path) -> Iterator[MetadataRow]:
    """Stream the rows of a .jsonl/.json or .csv metadata file, one at a time."""
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        with path.open("rb") as fh:
            yield from iter_jsonl(fh)
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            yield from iter_csv(fh)
    else:
        raise ValueError(f"{path}: metadata must be .jsonl or .csv")


def iter_folder_metadata(folder: Path) -> Iterator[MetadataRow]:
    """The rows of metadata.jsonl or metadata.csv in `folder`."""
    for name in ("metadata.jsonl", "metadata.csv"):
        if (folder / name).exists():
            return iter_metadata_file(folder / name)
    raise FileNotFoundError(f"{folder}: no metadata.jsonl or metadata.csv; add one with a file_name column per image")
