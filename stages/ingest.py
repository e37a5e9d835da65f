"""ingest stage: read every source in params.yaml, store each image's bytes unmodified in the raw store
(data/raw/packs/, atelier/rawstore.py), write data/raw/records.parquet.

Nothing vanishes: a missing file, a malformed metadata row, a refused download or a path outside the source stays
in the table with `ingest_error` set, and the clean stage turns it into a reject with that reason.

Hostile metadata is refused row by row, never by crashing: bytes that are not UTF-8, lone surrogates, JSON nested
too deeply or with absurd numbers, a field longer than ingest.max_field_chars (refused, not cut: a cut creator name
would misattribute), a `file_name` with a NUL byte, a folder, a pipe, a link loop or a file over
ingest.max_file_bytes. A `noai` value fails closed: anything but an explicit no (false, 0, no, empty) opts out.

Reservations inside the image bytes (C2PA/CAWG training-mining, XMP plus:DataMining, noai metadata: see
provenance/reservations.py) are read here for every source kind alike; a reserved work keeps its record id (the
sha256 of its bytes, so copies of it can be found) with `ingest_error` set to the reservation ("opted_out:...",
or "rights_undetermined:c2pa_unreadable" for a manifest that cannot be read), and its bytes are not stored.

At scale: sources stream their items; chunks of items are read, hashed and copied by the engine's workers (a local
process pool, or Dask when engine.dask_scheduler is set) and written to Parquet chunk by chunk, so memory does not
grow with the number of records. Incremental (`dvc.yaml` marks data/raw `persist`; the last run's records are in
.atelier/ingest-index.parquet): a chunk whose key (its metadata rows and fingerprints) the last run saw is copied
over whole, and a metadata.jsonl block whose lines and files are unchanged is not even parsed; in a chunk that
changed, an item whose fingerprint (path, size, mtime and inode; URL; shard member) was ingested before, and whose
pack is still in data/raw/packs, is not read again. Bytes no current record refers to are removed at the end.

The raw store is encrypted at rest when ingest.encrypt_raw is on (the default; atelier/rawstore.py): the key is read
(made on the first run) from outside the repository, and a store written by an earlier run in the other form is
migrated in place first. A record erased by `atelier forget` (its digest in policy/erasures.csv, atelier/erasures.py)
is excluded wherever it appears again: ingest_error "erased: ...", nothing that identifies it kept, bytes not stored.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter, deque
from collections.abc import Container
from datetime import UTC, datetime
from functools import cached_property
from itertools import groupby
from operator import itemgetter
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from atelier import paths
from atelier.config import Columns, ConfigError, IngestParams, load_params
from atelier.declared import require_declared
from atelier.erasures import erased_digests, erased_record, record_digest
from atelier.faces import is_yes
from atelier.io import ParquetStream, read_table, remove_stale_temps_in, sync_files, write_json, write_text
from atelier.parallel import Engine, chunked
from atelier.progress import progress_enabled
from atelier.rawstore import RawStoreKeyError, compact, data_key, encrypted_packs, key_dir, migrate, write_pack
from atelier.sources import Item, iter_items
from atelier.sources.folder import Block, block_items, folder_blocks, unchanged
from provenance.reservations import reservation

RAW_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("source", pa.string()),
        ("source_uri", pa.string()),
        ("row", pa.int64()),
        ("title", pa.string()),
        ("creator", pa.string()),
        ("caption", pa.string()),
        ("license_raw", pa.string()),
        ("license_url", pa.string()),
        ("source_url", pa.string()),
        ("noai", pa.bool_()),
        ("model_release", pa.bool_()),
        ("historical", pa.bool_()),
        ("raw_pack", pa.string()),
        ("bytes", pa.int64()),
        ("ingest_error", pa.string()),
    ]
)
RAW_COLUMNS = RAW_SCHEMA.names
# The incremental index (paths.INGEST_INDEX): the last run's records, by chunk and by fingerprint. Kept out of
# data/raw on purpose: fingerprints hold paths and mtimes, and data/raw must depend only on the sources' contents.
# Every record, with its fingerprint, its chunk's key (see chunk_key; empty when the chunk has none) and, for a
# keyed chunk of a metadata.jsonl, the key of its lines as written (see lines_key).
# `fetched_at` is when a URL was last fetched, its opt-out signals checked (seconds since the epoch; null for other
# kinds); `recheck_due` is set by `atelier sources recheck` on the URLs to fetch again whatever their age.
INDEX_SCHEMA = (
    RAW_SCHEMA.append(pa.field("fingerprint", pa.string()))
    .append(pa.field("chunk", pa.string()))
    .append(pa.field("lines_key", pa.string()))
    .append(pa.field("fetched_at", pa.float64()))
    .append(pa.field("recheck_due", pa.bool_()))
)
INDEX_VERSION = "ingest-index 5"  # part of every chunk key: change it when ingest_item's output changes

RECHECKS = paths.REPORTS / "rechecks.json"  # what the last re-check of URL opt-outs found (written when one ran)

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
            return f"field '{column}' has {len(value)} characters, over ingest.max_field_chars={max_chars}; shorten it"
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


def ingest_item(
    item: Item,
    source: str,
    columns: Columns,
    limits: tuple[int, int],
    previous: dict | None = None,
    erased: dict[str, str] | None = None,
) -> tuple[dict, bytes | None]:
    """One item -> (its raw record, the bytes to store), or the record of `previous` (an earlier run's copy of the
    same fingerprint: record_id, raw_pack, bytes, fetched_at) and None. `limits` is (max_file_bytes, max_field_chars).
    A record whose digest is in `erased` {record digest: erasure} comes back erased (erasures.erased_record)."""
    max_file_bytes, max_chars = limits
    f = item.fields
    error = item.error
    if error is None or not error.startswith("metadata_malformed"):
        if f and (problem := _field_problem(f, columns, max_chars)):
            error = f"metadata_malformed: line {item.row} {problem}"
    record = {
        "source": source,
        "source_uri": item.uri,
        "row": item.row,
        "title": _text(f.get(columns.title), max_chars),
        "creator": _text(f.get(columns.creator), max_chars),
        "caption": _text(f.get(columns.caption), max_chars),
        "license_raw": _text(f.get(columns.license), max_chars),
        "license_url": _text(f.get(columns.license_url), max_chars),
        "source_url": _text(f.get(columns.source_url), max_chars),
        "noai": _flag(f.get(columns.noai)),
        # consent-like flags count only when explicitly yes: an unclear value never exempts faces from blurring
        "model_release": is_yes(f.get(columns.model_release)),
        "historical": is_yes(f.get(columns.historical)),
        "raw_pack": None,
        "bytes": None,
        "ingest_error": error,
        "fingerprint": item.fingerprint,
        "fetched_at": item.fetched_at,
    }
    erased = erased or {}
    if error is None and previous is not None and record_digest(previous["record_id"]) not in erased:
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
    if (erasure := erased.get(record_digest(record["record_id"]))) is not None:
        return erased_record(record, erasure), None
    reserved = reservation(data, f"'{item.uri}' (line {item.row})")
    if reserved:  # a reserved work keeps its id (copies of it can be found) but its bytes are not stored
        record["ingest_error"] = reserved
        return record, None
    return record, data


def ingest_chunk(
    items: list[Item],
    source: str,
    columns: dict,
    packs_dir: str,
    limits: tuple[int, int],
    previous: dict[str, dict],
    key_dir: str | None = None,
    erased: dict[str, str] | None = None,
) -> list[dict]:
    """A worker's task: ingest a chunk of items, their new bytes into one pack, encrypted with the key in `key_dir`
    when given (arguments are plain data, never the key, so it runs on any engine)."""
    cols = Columns(**columns)
    done = [ingest_item(item, source, cols, limits, previous.get(item.fingerprint), erased) for item in items]
    new = [(record["record_id"], data) for record, data in done if data is not None]
    if new:
        key = data_key(key_dir) if key_dir is not None else None
        pack = paths.relative(write_pack(Path(packs_dir), new, key=key))
        for record, data in done:
            if data is not None:
                record["raw_pack"] = pack
    return [record for record, _ in done]


class Previous:
    """What the last run ingested, from its index (paths.INGEST_INDEX): its rows (INDEX_SCHEMA) in output order."""

    def __init__(self, table: pa.Table | None = None, present: set[str] = frozenset()):
        self.table = table
        self.present = present  # the packs still in the raw store
        self.due_before: float | None = None  # a URL fetched before this time (or marked due) is fetched again
        self.chunks: dict[str, tuple[int, int]] = {}  # chunk key -> (first row, rows): whole chunks to reuse
        self.lines: dict[str, tuple[int, int]] = {}  # lines key -> (first row, rows): the same, by lines
        self.packs: dict[str, set[str]] | None = None  # pack name -> the ids it holds, when its compaction finished

    @cached_property
    def copies(self) -> Copies:
        """The copies still in the raw store, by fingerprint (indexed when a chunk changed: a run that reuses every
        chunk never needs them)."""
        return Copies(self.table, self.present, self.due_before)


class Copies:
    """fingerprint -> {record_id, raw_pack, bytes, fetched_at} of the last run's readable records whose pack is still
    there, leaving out URLs due to be checked again; looked up one by one, so a run that changed one chunk does not
    build a dict of every record."""

    def __init__(self, table: pa.Table | None, present: set[str], due_before: float | None = None):
        self.table, self.present, self.due_before = table, present, due_before
        fingerprints = [] if table is None else table["fingerprint"].to_pylist()
        self.rows = dict(zip(fingerprints, range(len(fingerprints))))
        self.rows.pop("", None)
        self.rows.pop(None, None)

    def _row(self, fingerprint: str) -> dict | None:
        i = self.rows.get(fingerprint)
        if i is None:
            return None
        row = (
            self.table.slice(i, 1)
            .select(["record_id", "raw_pack", "bytes", "ingest_error", "fetched_at", "recheck_due"])
            .to_pylist()[0]
        )
        if row.pop("ingest_error") is not None or row["raw_pack"] not in self.present:
            return None
        return row

    def _due(self, fingerprint: str, row: dict) -> bool:
        if not fingerprint.startswith("url:"):
            return False
        if row["recheck_due"]:
            return True
        return self.due_before is not None and (row["fetched_at"] is None or row["fetched_at"] < self.due_before)

    def get(self, fingerprint: str) -> dict | None:
        row = self._row(fingerprint)
        if row is None or self._due(fingerprint, row):
            return None
        del row["recheck_due"]
        return row

    def due(self, fingerprint: str) -> dict | None:
        """The last run's copy of a URL whose opt-out signals are due to be checked again, or None."""
        row = self._row(fingerprint)
        return row if row is not None and self._due(fingerprint, row) else None

    def __contains__(self, fingerprint: str) -> bool:
        return self.get(fingerprint) is not None


