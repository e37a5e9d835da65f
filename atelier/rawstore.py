"""The raw store: every ingested image's original bytes, packed into Parquet files under data/raw/packs/.

A pack holds (record_id, data) rows for one chunk of records; data/raw/records.parquet names each record's pack in
`raw_pack`. DESIGN.md asked for one file per image (data/raw/images/<sha256>.<ext>); measured on these machines,
creating a small file costs 100-500 us of kernel time, more than decoding a 256 px JPEG, and DVC hashes and caches
each file separately: a million-image source becomes a million inodes in the workspace and in the DVC cache. Packs
keep the bytes unmodified and content-addressed (record_id is their sha256), in one file per chunk.

A pack's name is derived from the record ids it was written with, so a run from scratch is reproducible. Packs are
written without fsync; the stage syncs them (atelier.io.sync_files) before it commits its tables. `compact` keeps
the store equal to what the records need: packs no record refers to are deleted, and a pack holding bytes of
records that left the sources is rewritten without them (an image removed from a source leaves nothing behind).

The clean stage stores its PNGs with the same functions, in data/clean/packs/, one pack per chunk named by the
chunk's key.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from atelier import paths
from atelier.io import read_table, write_bytes

PACK_SCHEMA = pa.schema([("record_id", pa.string()), ("data", pa.binary())])


def _write(path: Path, rows: dict[str, bytes]) -> None:
    buf = io.BytesIO()
    table = pa.table({"record_id": list(rows), "data": list(rows.values())}, schema=PACK_SCHEMA)
    pq.write_table(table, buf, compression="none")  # images are compressed already
    write_bytes(path, buf.getvalue(), durable=False)  # atomic; the stage syncs (sync_files) before its commit


def write_pack(folder: Path, rows: list[tuple[str, bytes]], name: str | None = None) -> Path:
    """Store (record_id, bytes) rows in one pack (an id given twice is stored once); return the pack's path. The
    pack is named `name`, or after its ids: a name must always stand for the same rows."""
    unique: dict[str, bytes] = {}
    for rid, data in rows:
        unique.setdefault(rid, data)  # all occurrences of an id have the same bytes
    path = folder / (name or f"{hashlib.sha256(chr(10).join(unique).encode()).hexdigest()[:32]}.parquet")
    folder.mkdir(parents=True, exist_ok=True)
    if not path.exists():  # the same ids hold the same bytes: an existing pack of that name is this pack
        _write(path, unique)
    return path


def read_pack(path: Path, ids: set[str] | None = None) -> dict[str, bytes]:
    """record_id -> bytes of a pack's rows (only `ids`, when given)."""
    table = read_table(path)
    if ids is None:
        return dict(zip(table["record_id"].to_pylist(), table["data"].to_pylist()))
    rows = table["record_id"].to_pylist()
    return {rid: table["data"][i].as_py() for i, rid in enumerate(rows) if rid in ids}


def read_bytes(record: dict) -> bytes:
    """One record's original bytes (records.parquet row with `raw_pack`)."""
    data = read_pack(paths.absolute(record["raw_pack"]), {record["record_id"]}).get(record["record_id"])
    if data is None:
        raise FileNotFoundError(f"record {record['record_id']} is not in its pack {record['raw_pack']}")
    return data


def compact(folder: Path, live: dict[str, set[str]], held: dict[str, set[str]] | None = None) -> tuple[int, int]:
    """Make `folder` hold exactly the `live` {pack path (as stored) -> record ids}; return (deleted, rewritten).

    `held` {pack name -> ids}: what each pack is known to hold (the last finished compaction); a pack that holds
    nothing but live ids is not opened. Packs not in `held` are read."""
    deleted = rewritten = 0
    if not folder.exists():
        return 0, 0
    wanted = {Path(paths.absolute(p)).name: ids for p, ids in live.items()}
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        ids = wanted.get(entry.name)
        if ids is None:
            os.unlink(entry.path)
            deleted += 1
            continue
        known = held.get(entry.name) if held is not None else None
        if known is not None and known <= ids:
            continue
        stored = read_table(Path(entry.path), columns=["record_id"])["record_id"].to_pylist()
        if set(stored) - ids:
            _write(Path(entry.path), read_pack(Path(entry.path), ids))
            rewritten += 1
    return deleted, rewritten
