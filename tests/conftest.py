"""Shared fixtures. Everything a test needs is built by code in a temporary folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from atelier.workspace import copy_project, edit_params  # noqa: F401 (tests import edit_params from here)

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ATELIER_QUIET", "1")
# signing keys for tests live in a private temp folder, never in the user's ~/.config
os.environ.setdefault("ATELIER_SIGNING_DIR", str(Path(tempfile.mkdtemp(prefix="atelier-test-keys-")) / "signing"))


def copy_repo(dest: Path) -> Path:
    """Copy the project's source files (not data, models or the venv) into `dest` and git-init it."""
    return copy_project(dest)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh copy of the project with a small demo source, ready for `dvc repro`."""
    root = copy_repo(tmp_path / "ws")
    edit_params(root, demo={"per_class": 2})
    return root