def _index_stamp(index_path: Path) -> str:
    info = index_path.stat()
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"


def load_previous(index_path: Path, compacted: Path) -> Previous:
    """The last run's index; only chunks and copies whose packs are still in the raw store."""
    try:
        table = read_table(index_path)
    except (pa.ArrowException, OSError):  # none, or unreadable: ingest everything again
        return Previous()
    if table.schema.remove_metadata() != INDEX_SCHEMA:  # an index of an older version of this stage
        return Previous()
    cols = table.select(["chunk", "lines_key", "raw_pack", "record_id"]).to_pydict()
    packs = cols["raw_pack"]
    prev = Previous(table, {pack for pack in set(packs) if pack is not None and paths.absolute(pack).exists()})
    start = 0
    for key, run in groupby(cols["chunk"]):  # a chunk's rows are consecutive
        n = sum(1 for _ in run)
        if key and all(pack in prev.present for pack in packs[start : start + n] if pack is not None):
            prev.chunks[key] = (start, n)
            if cols["lines_key"][start]:
                prev.lines[cols["lines_key"][start]] = (start, n)
        start += n
    try:  # the raw store holds exactly these ids only when the run that wrote this index finished its compaction
        if compacted.read_text() == _index_stamp(index_path):
            held: dict[str, set[str]] = {}
            for pack, rows in groupby(zip(packs, cols["record_id"]), key=itemgetter(0)):
                if pack is not None:
                    held.setdefault(pack.rsplit("/", 1)[-1], set()).update(map(itemgetter(1), rows))
            prev.packs = held
    except OSError:
        pass
    return prev


