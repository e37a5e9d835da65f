"""One record as a source yields it, and where a source's path points."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from atelier import paths


@dataclass
class Item:
    """One record as its source yields it."""

    row: int  # 1-based position in the source: metadata line, shard member, parquet row
    uri: str  # where in the source: a file name, `shard.tar/KEY`, `file.parquet#row`, a URL
    fields: dict = field(default_factory=dict)  # metadata as the source spells it (mapped by `columns` in ingest)
    fingerprint: str = ""  # cheap identity of the bytes (path+size+mtime, URL...): equal means same bytes
    path: str | None = None  # the bytes are in this file (folder sources); read by the worker
    data: bytes | None = None  # the bytes themselves (shards, parquet, downloads)
    error: str | None = None  # why the bytes cannot be had, as "reason: detail"
    text: str = ""  # the metadata row as written, when the source has it (else `fields` stand for it)
    fetched_at: float | None = None  # when the bytes were downloaded (url sources; seconds since the epoch, UTC)


def source_root(path: str) -> Path:
    """A source path from params.yaml: relative to the repository root unless absolute."""
    p = Path(path)
    return p if p.is_absolute() else paths.ROOT / p
