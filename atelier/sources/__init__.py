"""Where images come from. Each source kind yields `Item`s, one per record, in a stable order; ingest does the rest.

A source never drops anything: a row it cannot use is yielded with `error` set ("reason: detail"), and ingest keeps
it as a record that the clean stage rejects with that reason. Sources stream: none holds all of its items at once.
"""

from __future__ import annotations

from collections.abc import Container, Iterator

from atelier.sources.item import Item, source_root

__all__ = ["Item", "iter_items", "source_root"]


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
