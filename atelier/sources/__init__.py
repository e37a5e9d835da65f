"""Where images come from. Each source kind yields `Item`s, one per record, in a stable order; ingest does the rest.

A source never drops anything: a row it cannot use is yielded with `error` set ("reason: detail"), and ingest keeps
it as a record that the clean stage rejects with that reason. Sources stream: none holds all of its items at once.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from atelier import paths


@dataclass
class Item:
    """One record as its source yields it."""
    row: int                    # 1-based position in the source: metadata line, shard member, parquet row
    uri: str                    # where in the source: a file name, `shard.tar/KEY`, `file.parquet#row`, a URL
    fields: dict = field(default_factory=dict)  # metadata as the source spells it (mapped by `columns` in ingest)
    fingerprint: str = ""       # cheap identity of the bytes (path+size+mtime, URL...): equal means same bytes
    path: str | None = None     # the bytes are in this file (folder sources); read by the worker
    data: bytes | None = None   # the bytes themselves (shards, parquet, downloads)
    error: str | None = None    # why the bytes cannot be had, as "reason: detail"
    text: str = ""              # the metadata row as written, when the source has it (else `fields` stand for it)
    fetched_at: float | None = None  # when the bytes were downloaded (url sources; seconds since the epoch, UTC)


def source_root(path: str) -> Path:
    """A source path from params.yaml: relative to the repository root unless absolute."""
    p = Path(path)
    return p if p.is_absolute() else paths.ROOT / p


def iter_items(source, known: Container[str] = frozenset(), max_file_bytes: int = 256 * 2**20) -> Iterator[Item]:
    """The items of one source. An item whose fingerprint is in `known` may come without bytes (ingest reuses the
    previous run's copy); a url source uses this to avoid fetching again (ingest leaves out of `known` the URLs whose
    opt-out signals are due to be checked again)."""
    if source.kind == "folder":
        from atelier.sources.folder import iter_folder
        return iter_folder(source, max_file_bytes)
    if source.kind == "webdataset":
        from atelier.sources.shards import iter_shards
        return iter_shards(source, max_file_bytes)
    if source.kind == "parquet":
        from atelier.sources.parquet import iter_parquet
        return iter_parquet(source, max_file_bytes)
    if source.kind == "urls":
        from atelier.sources.urls import iter_urls
        return iter_urls(source, known, max_file_bytes)
    raise ValueError(f"source '{source.name}': unknown kind '{source.kind}'")
