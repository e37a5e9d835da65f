"""clean stage: decode, check, normalise and de-duplicate raw records; every rejected record is kept with its reason.

Writes the clean images (PNG: RGB, EXIF orientation applied, all metadata stripped, resized and centre-cropped to
the training resolution) into data/clean/packs/ (one Parquet pack of (record_id, PNG bytes) per chunk of the raw
table, named in each record's `clean_path`; atelier.dataset.load_images reads them), data/clean/records.parquet,
data/clean/rejects.parquet, data/clean/decoded.parquet (each decode result with its params) and
data/clean/chunks.parquet (each chunk's key and row counts): the last two are the next run's cache.

Privacy: faces are looked for in every decoded image at its own size (atelier/faces.py); by clean.faces they are
blurred in the training copy (the raw bytes stay as they are), or the record is excluded (reason `faces`), or kept;
a record whose metadata records a model release, or a public-domain historical artwork, keeps them. Titles, captions
and creator fields have their personal data (e-mail, phone, street address, ids: atelier/pii.py) replaced by
placeholders in every table written here, kept and rejected alike. Each row says what was done: `redacted`
(field:kind=count, never the data), `faces` (how many found), `face_action` and `privacy` (in words).

Map and reduce: decoding (the expensive, independent part) runs in chunks on the engine (local processes or Dask);
the reducer then decides duplicates in table order in this process, so the output is the same on any engine.
Streaming: the raw table is read in batches and the outputs written in batches; memory holds a window of chunks,
the kept perceptual hashes (8 bytes each) and the seen record ids. Incremental (data/clean is `persist`): while
the raw table's chunks equal the last run's (same content, same params, same chunks before them), their rows and
packs are carried over whole; after the first change, a record decoded by the last run with the same decode
params is not decoded again, and its PNG comes from the last run's pack.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from atelier import faces as face_policy
from atelier import paths
from atelier.config import CleanParams, load_params
from atelier.images import decode_record
from atelier.io import ParquetStream, atomic_dir, read_table, sync_files
from atelier.parallel import Engine
from atelier.pii import redact
from atelier.pii import summary as redaction_summary
from atelier.rawstore import RawStoreKeyError, read_pack, write_pack

if TYPE_CHECKING:
    import pandas as pd

DECODE_FIELDS = [
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("format", pa.string()),
    ("phash", pa.string()),
    ("faces", pa.int64()),
]  # what decoding an image's bytes gives
KEPT_FIELDS = [*DECODE_FIELDS, ("face_action", pa.string()), ("privacy", pa.string()), ("clean_path", pa.string())]
REJECT_FIELDS = [("reason", pa.string()), ("detail", pa.string())]
REDACTED_FIELD = ("redacted", pa.string())  # on kept and rejected rows: field:kind=count of what was redacted
TEXT_FIELDS = ("title", "caption", "creator")  # free text scanned for personal data (creator: contact data only;
# names are never redacted: the licences require the credit)
FACE_ACTIONS = {
    "blurred": "blurred",
    "kept": "kept (clean.faces is keep)",
    "kept_model_release": "kept (model release recorded)",
    "kept_historical": "kept (public-domain historical artwork)",
}
KEPT_COLUMNS = [name for name, _ in KEPT_FIELDS]
REJECT_COLUMNS = [name for name, _ in REJECT_FIELDS]
# data/clean/decoded.parquet: every decode result with the params it was made under: the next run's cache.
# `blurred`: how many faces the training copy made with this result has blurred (0: none, or not asked to blur).
DECODED_SCHEMA = pa.schema(
    [("record_id", pa.string()), ("key", pa.string()), *DECODE_FIELDS, ("blurred", pa.int64()), *REJECT_FIELDS]
)
DECODED_EMPTY = {
    "width": None,
    "height": None,
    "format": None,
    "phash": None,
    "faces": None,
    "blurred": None,
    "reason": None,
    "detail": None,
}


def wants_blur(record: dict, p: CleanParams) -> bool:
    """Whether faces in this record's image are to be blurred in its training copy (clean.faces and exemptions)."""
    return p.faces == "blur" and face_policy.exemption(record) is None


