"""Folder sources: metadata.jsonl or metadata.csv beside the image files it names (the imagefolder convention)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from pathlib import Path

from atelier.sources.item import Item, source_root
from atelier.sources.metadata import MetadataRow, iter_folder_metadata, iter_jsonl


@lru_cache(maxsize=64)
def _resolved(folder: Path) -> Path:
    return folder.resolve()  # once per source, not once per row


def _plain(root: Path, file_name: str) -> tuple[str, os.stat_result] | None:
    """root/file_name and its lstat when it is a regular file and no part of it under `root` is a link or `..`
    (one lstat per part: the common case, much cheaper than resolving the whole path); None when it needs the full
    resolution (a link, a folder, a missing file...)."""
    parts = file_name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    current = str(root)
    try:
        for part in parts[:-1]:
            current = f"{current}/{part}"
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return None
        current = f"{current}/{parts[-1]}"
        info = os.lstat(current)
    except (OSError, ValueError):
        return None
    return (current, info) if stat.S_ISREG(info.st_mode) else None


def resolve_inside(folder: Path, file_name: str) -> Path | None:
    """The file's path if `file_name` stays inside `folder` (symlinks resolved), else None."""
    if not file_name or Path(file_name).is_absolute():
        return None
    root = _resolved(folder)
    target = (root / file_name).resolve()
    return target if target.is_relative_to(root) else None


def locate(
    folder: Path, file_name: str, source: str, line: int, max_file_bytes: int
) -> tuple[str | Path | None, os.stat_result | None, str | None]:
    """The regular file that `file_name` names inside `folder` and its stat, or None and why not (an ingest error)."""
    if not file_name.startswith("/") and (plain := _plain(_resolved(folder), file_name)) is not None:
        path, info = plain  # the common case: a plain regular file, one lstat per part of its name
        if info.st_size <= max_file_bytes:
            return path, info, None
    where = f"'{file_name}' (line {line})"
    try:
        path = resolve_inside(folder, file_name)
        if path is None:
            return None, None, f"path_outside_source: '{file_name}' points outside source '{source}'; refused"
        try:
            info = os.stat(path)  # one system call answers exists, folder, regular file and size
        except FileNotFoundError:
            if os.path.lexists(folder / file_name):
                return None, None, f"file_missing: {where} is a link to nothing in source '{source}'"
            return None, None, f"file_missing: {where} does not exist in source '{source}'"
        if stat.S_ISDIR(info.st_mode):
            return None, None, f"file_unreadable: {where} is a folder, not a file"
        if not stat.S_ISREG(info.st_mode):
            return None, None, f"file_unreadable: {where} is not a regular file (a pipe, socket or device); refused"
    except ValueError:  # a NUL byte in the name
        return None, None, f"file_unreadable: {where} is not a valid file name"
    except RuntimeError:  # pathlib's symlink loop
        return None, None, f"file_unreadable: {where} is a loop of symbolic links"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, None, f"file_unreadable: {where} is a loop of symbolic links"
        return None, None, f"file_unreadable: {where} cannot be opened: {exc.strerror or exc}"
    if info.st_size > max_file_bytes:
        return (
            None,
            None,
            (
                f"file_too_large: {where} has {info.st_size} bytes, over ingest.max_file_bytes="
                f"{max_file_bytes} for one image"
            ),
        )
    return path, info, None


def folder_item(row: MetadataRow, folder: Path, source: str, columns, max_file_bytes: int) -> Item:
    """The item of one metadata row: its file located (not read: the ingest worker reads it), or why not."""
    raw_name = row.fields.get(columns.file_name)
    file_name = "" if raw_name is None else str(raw_name).replace("\x00", "").strip()
    item = Item(row=row.line, uri=file_name or f"<line {row.line}>", fields=row.fields, error=row.error, text=row.text)
    if item.error is None and isinstance(raw_name, str) and "\x00" in raw_name:
        item.error = f"metadata_malformed: line {row.line} field '{columns.file_name}' contains a NUL byte"
    if item.error is None and not file_name:
        item.error = f"metadata_malformed: line {row.line} has no '{columns.file_name}' value"
    if item.error is None:
        path, info, item.error = locate(folder, file_name, source, row.line, max_file_bytes)
        if path is not None:
            item.path = str(path)
            item.fingerprint = f"file:{path}:{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"
    return item


def _folder(source) -> Path:
    folder = source_root(source.path)
    if not folder.is_dir():
        raise FileNotFoundError(f"source '{source.name}': folder {folder} does not exist (params.yaml ingest.sources)")
    return folder


def iter_folder(source, max_file_bytes: int) -> Iterator[Item]:
    """One item per metadata row, in file order."""
    folder = _folder(source)
    for row in iter_folder_metadata(folder):
        yield folder_item(row, folder, source.name, source.columns, max_file_bytes)


@dataclass
class Block:
    """Consecutive lines of a metadata.jsonl, as bytes: what ingest keys a chunk by before parsing anything."""

    first_line: int
    lines: list[bytes]


def folder_blocks(source, size: int) -> Iterator[Block] | None:
    """The source's metadata.jsonl in blocks of `size` lines, or None when the source has a metadata.csv (a CSV row
    can span lines, so its rows cannot be cut by line)."""
    path = _folder(source) / "metadata.jsonl"
    if not path.exists():
        return None

    def blocks() -> Iterator[Block]:
        with path.open("rb") as fh:
            first = 1
            while lines := list(islice(fh, size)):
                yield Block(first, lines)
                first += len(lines)

    return blocks()


def block_items(block: Block, source, max_file_bytes: int) -> list[Item]:
    """The items of a block's lines (the same as iter_folder gives for them)."""
    folder = _folder(source)
    return [
        folder_item(row, folder, source.name, source.columns, max_file_bytes)
        for row in iter_jsonl(block.lines, first=block.first_line)
    ]


def unchanged(fingerprint: str) -> bool:
    """Whether the file a folder fingerprint (file:path:size:mtime:inode) names is still that regular file: the same
    inode, size and mtime at the same path, so the same bytes the last run checked and copied."""
    if not fingerprint.startswith("file:"):
        return False
    path, _, _, _ = parts = fingerprint[5:].rsplit(":", 3)
    try:
        info = os.lstat(path)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(info.st_mode) and parts[1:] == [str(info.st_size), str(info.st_mtime_ns), str(info.st_ino)]