def _key_start(source, limits: tuple[int, int], erased: str = ""):
    """A hash of what every key of a source's chunks depends on besides the chunk: this code's index version, the
    source's name and column mapping, the limits, and the erasures (`erased`, a digest of them: an erasure means
    no chunk is copied over unchecked)."""
    settings = f"{INDEX_VERSION}\x1f{source.name}\x1f{source.columns.model_dump_json()}\x1f{limits}{erased}"
    return hashlib.sha256(settings.encode())


def chunk_key(
    source, limits: tuple[int, int], items: list[Item], due: Container[str] = frozenset(), erased: str = ""
) -> str | None:
    """The identity of a chunk of items: an equal key means equal records, so the last run's are reused whole.
    None when an item's outcome could change while its metadata does not (a file missing today may be there
    tomorrow), or an item has no cheap identity. An item in `due` (a URL whose signals are checked again this run)
    changes the key, so the chunk is not skipped."""
    h = _key_start(source, limits, erased)
    for item in items:
        if not item.fingerprint or item.error is not None:
            return None
        text = item.text or json.dumps(item.fields, sort_keys=True, ensure_ascii=False, default=str)
        recheck = "\x1frecheck" if item.fingerprint in due else ""
        h.update(
            f"\x1e{item.row}\x1f{item.uri}\x1f{item.fingerprint}\x1f{text}{recheck}".encode("utf-8", "surrogatepass")
        )
    return h.hexdigest()


