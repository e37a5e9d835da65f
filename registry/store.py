"""Where the registry lives, defined once: MLFLOW_TRACKING_URI if set (team mode: the tracking server), else the
project's SQLite store (absolute, so DVC's temporary folders agree)."""

from __future__ import annotations

import os

from atelier import paths


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.MLFLOW_DB}"
