"""Shared fixtures. Everything a test needs is built by code in a temporary folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ATELIER_QUIET", "1")
# signing keys for tests live in a private temp folder, never in the user's ~/.config
os.environ.setdefault("ATELIER_SIGNING_DIR", str(Path(tempfile.mkdtemp(prefix="atelier-test-keys-")) / "signing"))


def copy_repo(dest: Path) -> Path:
    """Copy the project's tracked source files (not data, models or the venv) into `dest` and git-init it."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "dvc.lock").unlink(missing_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def edit_params(root: Path, **sections: dict) -> None:
    """Update params.yaml sections in a workspace copy (shallow merge per section)."""
    path = root / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        data[name].update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh copy of the project with a small demo source, ready for `dvc repro`."""
    root = copy_repo(tmp_path / "ws")
    edit_params(root, demo={"per_class": 2})
    return root
