"""ingest stage: read every source in params.yaml, copy each image content-addressed, write data/raw/records.parquet.

Nothing vanishes: a missing file, a malformed metadata row, a refused download or a path outside the source stays
in the table with `ingest_error` set, and the clean stage turns it into a reject with that reason.

Hostile metadata is refused row by row, never by crashing: bytes that are not UTF-8, lone surrogates, JSON nested
too deeply or with absurd numbers, a field longer than ingest.max_field_chars (refused, not cut: a cut creator name
would misattribute), a `file_name` with a NUL byte, a folder, a pipe, a link loop or a file over
ingest.max_file_bytes. A `noai` value fails closed: anything but an explicit no (false, 0, no, empty) opts out.

At scale: sources stream their items; chunks of items are read, hashed and copied by the engine's workers (a local
process pool, or Dask when engine.dask_scheduler is set) and written to Parquet chunk by chunk, so memory does not
grow with the number of records. Incremental: an item whose fingerprint (path, size and mtime; URL; shard member)
was ingested before (.atelier/ingest-index.parquet), and whose copy is still in data/raw/images, is not read
again (`dvc.yaml` marks data/raw `persist`). Copies no current record refers to are removed at the end, so data/raw is a function of the sources.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from atelier import paths
from atelier.config import Columns, IngestParams, load_params
from atelier.io import ParquetStream, write_bytes
from atelier.parallel import Engine, chunked
from atelier.progress import progress_enabled
from atelier.sources import Item, iter_items

RAW_SCHEMA = pa.schema([
    ("record_id", pa.string()), ("source", pa.string()), ("source_uri", pa.string()), ("row", pa.int64()),
    ("title", pa.string()), ("creator", pa.string()), ("caption", pa.string()), ("license_raw", pa.string()),
    ("license_url", pa.string()), ("source_url", pa.string()), ("noai", pa.bool_()), ("raw_path", pa.string()),
    ("bytes", pa.int64()), ("ingest_error", pa.string()),
])
RAW_COLUMNS = RAW_SCHEMA.names
# The incremental index (paths.INGEST_INDEX): which fingerprint gave which copy. Kept out of data/raw on purpose:
# fingerprints hold paths and mtimes, and data/raw must depend only on the sources' contents.
INDEX_SCHEMA = pa.schema([("fingerprint", pa.string()), ("record_id", pa.string()), ("raw_path", pa.string()),
                          ("bytes", pa.int64())])

FALSE_WORDS = {"", "0", "false", "no", "n", "off", "none", "null"}  # the only `noai` values that do not opt out
# Magic bytes -> the extension of the raw copy (the name a source gave the file may lie).
MAGIC = [(b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
         (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif")]


def _text(value: object, max_chars: int) -> str:
    """A metadata value as text: NUL bytes dropped, stripped, at most `max_chars` (longer rows are refused)."""
    if value is None:
        return ""
    return str(value).replace("\x00", "").strip()[:max_chars]


def _flag(value: object) -> bool:
    """A noai/noimageai flag. Fails closed: only an explicit no (FALSE_WORDS, 0, false) leaves the work in."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0  # NaN != 0: opted out
    return str(value).replace("\x00", "").strip().lower() not in FALSE_WORDS


def _field_problem(fields: dict, columns: Columns, max_chars: int) -> str | None:
    """Why a parsed row's fields cannot be used (a JSON object or list as text, a field too long, a NUL in a name)."""
    for key, column in columns.model_dump().items():
        value = fields.get(column)
        if key != "noai" and isinstance(value, (dict, list)):
            return f"field '{column}' is a JSON {'object' if isinstance(value, dict) else 'list'}, not text"
        if isinstance(value, str) and len(value) > max_chars:
            return (f"field '{column}' has {len(value)} characters, over ingest.max_field_chars={max_chars}; "
                    "shorten it")
    if "\x00" in str(fields.get(columns.file_name) or ""):
        return f"field '{columns.file_name}' contains a NUL byte"
    return None


def _extension(data: bytes) -> str:
    """The raw copy's extension, from the content: what the bytes are, not what the file was called."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in MAGIC if data.startswith(magic)), "bin")


def _read(item: Item, max_file_bytes: int) -> tuple[bytes | None, str | None]:
    """The item's bytes, or None and why not."""
    if item.data is not None:
        data = item.data
    else:
        try:
            with open(item.path, "rb") as fh:
                data = fh.read(max_file_bytes + 1)
        except OSError as exc:
            return None, f"file_unreadable: '{item.uri}' (line {item.row}) cannot be read: {exc.strerror or exc}"
    if len(data) > max_file_bytes:  # it grew after the source looked, or a source that cannot know sizes early
        return None, f"file_too_large: '{item.uri}' (line {item.row}) is over ingest.max_file_bytes={max_file_bytes}"
    return data, None