def lines_key(source, limits: tuple[int, int], block: Block, erased: str = "") -> str:
    """The key of a block of metadata.jsonl lines as written (with their line numbers and the source's settings).
    With the files its rows name unchanged (folder.unchanged), an equal key means the chunk's records are the last
    run's: checked with one lstat per row, without parsing anything."""
    h = _key_start(source, limits, erased)
    h.update(f"\x1f{block.first_line}\x1f".encode())
    for line in block.lines:
        h.update(line)
    return h.hexdigest()


def source_chunks(source, p: IngestParams, previous: Previous, size: int, erased: str = ""):
    """(lines key or None, items, span) per chunk of a source. `span` is set, and `items` is None, when the chunk is
    the last run's unchanged: found by its lines key (a metadata.jsonl block whose files are unchanged)."""
    limits = (p.max_file_bytes, p.max_field_chars)
    blocks = folder_blocks(source, size) if source.kind == "folder" else None
    if blocks is None:
        items = iter_items(source, known=previous.copies, max_file_bytes=p.max_file_bytes)
        for chunk in chunked(items, size):
            yield None, chunk, None
        return
    for block in blocks:
        key = lines_key(source, limits, block, erased)
        span = previous.lines.get(key)
        if span is not None and all(map(unchanged, previous.table["fingerprint"].slice(*span).to_pylist())):
            yield key, None, span
        else:
            yield key, block_items(block, source, p.max_file_bytes), None


