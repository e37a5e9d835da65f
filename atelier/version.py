"""The code version recorded in runs and manifests: the git commit, marked dirty when the tree has changes."""

from __future__ import annotations

import subprocess

from atelier import paths


def code_version() -> str:
    """`<commit>` or `<commit>+dirty`; `atelier-<package version>` when there is no git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=paths.ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        from importlib.metadata import version

        return f"atelier-{version('atelier')}"