def redact_record(record: dict) -> dict:
    """The record's TEXT_FIELDS with personal data replaced by placeholders, and `redacted` saying what was."""
    out, found = {}, {}
    for name in TEXT_FIELDS:
        value = record.get(name)
        if isinstance(value, str):
            out[name], found[name] = redact(value)
    return {**out, "redacted": redaction_summary(found)}


def privacy_words(faces: int, action: str | None, redacted: str) -> str:
    """A row's `privacy` column: what was changed for privacy, in words ("2 faces blurred; caption: 1 email")."""
    parts = []
    if faces:
        parts.append(f"{faces} face{'s' if faces > 1 else ''} {FACE_ACTIONS[action]}")
    for part in redacted.split(";") if redacted else []:
        name, _, kinds = part.partition(":")
        parts.append(
            f"{name}: "
            + ", ".join(f"{n} {k}" for k, _, n in (i.partition("=") for i in kinds.split(",")))
            + " redacted"
        )
    return "; ".join(parts)


def decode_chunk(todo: list[tuple[str, str, bool]], p: dict) -> dict[str, dict]:
    """A worker's task: decode (record_id, raw pack, blur faces) triples; a usable image's result carries its PNG
    bytes ("png").

    Arguments are plain data, so the task runs on any engine; it depends on nothing but its arguments."""
    if not todo:
        return {}
    params = CleanParams(**p)
    wanted: dict[str, set[str]] = {}
    for record_id, pack, _ in todo:
        wanted.setdefault(pack, set()).add(record_id)
    stored, problems = {}, {}
    for pack, ids in wanted.items():
        try:
            stored.update(read_pack(Path(pack), ids))
        except (OSError, pa.ArrowException) as exc:  # the pack vanished or is damaged: say so, keep the records
            problems.update({rid: f"raw pack {pack}: {getattr(exc, 'strerror', None) or exc}" for rid in ids})
    out = {}
    for record_id, pack, blur in todo:
        if record_id not in stored:
            detail = problems.get(record_id, f"record {record_id} is missing from raw pack {pack}")
            out[record_id] = {"reason": "file_unreadable", "detail": detail}
            continue
        result, image = decode_record(stored.pop(record_id), params, blur)
        if image is not None:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            result["png"] = buf.getvalue()
        out[record_id] = result
    return out