def ingest_item(item: Item, source: str, columns: Columns, images_dir: Path, limits: tuple[int, int],
                previous: dict | None = None) -> dict:
    """One item -> one raw record, its bytes copied content-addressed into `images_dir` (or `previous`'s copy reused).

    `limits` is (max_file_bytes, max_field_chars); `previous` holds record_id, raw_path and bytes of an earlier run's
    copy of the same fingerprint."""
    max_file_bytes, max_chars = limits
    f = item.fields
    error = item.error
    if error is None or not error.startswith("metadata_malformed"):
        if f and (problem := _field_problem(f, columns, max_chars)):
            error = f"metadata_malformed: line {item.row} {problem}"
    record = {
        "source": source, "source_uri": item.uri, "row": item.row,
        "title": _text(f.get(columns.title), max_chars), "creator": _text(f.get(columns.creator), max_chars),
        "caption": _text(f.get(columns.caption), max_chars), "license_raw": _text(f.get(columns.license), max_chars),
        "license_url": _text(f.get(columns.license_url), max_chars),
        "source_url": _text(f.get(columns.source_url), max_chars), "noai": _flag(f.get(columns.noai)),
        "raw_path": None, "bytes": None, "ingest_error": error, "fingerprint": item.fingerprint,
    }
    if error is None and previous is not None:
        record.update(previous)
        return record
    data = None
    if error is None:
        data, record["ingest_error"] = _read(item, max_file_bytes)
    if data is None:
        key = f"{source}\0{item.uri}\0{item.row}".encode()
        record["record_id"] = "missing-" + hashlib.sha256(key).hexdigest()[:56]
        return record
    digest = hashlib.sha256(data).hexdigest()
    target = images_dir / f"{digest}.{_extension(data)}"
    if not target.exists():
        write_bytes(target, data, durable=False)  # main() syncs once before the table is committed
    record.update(record_id=digest, raw_path=paths.relative(target), bytes=len(data))
    return record


def ingest_chunk(items: list[Item], source: str, columns: dict, images_dir: str, limits: tuple[int, int],
                 previous: dict[str, dict]) -> list[dict]:
    """A worker's task: ingest a chunk of items (arguments are plain data, so it runs on any engine)."""
    cols = Columns(**columns)
    return [ingest_item(item, source, cols, Path(images_dir), limits, previous.get(item.fingerprint))
            for item in items]


def previous_copies(index_path: Path) -> dict[str, dict]:
    """fingerprint -> {record_id, raw_path, bytes} of the last run's records whose raw copy still exists."""
    if not index_path.exists():
        return {}
    try:
        old = pq.read_table(index_path).to_pydict()
    except (pa.ArrowException, OSError):  # unreadable: ingest everything again
        return {}
    return {fp: {"record_id": rid, "raw_path": rp, "bytes": n}
            for fp, rid, rp, n in zip(old["fingerprint"], old["record_id"], old["raw_path"], old["bytes"])
            if paths.absolute(rp).exists()}


def ingest_all(p: IngestParams, engine: Engine, images_dir: Path, out: ParquetStream, index: ParquetStream,
               previous: dict[str, dict]) -> Counter:
    """Stream every source's items through the engine into `out` (and their fingerprints into `index`); return how
    many were reused per source."""
    limits = (p.max_file_bytes, p.max_field_chars)
    reused: Counter = Counter()
    for source in p.sources:
        items = iter_items(source, known=previous.keys(), max_file_bytes=p.max_file_bytes)
        light = lambda task: all(i.error or i.fingerprint in task[5] for i in task[0])  # noqa: E731 (no bytes to read)
        tasks = ((chunk, source.name, source.columns.model_dump(), str(images_dir), limits,
                  {i.fingerprint: previous[i.fingerprint] for i in chunk if i.fingerprint in previous})
                 for chunk in chunked(items, engine.p.chunk_size))
        bar = tqdm(desc=f"ingest {source.name}", unit="rec", disable=not progress_enabled())
        for records in engine.imap(ingest_chunk, tasks, light=light):
            reused[source.name] += sum(r["fingerprint"] in previous and r["ingest_error"] is None for r in records)
            out.write(records)
            index.write([r for r in records if r["fingerprint"] and r["ingest_error"] is None])
            bar.update(len(records))
        bar.close()
    return reused


def ingest_source(source, images_dir: Path, p: IngestParams | None = None) -> list[dict]:
    """All records of one source, in process (tests and small sources)."""
    p = p or IngestParams(sources=[source])
    limits = (p.max_file_bytes, p.max_field_chars)
    return [ingest_item(item, source.name, source.columns, images_dir, limits)
            for item in iter_items(source, max_file_bytes=p.max_file_bytes)]


def prune(images_dir: Path, records_path: Path) -> int:
    """Delete raw copies that no record refers to any more (a source dropped an image); return how many."""
    if not images_dir.exists():
        return 0
    keep = {Path(p).name for p in pq.read_table(records_path, columns=["raw_path"])["raw_path"].to_pylist() if p}
    removed = 0
    for entry in os.scandir(images_dir):
        if entry.name not in keep and not entry.name.startswith("."):
            os.unlink(entry.path)
            removed += 1
    return removed


def main() -> dict:
    """Ingest all sources into data/raw; return counts per source and errors per reason."""
    params = load_params()
    p = params.ingest
    previous = previous_copies(paths.INGEST_INDEX)
    paths.RAW_IMAGES.mkdir(parents=True, exist_ok=True)
    with Engine(params.engine) as engine, ParquetStream(paths.RAW_RECORDS, RAW_SCHEMA) as out, \
            ParquetStream(paths.INGEST_INDEX, INDEX_SCHEMA) as index:
        reused = ingest_all(p, engine, paths.RAW_IMAGES, out, index, previous)
        where = engine.describe()
        os.sync()  # every copy is on disk before the table that names it
    removed = prune(paths.RAW_IMAGES, paths.RAW_RECORDS)
    table = pq.read_table(paths.RAW_RECORDS, columns=["source", "ingest_error"]).to_pydict()
    errors = Counter(e.split(":")[0] for e in table["ingest_error"] if e is not None)
    summary = {"records_per_source": dict(Counter(table["source"])), "ingest_errors": dict(errors),
               "reused_per_source": dict(reused), "raw_copies_removed": removed, "engine": where}
    print(f"ingest: {len(table['source'])} records {summary['records_per_source']} on {where}; "
          f"{sum(reused.values())} unchanged since the last run; errors {dict(errors)}")
    return summary


if __name__ == "__main__":
    main()