def ingest_all(
    p: IngestParams,
    engine: Engine,
    packs_dir: Path,
    out: ParquetStream,
    index: ParquetStream,
    previous: Previous,
    now: float | None = None,
    key_dir: str | None = None,
    erased: dict[str, str] | None = None,
) -> tuple[Counter, dict[str, set[str]], set[str], dict]:
    """Stream every source's items through the engine into `out` (and the index rows into `index`); return how
    many records were reused per source, the record ids each pack must hold, the packs written by this run, and the
    re-checks: {"rechecked": URLs fetched again per source, "changed": the records usable before and not now}.

    A chunk whose key the last run saw is not sent anywhere: its rows are copied from the last run's index as they
    are. In a chunk that changed, an item whose fingerprint the last run saw is not read again. A URL fetched more
    than p.recheck_after_days before `now` (or marked due) is fetched again, its opt-out signals checked anew. New
    bytes are encrypted with the key in `key_dir` when given; records in `erased` are excluded (see ingest_item)."""
    erased = erased or {}
    salt = hashlib.sha256("\n".join(sorted(erased)).encode()).hexdigest() if erased else ""
    live: dict[str, set[str]] = {}
    written: set[str] = set()
    rechecks: dict = {"rechecked": Counter(), "changed": []}
    if now is not None:
        previous.due_before = now - p.recheck_after_days * 86400

    def add_live(packs: list, ids: list) -> None:
        for pack, rows in groupby(zip(packs, ids), key=itemgetter(0)):  # a pack's rows are consecutive
            if pack is not None:
                live.setdefault(pack, set()).update(map(itemgetter(1), rows))

    limits = (p.max_file_bytes, p.max_field_chars)
    reused: Counter = Counter()
    for source in p.sources:
        keys: deque[tuple[str | None, str | None, tuple[int, int] | None, dict, dict]] = deque()

        def tasks():
            for by_lines, chunk, span in source_chunks(source, p, previous, engine.p.chunk_size, salt):
                key, due = None, {}
                if span is None:
                    if source.kind == "urls":  # fetched again by the source: their signals are checked anew
                        due = {i.fingerprint: row for i in chunk if (row := previous.copies.due(i.fingerprint))}
                    key = chunk_key(source, limits, chunk, due, salt)
                    span = previous.chunks.get(key) if key else None
                copies = (
                    {}
                    if span
                    else {
                        i.fingerprint: copy
                        for i in chunk
                        if i.fingerprint and (copy := previous.copies.get(i.fingerprint))
                    }
                )
                keys.append((key, by_lines, span, copies, due))
                yield (
                    [] if span else chunk,
                    source.name,
                    source.columns.model_dump(),
                    str(packs_dir),
                    limits,
                    copies,
                    key_dir,
                    erased,
                )

        light = lambda task: all(i.error or i.fingerprint in task[5] for i in task[0])  # noqa: E731 (no bytes to read)
        bar = tqdm(desc=f"ingest {source.name}", unit="rec", disable=not progress_enabled())
        run: list[int] = []  # [first row, rows] of consecutive reused chunks, copied in one write

        def copy_run() -> None:
            if run:
                rows = previous.table.slice(*run)
                out.write_table(rows)
                index.write_table(rows)
                ids, packs, errors = (rows[c].to_pylist() for c in ("record_id", "raw_pack", "ingest_error"))
                reused[source.name] += errors.count(None)
                add_live(packs, ids)
                run.clear()

        for records in engine.imap(ingest_chunk, tasks(), light=light):
            key, by_lines, span, copies, due = keys.popleft()
            if span is not None:
                if run and run[0] + run[1] == span[0]:
                    run[1] += span[1]
                else:
                    copy_run()
                    run.extend(span)
                bar.update(span[1])
                continue
            copy_run()
            out.write(records)
            index.write([{**r, "chunk": key or "", "lines_key": by_lines if key else ""} for r in records])
            reused[source.name] += sum(r["fingerprint"] in copies and r["ingest_error"] is None for r in records)
            add_live([r["raw_pack"] for r in records], [r["record_id"] for r in records])
            written.update(
                r["raw_pack"] for r in records if r["raw_pack"] is not None and r["fingerprint"] not in copies
            )
            for r in (r for r in records if r["fingerprint"] in due):
                rechecks["rechecked"][source.name] += 1
                if r["ingest_error"] is not None:  # usable at the last fetch, not now
                    before = due[r["fingerprint"]]
                    reason, _, detail = r["ingest_error"].partition(": ")
                    rechecks["changed"].append(
                        {
                            "source": source.name,
                            "url": r["source_uri"],
                            "record_id": before["record_id"],
                            "reason": reason,
                            "detail": detail,
                            "fetched_before": before["fetched_at"],
                        }
                    )
            bar.update(len(records))
        copy_run()
        bar.close()
    return reused, live, written, rechecks


def ingest_source(source, packs_dir: Path, p: IngestParams | None = None) -> list[dict]:
    """All records of one source, in this process (tests and small sources)."""
    p = p or IngestParams(sources=[source])
    return ingest_chunk(
        list(iter_items(source, max_file_bytes=p.max_file_bytes)),
        source.name,
        source.columns.model_dump(),
        str(packs_dir),
        (p.max_file_bytes, p.max_field_chars),
        {},
    )


