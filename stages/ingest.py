"""ingest stage: read every source in params.yaml, store each image's bytes unmodified in the raw store
(data/raw/packs/, atelier/rawstore.py), write data/raw/records.parquet.

Nothing vanishes: a missing file, a malformed metadata row, a refused download or a path outside the source stays
in the table with `ingest_error` set, and the clean stage turns it into a reject with that reason.

Hostile metadata is refused row by row, never by crashing: bytes that are not UTF-8, lone surrogates, JSON nested
too deeply or with absurd numbers, a field longer than ingest.max_field_chars (refused, not cut: a cut creator name
would misattribute), a `file_name` with a NUL byte, a folder, a pipe, a link loop or a file over
ingest.max_file_bytes. A `noai` value fails closed: anything but an explicit no (false, 0, no, empty) opts out.

At scale: sources stream their items; chunks of items are read, hashed and copied by the engine's workers (a local
process pool, or Dask when engine.dask_scheduler is set) and written to Parquet chunk by chunk, so memory does not
grow with the number of records. Incremental: an item whose fingerprint (path, size and mtime; URL; shard member)
was ingested before (.atelier/ingest-index.parquet), and whose pack is still in data/raw/packs, is not read
again (`dvc.yaml` marks data/raw `persist`). Bytes no current record refers to are removed at the end.
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
from atelier.io import ParquetStream, remove_stale_temps_in
from atelier.parallel import Engine, chunked
from atelier.progress import progress_enabled
from atelier.rawstore import compact, write_pack
from atelier.sources import Item, iter_items

RAW_SCHEMA = pa.schema([
    ("record_id", pa.string()), ("source", pa.string()), ("source_uri", pa.string()), ("row", pa.int64()),
    ("title", pa.string()), ("creator", pa.string()), ("caption", pa.string()), ("license_raw", pa.string()),
    ("license_url", pa.string()), ("source_url", pa.string()), ("noai", pa.bool_()), ("raw_pack", pa.string()),
    ("bytes", pa.int64()), ("ingest_error", pa.string()),
])
RAW_COLUMNS = RAW_SCHEMA.names
# The incremental index (paths.INGEST_INDEX): which fingerprint gave which copy. Kept out of data/raw on purpose:
# fingerprints hold paths and mtimes, and data/raw must depend only on the sources' contents.
INDEX_SCHEMA = pa.schema([("fingerprint", pa.string()), ("record_id", pa.string()), ("raw_pack", pa.string()),
                          ("bytes", pa.int64())])

FALSE_WORDS = {"", "0", "false", "no", "n", "off", "none", "null"}  # the only `noai` values that do not opt out
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


def ingest_item(item: Item, source: str, columns: Columns, limits: tuple[int, int], previous: dict | None = None
                ) -> tuple[dict, bytes | None]:
    """One item -> (its raw record, the bytes to store), or the record of `previous` (an earlier run's copy of the
    same fingerprint: record_id, raw_pack, bytes) and None. `limits` is (max_file_bytes, max_field_chars)."""
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
        "raw_pack": None, "bytes": None, "ingest_error": error, "fingerprint": item.fingerprint,
    }
    if error is None and previous is not None:
        record.update(previous)
        return record, None
    data = None
    if error is None:
        data, record["ingest_error"] = _read(item, max_file_bytes)
    if data is None:
        key = f"{source}\0{item.uri}\0{item.row}".encode()
        record["record_id"] = "missing-" + hashlib.sha256(key).hexdigest()[:56]
        return record, None
    record.update(record_id=hashlib.sha256(data).hexdigest(), bytes=len(data))
    return record, data


def ingest_chunk(items: list[Item], source: str, columns: dict, packs_dir: str, limits: tuple[int, int],
                 previous: dict[str, dict]) -> list[dict]:
    """A worker's task: ingest a chunk of items, their new bytes into one pack (arguments are plain data, so it
    runs on any engine)."""
    cols = Columns(**columns)
    done = [ingest_item(item, source, cols, limits, previous.get(item.fingerprint)) for item in items]
    new = [(record["record_id"], data) for record, data in done if data is not None]
    if new:
        pack = paths.relative(write_pack(Path(packs_dir), new))
        for record, data in done:
            if data is not None:
                record["raw_pack"] = pack
    return [record for record, _ in done]


def previous_copies(index_path: Path) -> dict[str, dict]:
    """fingerprint -> {record_id, raw_pack, bytes} of the last run's records whose pack still exists."""
    if not index_path.exists():
        return {}
    try:
        old = pq.read_table(index_path).to_pydict()
    except (pa.ArrowException, OSError):  # unreadable: ingest everything again
        return {}
    packs = {p for p in set(old["raw_pack"]) if paths.absolute(p).exists()}
    return {fp: {"record_id": rid, "raw_pack": rp, "bytes": n}
            for fp, rid, rp, n in zip(old["fingerprint"], old["record_id"], old["raw_pack"], old["bytes"])
            if rp in packs}