class Reducer:
    """Decides, record by record in table order, what is kept: the part of cleaning that needs the records before.

    Exact duplicates (same record id as a kept record) and near duplicates (perceptual hash within
    clean.near_duplicate_hamming bits of a kept image) are rejected here, so the outcome depends only on the order
    of the table, never on which worker finished first; then the face policy (clean.faces) is applied. Every row,
    kept or rejected, has its text redacted (redact_record). The near-duplicate search is one vectorised pass over the
    kept hashes (64-bit popcount), not a Python loop."""

    def __init__(self, p: CleanParams):
        self.p = p
        self.kept_ids: dict[str, str] = {}
        self.hashes = np.zeros(1024, dtype=np.uint64)
        self.hash_uris: list[str] = []

    def decide(self, record: dict, result: dict | None, clean_path: str = "") -> tuple[dict | None, dict | None]:
        """(clean row, None) or (None, reject row) for one raw record and its decode result; a kept record's image
        is stored at `clean_path`."""
        record = {**record, **redact_record(record)}
        if isinstance(record.get("ingest_error"), str):
            reason, _, detail = record["ingest_error"].partition(": ")
            return None, {**record, "reason": reason, "detail": detail}
        if record["record_id"] in self.kept_ids:
            return None, {
                **record,
                "reason": "duplicate_exact",
                "detail": f"same bytes as {self.kept_ids[record['record_id']]}",
            }
        if "reason" in result:
            return None, {**record, "reason": result["reason"], "detail": result["detail"]}
        h = np.uint64(int(result["phash"], 16))
        n = len(self.hash_uris)
        if n:
            distance = np.bitwise_count(self.hashes[:n] ^ h)
            close = np.flatnonzero(distance <= self.p.near_duplicate_hamming)
            if close.size:
                first = int(close[0])
                return None, {
                    **record,
                    "reason": "duplicate_near",
                    "detail": f"perceptual hash within {int(distance[first])} bits of {self.hash_uris[first]}",
                }
        faces, action = int(result.get("faces") or 0), None
        if faces:
            exempt = face_policy.exemption(record)
            if self.p.faces == "keep":
                action = "kept"
            elif exempt is not None:
                action = f"kept_{exempt}"
            elif self.p.faces == "exclude":
                return None, {
                    **record,
                    "reason": "faces",
                    "detail": f"{faces} face{'s' if faces > 1 else ''} detected and clean.faces is exclude; "
                    "the record has no model_release/consent and is not a public-domain "
                    "historical artwork",
                }
            else:
                action = "blurred"
        if (result.get("blurred") or 0) != (faces if action == "blurred" else 0):  # a reused decode made otherwise
            raise RuntimeError(
                f"record {record['record_id']}: its training copy has {result.get('blurred')} faces "
                f"blurred but the face policy asks {action}; delete data/clean/decoded.parquet and "
                "run the clean stage again"
            )
        self.keep(record["record_id"], record["source_uri"], result["phash"])
        privacy = privacy_words(faces, action, record["redacted"])
        return {**record, **result, "face_action": action, "privacy": privacy, "clean_path": clean_path}, None

    def keep_all(self, record_ids: list[str], uris: list[str], phashes: list[str]) -> None:
        """keep() each of many records (a chunk carried over from the last run), in one go."""
        n, new = len(self.hash_uris), np.array([int(h, 16) for h in phashes], dtype=np.uint64)
        if n + len(new) > len(self.hashes):
            self.hashes = np.concatenate([self.hashes[:n], new, np.zeros(n + len(new), dtype=np.uint64)])
        else:
            self.hashes[n : n + len(new)] = new
        self.hash_uris.extend(uris)
        self.kept_ids.update(zip(record_ids, uris))

    def keep(self, record_id: str, uri: str, phash: str) -> None:
        """Count a record as kept: later records are compared with it."""
        n = len(self.hash_uris)
        if n == len(self.hashes):
            self.hashes = np.concatenate([self.hashes, np.zeros_like(self.hashes)])
        self.hashes[n] = np.uint64(int(phash, 16))
        self.hash_uris.append(uri)
        self.kept_ids[record_id] = uri