def recheck_report(rechecks: dict, now: float, days: float, lineage=None) -> dict:
    """reports/rechecks.json: when URLs were re-checked, which records are now excluded and why, and (through
    `lineage(record_ids)`, as a takedown reports it) the model versions that trained on them and their artworks."""
    changed = sorted(rechecks["changed"], key=lambda c: (c["source"], c["url"]))
    report = {
        "checked_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "recheck_after_days": days,
        "rechecked_per_source": dict(rechecks["rechecked"]),
        "changed": [
            c
            | {
                "fetched_before": None
                if c["fetched_before"] is None
                else datetime.fromtimestamp(c["fetched_before"], UTC).isoformat(timespec="seconds")
            }
            for c in changed
        ],
        "lineage": None,
    }
    if lineage is not None and changed:
        try:
            report["lineage"] = lineage(sorted({c["record_id"] for c in changed}))
        except Exception as exc:  # noqa: BLE001 - the exclusion stands whatever the registry says; say why it is missing
            report["lineage"] = {"error": f"{type(exc).__name__}: {exc}"}
    return report


def mark_due(index_path: Path, compacted: Path, names: list[str]) -> dict[str, int]:
    """Mark the earlier fetches of the url sources `names` as due (`recheck_due` in the index), so the next ingest
    fetches them again and checks their opt-out signals; return how many were marked per source."""
    try:
        table = read_table(index_path)
    except (pa.ArrowException, OSError):
        return {name: 0 for name in names}
    if table.schema.remove_metadata() != INDEX_SCHEMA:
        return {name: 0 for name in names}  # an older index: the next run fetches everything anyway
    compacted_before = compacted.exists() and compacted.read_text() == _index_stamp(index_path)
    source = table["source"].to_pylist()
    fingerprint = table["fingerprint"].to_pylist()
    hit = [s in names and (f or "").startswith("url:") for s, f in zip(source, fingerprint)]
    due = [h or bool(d) for h, d in zip(hit, table["recheck_due"].to_pylist())]
    i = table.schema.get_field_index("recheck_due")
    with ParquetStream(index_path, INDEX_SCHEMA) as out:
        out.write_table(table.set_column(i, "recheck_due", pa.array(due, pa.bool_())))
    if compacted_before:  # the raw store still holds exactly what the index names
        write_text(compacted, _index_stamp(index_path))
    return {name: sum(h for h, s in zip(hit, source) if s == name) for name in names}


def main() -> dict:
    """Ingest all sources into data/raw; return counts per source and errors per reason."""
    for warning in require_declared():  # before any work: a source dvc.yaml does not list would be skipped later
        print(f"ingest: warning: {warning.message}")
    params = load_params()
    p = params.ingest
    previous = load_previous(paths.INGEST_INDEX, paths.INGEST_COMPACTED)
    paths.RAW_PACKS.mkdir(parents=True, exist_ok=True)
    remove_stale_temps_in(paths.RAW_PACKS)  # a pack half written by a killed run
    # the key's folder travels to the workers, never the key; a store already encrypted never gets a new key
    key = data_key(create=not encrypted_packs(paths.RAW_PACKS)) if p.encrypt_raw else None
    migrated = migrate(paths.RAW_PACKS, key)  # an earlier run's store in the other form: rewritten in place
    if migrated:
        print(
            f"ingest: {migrated} raw packs {'encrypted' if key else 'decrypted'} in place (ingest.encrypt_raw is "
            f"{'on' if key else 'off'})"
        )
    erased = erased_digests()
    now = time.time()
    with (
        Engine(params.engine) as engine,
        ParquetStream(paths.RAW_RECORDS, RAW_SCHEMA) as out,
        ParquetStream(paths.INGEST_INDEX, INDEX_SCHEMA) as index,
    ):
        reused, live, written, rechecks = ingest_all(
            p,
            engine,
            paths.RAW_PACKS,
            out,
            index,
            previous,
            now,
            key_dir=str(key_dir()) if key else None,
            erased=erased,
        )
        where = engine.describe()
        sync_files([paths.absolute(pack) for pack in written])  # on disk before the table that names them
    deleted, rewritten = compact(paths.RAW_PACKS, live, previous.packs)
    write_text(paths.INGEST_COMPACTED, _index_stamp(paths.INGEST_INDEX))
    table = read_table(paths.RAW_RECORDS, columns=["source", "ingest_error"]).to_pydict()
    errors = Counter(e.split(":")[0] for e in table["ingest_error"] if e is not None)
    summary = {
        "records_per_source": dict(Counter(table["source"])),
        "ingest_errors": dict(errors),
        "raw_encrypted": key is not None,
        "packs_migrated": migrated,
        "reused_per_source": dict(reused),
        "packs_deleted": deleted,
        "packs_rewritten": rewritten,
        "engine": where,
        "rechecked_per_source": dict(rechecks["rechecked"]),
        "rechecks_changed": len(rechecks["changed"]),
    }
    if rechecks["rechecked"]:
        from provenance.usage import records_used_by  # here: the registry and the ledger only when re-checking

        report = recheck_report(rechecks, now, p.recheck_after_days, records_used_by if rechecks["changed"] else None)
        write_json(RECHECKS, report)
        for change in report["changed"]:
            print(
                f"ingest: re-check: {change['url']} is now excluded ({change['reason']}); it was record "
                f"{change['record_id'][:16]}"
            )
        if report["lineage"] and report["lineage"]["versions"]:
            print(
                f"ingest: re-check: model versions trained on works whose signals changed: "
                f"{[v['version'] for v in report['lineage']['versions']]} (see {paths.relative(RECHECKS)})"
            )
    print(
        f"ingest: {len(table['source'])} records {summary['records_per_source']} on {where}; "
        f"{sum(reused.values())} unchanged since the last run; errors {dict(errors)}"
    )
    return summary


