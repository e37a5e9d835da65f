"""The code version recorded in runs and manifests: the git commit, marked dirty when the tree has changes."""

from __future__ import annotations

import subprocess
import time

from atelier import paths


_cached: tuple[float, str] | None = None
CACHE_S = 10.0  # a loop making many artworks asks git once per 10 s, not once per artwork


def code_version() -> str:
    """`<commit>` or `<commit>+dirty`; `atelier-<package version>` when there is no git checkout."""
    global _cached
    if _cached is not None and time.monotonic() - _cached[0] < CACHE_S:
        return _cached[1]
    _cached = (time.monotonic(), _code_version())
    return _cached[1]


def _code_version() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=paths.ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        from importlib.metadata import version

        return f"atelier-{version('atelier')}"
