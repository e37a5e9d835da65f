"""One pipeline run per workspace: a second concurrent run refuses at once with a message naming the holder."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".atelier.lock"


class WorkspaceBusy(RuntimeError):
    """Another Atelier run holds this workspace."""


@contextmanager
def workspace_lock(root: Path, purpose: str) -> Iterator[None]:
    """Hold an exclusive lock on `root` for the block; raise WorkspaceBusy if another process holds it.

    The lock is a kernel flock, so it is released when its holder exits, even after SIGKILL: no stale locks."""
    path = Path(root) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "{}"
            try:
                info = json.loads(holder)
            except json.JSONDecodeError:
                info = {}
            raise WorkspaceBusy(
                f"another Atelier run holds {root} ({info.get('purpose', 'unknown purpose')}, "
                f"pid {info.get('pid', '?')}, "
                f"since {info.get('since', '?')}); wait for it to finish, or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps(
                {"pid": os.getpid(), "purpose": purpose, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            ).encode(),
            0,
        )
        yield
    finally:
        os.close(fd)  # closing releases the flock