def recheck_due(index_path: Path, recheck_after_days: float, now: float) -> bool:
    """Whether a URL fetched by an earlier run is due for a re-check of its opt-out signals (older than
    recheck_after_days, or marked by `atelier sources recheck`): the pipeline flow then runs ingest even though DVC
    sees no change."""
    try:
        table = read_table(index_path)
    except (pa.ArrowException, OSError):
        return False
    if table.schema.remove_metadata() != INDEX_SCHEMA:
        return False
    before = now - recheck_after_days * 86400
    for fingerprint, fetched, due in zip(
        table["fingerprint"].to_pylist(), table["fetched_at"].to_pylist(), table["recheck_due"].to_pylist()
    ):
        if (fingerprint or "").startswith("url:") and (due or (fetched is not None and fetched < before)):
            return True
    return False


def recheck_sources(root: Path, name: str | None) -> list[str]:
    """Mark the earlier fetches of url source `name` (every url source when None) as due in the ingest index; return
    the lines to print."""

    urls = [s.name for s in load_params(root / "params.yaml").ingest.sources if s.kind == "urls"]
    if name is not None and name not in urls:
        raise ConfigError(
            f"'{name}' is not a url source in params.yaml ingest.sources (url sources: "
            f"{', '.join(urls) or 'none'}); only fetched URLs can be re-checked"
        )
    names = [name] if name else urls
    if not names:
        return ["sources: no url source in params.yaml ingest.sources: nothing to re-check"]
    marked = mark_due(paths.INGEST_INDEX, paths.INGEST_COMPACTED, names)
    lines = [
        f"sources: {marked[n]} earlier fetches of '{n}' marked due: the next ingest fetches them again, "
        "checking robots.txt, TDM-Rep and the response headers; a work that is now reserved is excluded with "
        "the signal's reason and listed in reports/rechecks.json with the model versions trained on it"
        for n in names
    ]
    return lines + [
        "note: the next `atelier run` (or scheduled run) re-checks them: it runs ingest whenever a "
        "re-check is due; with plain DVC: dvc repro --force --single-item ingest, then dvc repro"
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["--recheck-due"]:  # exit 0 when a re-check is due (the flow then forces this stage)
        sys.exit(0 if recheck_due(paths.INGEST_INDEX, load_params().ingest.recheck_after_days, time.time()) else 1)
    try:
        main()
    except RawStoreKeyError as exc:  # a missing or wrong key: what to do, not a traceback
        print(f"ingest: {exc}", file=sys.stderr)
        sys.exit(2)
