"""Atomic writes: every output is written to a temporary sibling, then renamed into place.

A temporary is named `.<name>.<pid>.<random>` so that one left by a writer that was killed (SIGKILL, power loss) can be
told from one that is being written: atomic_dir and write_parquet remove the leftovers of dead writers before they
start; a live writer's temporaries are never touched. A reader never mistakes a temporary for an output (hidden name,
and every reader opens the final path).
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (on this machine; one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporaries of `path` whose writer process no longer exists; return what was deleted."""
    removed = []
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*"):
        pid = leftover.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


_counter = itertools.count()


def remove_stale_temps_in(folder: Path) -> list[Path]:
    """remove_stale_temps for every file of `folder` (for stores whose file names are not known in advance)."""
    removed = []
    if folder.is_dir():
        for entry in os.scandir(folder):
            match = re.match(r"^\.(.+?)\.(\d+)\.", entry.name)
            if match and not process_alive(int(match.group(2))):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed


def write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename).

    `durable=False` skips the fsync, for the many packs a data stage writes: still atomic (a killed process leaves
    the old file or the new one), and the stage calls sync_files() once before its commit point.
    The temporary's name is made from the pid and a counter (unique within this host's live processes), not by
    tempfile.mkstemp, which costs several times more per file on a busy folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_temp_prefix(path)}{threading.get_ident()}-{next(_counter)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sync_files(files: list[Path], many: int = 16) -> None:
    """Make `files` (written with durable=False) durable before a commit point: an fsync each when they are few (an
    incremental run), one os.sync() when there are many (cheaper than an fsync per file; it flushes everything)."""
    if len(files) > many:
        os.sync()
        return
    for path in files:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: object) -> None:
    """Write JSON (sorted keys, indented) atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as Parquet atomically (fsync before the rename, so a crash leaves the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` whole, on failure it is removed.

    A crash leaves `path` as it was, or (killed between the two renames) absent: never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def read_table(path: Path, columns: list[str] | None = None):
    """A Parquet file as an Arrow table. Through ParquetFile, not pq.read_table, which imports pyarrow.dataset
    (0.3 s, more than an incremental stage's whole work)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        return pf.read(columns=columns)


def read_frame(path: Path, columns: list[str]) -> pd.DataFrame:
    """`columns` of a Parquet file as a DataFrame; an empty one with those columns when the file does not exist."""
    import pandas as pd

    if not path.exists():
        return pd.DataFrame(columns=columns)
    return pd.read_parquet(path, columns=columns)


class ParquetStream:
    """Write a Parquet file batch by batch, atomically: rows go to a temporary sibling that replaces `path` on close.

    Memory stays at one row group (ROW_GROUP rows) whatever the number of rows. Leaving the `with` block by an
    exception removes the temporary and leaves `path` as it was."""

    ROW_GROUP = 65536  # rows per row group: fixed, so the bytes do not depend on how the rows were batched

    def __init__(self, path: Path, schema, **options):
        # No dictionary encoding by default: the data tables' ids, paths and titles are nearly all distinct, and
        # building the dictionaries took half the time of writing them. `options` go to pq.ParquetWriter.
        self.path, self.schema, self.rows = path, schema, 0
        self.options = {"use_dictionary": False, **options}
        self._pending, self._pending_rows = [], 0  # rows not yet written: fewer than ROW_GROUP

    def __enter__(self) -> ParquetStream:
        import pyarrow.parquet as pq

        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path)
        fd, self._tmp = tempfile.mkstemp(prefix=_temp_prefix(self.path), suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._writer = pq.ParquetWriter(self._tmp, self.schema, **self.options)
        return self

    def write(self, rows: list[dict]) -> None:
        import pyarrow as pa

        if rows:
            self._add(pa.Table.from_pylist(rows, schema=self.schema))

    def write_table(self, table) -> None:
        """Write an Arrow table of this stream's schema (rows carried over whole, without a detour through Python)."""
        if table.num_rows:
            table = table.select(self.schema.names)
            if not table.schema.equals(self.schema):  # (cast imports pyarrow.compute: only when needed)
                table = table.cast(self.schema)
            self._add(table)

    def _add(self, table) -> None:
        """Queue `table`'s rows; write every full row group. Row groups hold ROW_GROUP rows each (the last fewer),
        whatever batches the rows came in, so the file's bytes depend on its rows only: a fresh run, an incremental
        one and any engine or chunk size write the same file, and DVC records the same md5."""
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        while self._pending_rows >= self.ROW_GROUP:
            self._flush(self.ROW_GROUP)

    def _flush(self, n: int) -> None:
        import pyarrow as pa

        queued = pa.concat_tables(self._pending)
        self._writer.write_table(queued.slice(0, n), row_group_size=n)
        rest = queued.slice(n)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self._pending_rows:
            self._flush(self._pending_rows)
        self._writer.close()
        if exc_type is not None:
            Path(self._tmp).unlink(missing_ok=True)
            return
        with open(self._tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self._tmp, self.path)
