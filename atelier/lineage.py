"""Lineage from recorded facts: which training records a data version held, and whether DVC knows that version."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from atelier import paths
from atelier.dvc import lock_md5

if TYPE_CHECKING:
    import pandas as pd


def cache_path(md5: str) -> Path:
    """Where DVC's cache keeps the file with this md5."""
    return paths.ROOT / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def training_records(dataset_md5: str) -> pd.DataFrame:
    """The training records a model saw, found by the md5 DVC recorded: the workspace file or the DVC cache."""
    import pandas as pd

    return pd.read_parquet(training_records_file(dataset_md5))


def training_rows(dataset_md5: str) -> list[dict]:
    """training_records as plain rows, read without pandas (a command that only checks them starts faster)."""
    import pyarrow.parquet as pq

    return pq.read_table(training_records_file(dataset_md5)).to_pylist()


def training_records_file(dataset_md5: str) -> Path:
    """The Parquet file of the training records with this md5: the workspace's, else the DVC cache's."""
    try:
        if paths.TRAIN_RECORDS.exists() and lock_md5(paths.TRAIN_RECORDS) == dataset_md5:
            return paths.TRAIN_RECORDS
    except LookupError:
        pass
    if cache_path(dataset_md5).exists():
        return cache_path(dataset_md5)
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