def clean_records(raw: pd.DataFrame, load_bytes, p: CleanParams, on_image=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw records into (clean, rejects) in memory: the reference the streaming stage must agree with.

    `load_bytes(record)` returns a record's bytes; `on_image(id, img)` saves a kept image."""
    import pandas as pd  # only here: the stage itself streams with pyarrow and starts faster without pandas

    reducer, kept, rejects = Reducer(p), [], []
    for record in raw.to_dict("records"):
        result, image = None, None
        if not isinstance(record.get("ingest_error"), str) and record["record_id"] not in reducer.kept_ids:
            try:
                result, image = decode_record(load_bytes(record), p, wants_blur(record, p))
            except (OSError, pa.ArrowException) as exc:
                result = {
                    "reason": "file_unreadable",
                    "detail": f"raw pack {record.get('raw_pack')}: {getattr(exc, 'strerror', None) or exc}",
                }
        row, reject = reducer.decide(record, result)
        if row is not None:
            kept.append(row)
            if on_image is not None:
                on_image(record["record_id"], image)
        else:
            rejects.append(reject)
    clean = pd.DataFrame(kept, columns=[*raw.columns, REDACTED_FIELD[0], *KEPT_COLUMNS])
    rejected = pd.DataFrame(rejects, columns=[*raw.columns, REDACTED_FIELD[0], *REJECT_COLUMNS])
    return clean, rejected


def _extend(schema: pa.Schema, fields: list) -> pa.Schema:
    for name, kind in fields:
        schema = schema.append(pa.field(name, kind))
    return schema


def decode_key(p: CleanParams) -> str:
    """The params a decode result depends on (not the near-duplicate threshold, which only the reducer uses)."""
    return f"resolution={p.resolution},min_size={p.min_size},max_pixels={p.max_pixels},faces={face_policy.DETECTOR}"


def _result(row: dict) -> dict:
    """A decode result as the reducer takes it, from a decoded.parquet row."""
    if isinstance(row["reason"], str):
        return {"reason": row["reason"], "detail": row["detail"]}
    return {
        "width": int(row["width"]),
        "height": int(row["height"]),
        "format": row["format"],
        "phash": row["phash"],
        "faces": int(row["faces"]),
        "blurred": int(row["blurred"]),
    }


class CachedDecodes:
    """record_id -> decode result of the last run with the same decode params (data/clean/decoded.parquet), looked
    up one by one: a run that carries most chunks over asks for few. A near duplicate's PNG was not kept: should it
    be kept this time (its twin left the sources), the stage makes its PNG again."""

    def __init__(self, key: str, table: pa.Table | None = None):
        try:
            self.table = table if table is not None else read_table(paths.CLEAN_DECODED)
        except (pa.ArrowException, OSError):  # none, or unreadable: decode everything
            self.table, self.rows = None, {}
            return
        keys = self.table["key"].to_pylist()
        self.rows = {rid: i for i, rid in enumerate(self.table["record_id"].to_pylist()) if keys[i] == key}

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.rows

    def __getitem__(self, record_id: str) -> dict:
        return _result(self.table.slice(self.rows[record_id], 1).to_pylist()[0])


# data/clean/chunks.parquet: each chunk of the raw table (engine.chunk_size rows) with its key and how many rows it
# gave to each table, in order. A chunk's key chains the keys before it, so equal keys mean an equal prefix of the
# raw table under the same params: the last run's rows for that prefix are carried over as they are.
CHUNKS_SCHEMA = pa.schema(
    [("key", pa.string()), ("clean", pa.int64()), ("rejected", pa.int64()), ("decoded", pa.int64())]
)
CHUNKS_VERSION = "clean-chunks 3"  # part of every chunk key: change it when the stage's output changes


@dataclass
class PreviousRun:
    """The last run's data/clean, chunk by chunk."""

    keys: list[str]
    counts: list[tuple[int, int, int]]  # rows in records, rejects, decoded, per chunk
    starts: list[tuple[int, int, int]]  # the chunk's first row in each
    tables: tuple[pa.Table, pa.Table, pa.Table]  # records, rejects, decoded

    @classmethod
    def load(cls) -> PreviousRun | None:
        """The last run, or None when it is absent or unreadable."""
        try:
            chunks = read_table(paths.CLEAN_CHUNKS).to_pydict()
            tables = tuple(read_table(path) for path in (paths.CLEAN_RECORDS, paths.CLEAN_REJECTS, paths.CLEAN_DECODED))
        except (pa.ArrowException, OSError, KeyError):
            return None
        counts = list(zip(chunks["clean"], chunks["rejected"], chunks["decoded"]))
        starts, at = [], (0, 0, 0)
        for n in counts:
            starts.append(at)
            at = tuple(a + b for a, b in zip(at, n))
        if at != tuple(t.num_rows for t in tables):  # not the tables the chunks describe
            return None
        return cls(chunks["key"], counts, starts, tables)

    def rows(self, first: int, last: int) -> tuple[pa.Table, pa.Table, pa.Table]:
        """The rows chunks first..last (inclusive) gave to records, rejects and decoded."""
        return tuple(
            table.slice(self.starts[first][k], sum(n[k] for n in self.counts[first : last + 1]))
            for k, table in enumerate(self.tables)
        )


def _chain(key: str, batch: pa.RecordBatch) -> str:
    """The key of a raw chunk: the key before it and the chunk's content (Arrow IPC bytes), raw_pack left out."""
    batch = batch.select([name for name in batch.schema.names if name != "raw_pack"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return hashlib.sha256(key.encode() + sink.getvalue().to_pybytes()).hexdigest()


def _raw_chunks(size: int):
    """The raw table in batches of `size` rows, read 16 chunks at a time (fewer, larger reads). Each batch is copied
    into fresh arrays: the Arrow IPC bytes of a slice depend on the batch it was cut from, and _chain hashes them."""
    for big in pq.ParquetFile(paths.RAW_RECORDS).iter_batches(batch_size=size * 16):
        for offset in range(0, big.num_rows, size):
            piece = big.slice(offset, size)
            yield pa.RecordBatch.from_arrays([pa.concat_arrays([c]) for c in piece.columns], schema=piece.schema)


@dataclass
class Chunk:
    """One chunk of the raw table as _stream_raw yields it: carried over from the last run (`carried` is its index
    there), or its records with the decode results of the record ids first seen in it."""

    key: str
    carried: int | None = None
    records: list[dict] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)
    reused: int = 0  # results that came from the last run's decodes


def pack_name(key: str) -> str:
    """A chunk's image pack: named by the chunk's key, so an equal prefix of the raw table gives equal packs."""
    return f"{key[:32]}.parquet"


def _stream_raw(engine: Engine, p: CleanParams, first_key: str, previous: PreviousRun | None):
    """Yield the raw table's Chunks in order. While the table's prefix equals the last run's, chunks are carried
    over; after that, decoding runs on the engine, a window of chunks ahead, and results the last run decoded with
    the same params are reused (without their PNG when the last run kept none: a near duplicate then)."""
    pending: deque[Chunk] = deque()
    dispatched: set[str] = set()
    pack_path = lru_cache(maxsize=4096)(lambda stored: str(paths.absolute(stored)))
    cached: CachedDecodes | None = None

    def tasks():
        nonlocal cached
        key, carrying, params = first_key, previous is not None, p.model_dump()
        for i, batch in enumerate(_raw_chunks(engine.p.chunk_size)):
            key = _chain(key, batch)
            if carrying and i < len(previous.keys) and previous.keys[i] == key:
                pending.append(Chunk(key, carried=i))
                yield [], params  # nothing to do: runs here, in order with the others
                continue
            if carrying and i:  # the carried prefix's record ids, once
                dispatched.update(previous.rows(0, i - 1)[2]["record_id"].to_pylist())
            carrying = False
            if cached is None:
                cached = CachedDecodes(decode_key(p), previous.tables[2] if previous is not None else None)
            chunk, todo = Chunk(key, records=batch.to_pylist()), []
            for r in chunk.records:
                rid = r["record_id"]
                if r["ingest_error"] is not None or rid in dispatched:
                    continue
                dispatched.add(rid)
                blur = wants_blur(r, p)
                reuse = cached[rid] if rid in cached else None
                if reuse is not None and "reason" not in reuse and reuse["faces"] and bool(reuse["blurred"]) != blur:
                    reuse = None  # decoded under another face decision (its metadata changed): decode again
                if reuse is not None:
                    chunk.results[rid] = {**reuse, "raw_pack": pack_path(r["raw_pack"])}
                    chunk.reused += 1
                else:
                    todo.append((rid, pack_path(r["raw_pack"]), blur))
            pending.append(chunk)
            yield todo, params

    for results in engine.imap(decode_chunk, tasks(), light=lambda task: not task[0]):
        chunk = pending.popleft()
        chunk.results.update(results)
        yield chunk


class ImageSource:
    """The PNG of a kept record whose decode result was reused: from the last run's pack, or decoded again (the
    last run kept no PNG of a near duplicate)."""

    def __init__(self, previous: PreviousRun | None, p: CleanParams):
        self.p = p
        self.where: dict[str, str] | None = None  # record_id -> the last run's pack
        self.previous = previous

    def pngs(self, wanted: dict[str, tuple[str, bool]]) -> dict[str, bytes]:
        """{record_id: PNG bytes} for {record_id: (raw pack path, blur faces)}; the last run's PNG is taken only
        when its faces were blurred as asked now."""
        if self.where is None:
            kept = self.previous.tables[0] if self.previous is not None else None
            self.where = (
                {}
                if kept is None
                else {
                    rid: (path, action)
                    for rid, path, action in zip(
                        kept["record_id"].to_pylist(), kept["clean_path"].to_pylist(), kept["face_action"].to_pylist()
                    )
                }
            )
        out, by_pack = {}, {}
        for rid, (_, blur) in wanted.items():
            if rid in self.where:
                pack, action = self.where[rid]
                if action is None or (action == "blurred") == blur:  # no faces, or blurred as asked now
                    by_pack.setdefault(pack, set()).add(rid)
        for pack, ids in by_pack.items():
            try:
                out.update(read_pack(paths.absolute(pack), ids))
            except (OSError, pa.ArrowException):  # gone or damaged: decoded again below
                pass
        again = [(rid, raw, blur) for rid, (raw, blur) in wanted.items() if rid not in out]
        out.update({rid: r["png"] for rid, r in decode_chunk(again, self.p.model_dump()).items() if "png" in r})
        return out


def main() -> dict:
    """Clean data/raw into data/clean, streaming, in parallel and incrementally; return counts."""
    params = load_params()
    p = params.clean
    key = decode_key(p)
    raw_schema = pq.read_schema(paths.RAW_RECORDS).remove_metadata()
    # where the bytes sit in the raw store depends on how ingest chunked them, not on the data: not carried on
    raw_schema = raw_schema.remove(raw_schema.get_field_index("raw_pack"))
    first_key = hashlib.sha256(f"{CHUNKS_VERSION}\x1f{p.model_dump_json()}\x1f{raw_schema}".encode()).hexdigest()
    previous = PreviousRun.load()
    earlier = ImageSource(previous, p)
    counts: Counter = Counter()
    n_reused = 0
    rejected_results: dict[str, dict] = {}  # decode results of rejected records, for later records with the same bytes
    # One commit point: the packs and all tables replace data/clean together, so a run killed part way leaves the
    # previous data/clean (or none), never new images beside old tables.
    with atomic_dir(paths.CLEAN) as tmp, Engine(params.engine) as engine:
        inside = lambda path: tmp / path.relative_to(paths.CLEAN)  # noqa: E731
        packs = inside(paths.CLEAN_PACKS)
        packs.mkdir()
        reducer = Reducer(p)
        with (
            ParquetStream(
                inside(paths.CLEAN_RECORDS), _extend(raw_schema, [REDACTED_FIELD, *KEPT_FIELDS])
            ) as clean_out,
            ParquetStream(
                inside(paths.CLEAN_REJECTS), _extend(raw_schema, [REDACTED_FIELD, *REJECT_FIELDS])
            ) as reject_out,
            ParquetStream(inside(paths.CLEAN_DECODED), DECODED_SCHEMA) as decoded_out,
            ParquetStream(inside(paths.CLEAN_CHUNKS), CHUNKS_SCHEMA) as chunks_out,
        ):
            carry: list[int] = []  # consecutive carried chunks, copied over in one go
            written: list[Path] = []  # packs made by this run (carried ones are links to durable files)

            def copy_carried() -> None:
                nonlocal n_reused
                if not carry:
                    return
                kept, rejects, decoded = previous.rows(carry[0], carry[-1])
                for out, rows in ((clean_out, kept), (reject_out, rejects), (decoded_out, decoded)):
                    out.write_table(rows)
                chunks_out.write(
                    [
                        {"key": previous.keys[i], "clean": n[0], "rejected": n[1], "decoded": n[2]}
                        for i in carry
                        for n in [previous.counts[i]]
                    ]
                )
                for i in carry:
                    if previous.counts[i][0]:  # a chunk that kept nothing has no pack
                        _link(paths.CLEAN_PACKS / pack_name(previous.keys[i]), packs / pack_name(previous.keys[i]))
                reducer.keep_all(*(kept[c].to_pylist() for c in ("record_id", "source_uri", "phash")))
                kept_ids = reducer.kept_ids
                for i, rid in enumerate(decoded["record_id"].to_pylist()):
                    if rid not in kept_ids:  # rejected: a later record with the same bytes needs its result
                        rejected_results[rid] = _result(decoded.slice(i, 1).to_pylist()[0])
                counts.update(rejects["reason"].to_pylist())
                n_reused += decoded.num_rows
                carry.clear()

            for chunk in _stream_raw(engine, p, first_key, previous):
                if chunk.carried is not None:
                    carry.append(chunk.carried)
                    continue
                copy_carried()
                n_reused += chunk.reused
                name = pack_name(chunk.key)
                clean_path = paths.relative(paths.CLEAN_PACKS / name)
                pngs = {rid: r.pop("png") for rid, r in chunk.results.items() if "png" in r}
                raw_packs = {rid: r.pop("raw_pack") for rid, r in chunk.results.items() if "raw_pack" in r}
                kept, rejects = [], []
                for record in chunk.records:
                    rid = record["record_id"]
                    result = chunk.results.get(rid) or rejected_results.get(rid)
                    row, reject = reducer.decide(record, result, clean_path)
                    if row is not None:
                        kept.append(row)
                        continue
                    rejects.append(reject)
                    counts[reject["reason"]] += 1
                    if result is not None:
                        rejected_results[rid] = result
                missing = {
                    r["record_id"]: (raw_packs[r["record_id"]], r["face_action"] == "blurred")
                    for r in kept
                    if r["record_id"] not in pngs
                }
                if missing:
                    pngs.update(earlier.pngs(missing))
                if kept:
                    written.append(write_pack(packs, [(r["record_id"], pngs[r["record_id"]]) for r in kept], name=name))
                clean_out.write(kept)
                reject_out.write(rejects)
                decoded_out.write(
                    [{**DECODED_EMPTY, **r, "record_id": rid, "key": key} for rid, r in chunk.results.items()]
                )
                chunks_out.write(
                    [{"key": chunk.key, "clean": len(kept), "rejected": len(rejects), "decoded": len(chunk.results)}]
                )
            copy_carried()
            where = engine.describe()
        sync_files(written)  # every pack this run wrote is on disk before data/clean is swapped in
    summary = {
        "clean": clean_out.rows,
        "rejected": reject_out.rows,
        "rejects_per_reason": dict(counts),
        "decodes_reused": n_reused,
        "engine": where,
    }
    print(
        f"clean: {clean_out.rows} kept, {reject_out.rows} rejected {dict(counts)} on {where}; "
        f"{n_reused} decodes reused from the last run"
    )
    return summary


def _link(old: Path, new: Path) -> None:
    """Reuse an unchanged pack: a hard link when the filesystem allows, else a copy."""
    try:
        os.link(old, new)
    except OSError:
        shutil.copyfile(old, new)


if __name__ == "__main__":
    try:
        main()
    except RawStoreKeyError as exc:  # no usable key for the encrypted raw store: a message, not a traceback
        print(f"clean: {exc}", file=sys.stderr)
        sys.exit(2)
