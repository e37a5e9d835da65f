"""Lineage from recorded facts: which training records a data version held, and whether DVC knows that version."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd

from atelier import paths
from atelier.dvc import lock_md5


def cache_path(md5: str) -> Path:
    """Where DVC's cache keeps the file with this md5."""
    return paths.ROOT / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def training_records(dataset_md5: str) -> pd.DataFrame:
    """The training records a model saw, found by the md5 DVC recorded: the workspace file or the DVC cache."""
    try:
        if paths.TRAIN_RECORDS.exists() and lock_md5(paths.TRAIN_RECORDS) == dataset_md5:
            return pd.read_parquet(paths.TRAIN_RECORDS)
    except LookupError:
        pass
    if cache_path(dataset_md5).exists():
        return pd.read_parquet(cache_path(dataset_md5))
    raise FileNotFoundError(
        f"training data md5 {dataset_md5} is neither data/licensed/train.parquet nor in the DVC "
        "cache; restore it with `dvc checkout` at the commit that trained the model"
    )


def where_md5_is_recorded(md5: str) -> str | None:
    """'dvc.lock', 'DVC cache' or 'dvc.lock history (git)' when DVC has a record of this md5, else None."""
    try:
        if lock_md5(paths.TRAIN_RECORDS) == md5:
            return "dvc.lock"
    except LookupError:
        pass
    if cache_path(md5).exists():
        return "DVC cache"
    try:
        log = subprocess.run(
            ["git", "log", "-p", "--", "dvc.lock"], cwd=paths.ROOT, capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return "dvc.lock history (git)" if md5 in log else None
