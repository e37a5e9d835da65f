"""A scratch copy of the project (its tracked and untracked-but-not-ignored source files; no data, models or venv),
for tests and benchmarks that run the real stages without touching the user's workspace."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from atelier import paths


def copy_project(dest: Path) -> Path:
    """Copy the project's source files into `dest`, drop dvc.lock, and git-init it (DVC needs a repository)."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=paths.ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = paths.ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "dvc.lock").unlink(missing_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def edit_params(root: Path, **sections: dict) -> None:
    """Update params.yaml sections in a copy (shallow merge per section; a missing section is created)."""
    path = root / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