def ingest_all(p: IngestParams, engine: Engine, packs_dir: Path, out: ParquetStream, index: ParquetStream,
               previous: dict[str, dict]) -> tuple[Counter, dict[str, set[str]]]:
    """Stream every source's items through the engine into `out` (and their fingerprints into `index`); return how
    many were reused per source, and the record ids each pack must hold."""
    live: dict[str, set[str]] = {}
    limits = (p.max_file_bytes, p.max_field_chars)
    reused: Counter = Counter()
    for source in p.sources:
        items = iter_items(source, known=previous.keys(), max_file_bytes=p.max_file_bytes)
        light = lambda task: all(i.error or i.fingerprint in task[5] for i in task[0])  # noqa: E731 (no bytes to read)
        tasks = ((chunk, source.name, source.columns.model_dump(), str(packs_dir), limits,
                  {i.fingerprint: previous[i.fingerprint] for i in chunk if i.fingerprint in previous})
                 for chunk in chunked(items, engine.p.chunk_size))
        bar = tqdm(desc=f"ingest {source.name}", unit="rec", disable=not progress_enabled())
        for records in engine.imap(ingest_chunk, tasks, light=light):
            reused[source.name] += sum(r["fingerprint"] in previous and r["ingest_error"] is None for r in records)
            out.write(records)
            index.write([r for r in records if r["fingerprint"] and r["ingest_error"] is None])
            for r in records:
                if r["raw_pack"] is not None:
                    live.setdefault(r["raw_pack"], set()).add(r["record_id"])
            bar.update(len(records))
        bar.close()
    return reused, live


def ingest_source(source, packs_dir: Path, p: IngestParams | None = None) -> list[dict]:
    """All records of one source, in this process (tests and small sources)."""
    p = p or IngestParams(sources=[source])
    return ingest_chunk(list(iter_items(source, max_file_bytes=p.max_file_bytes)), source.name,
                        source.columns.model_dump(), str(packs_dir), (p.max_file_bytes, p.max_field_chars), {})


def main() -> dict:
    """Ingest all sources into data/raw; return counts per source and errors per reason."""
    params = load_params()
    p = params.ingest
    previous = previous_copies(paths.INGEST_INDEX)
    paths.RAW_PACKS.mkdir(parents=True, exist_ok=True)
    remove_stale_temps_in(paths.RAW_PACKS)  # a pack half written by a killed run
    with Engine(params.engine) as engine, ParquetStream(paths.RAW_RECORDS, RAW_SCHEMA) as out, \
            ParquetStream(paths.INGEST_INDEX, INDEX_SCHEMA) as index:
        reused, live = ingest_all(p, engine, paths.RAW_PACKS, out, index, previous)
        where = engine.describe()
        os.sync()  # every pack is on disk before the table that names it
    deleted, rewritten = compact(paths.RAW_PACKS, live)
    table = pq.read_table(paths.RAW_RECORDS, columns=["source", "ingest_error"]).to_pydict()
    errors = Counter(e.split(":")[0] for e in table["ingest_error"] if e is not None)
    summary = {"records_per_source": dict(Counter(table["source"])), "ingest_errors": dict(errors),
               "reused_per_source": dict(reused), "packs_deleted": deleted, "packs_rewritten": rewritten,
               "engine": where}
    print(f"ingest: {len(table['source'])} records {summary['records_per_source']} on {where}; "
          f"{sum(reused.values())} unchanged since the last run; errors {dict(errors)}")
    return summary


if __name__ == "__main__":
    main()
