"""CLIP image embeddings of clean records, in chunks on the engine: a local process pool, or a Dask cluster when
params.yaml names one (atelier/parallel.py). Evaluation (the training set, for replication and CMMD) and generation
(the champion's training images) embed every training image; this is the part that grows with the dataset.

Identical on every engine: a chunk is always the same records, embedded by the same code with one intra-op thread
(matrix products split over several threads may sum in another order), so a chunk's bits do not depend on where it
ran. Without a Dask cluster, chunks run on `engine.workers` threads of the stage's process (torch releases the GIL;
a new process would spend seconds importing torch). Workers read the CLIP bundle and the clean packs by path, like
the ingest and clean workers.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from atelier.config import EngineParams
from atelier.dataset import load_images
from atelier.models.clip import WEIGHTS_NAME, encode_images, load_clip
from atelier.parallel import Engine

CHUNK_RECORDS = 1024  # records per task (about 0.1 s of work on one core)


@contextmanager
def _one_thread():
    """torch's intra-op threads set to one for this process (a global setting: set it around all the tasks that
    run here, so that no task restores it while another runs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@lru_cache(maxsize=2)
def _clip(clip_dir: str, stamp: tuple):
    """The CLIP model of a bundle, kept by a long-lived worker; `stamp` (the weights file's identity) makes a
    bundle rewritten in place load again."""
    return load_clip(clip_dir)[0]


def _stamp(clip_dir: str) -> tuple:
    info = os.stat(Path(clip_dir) / WEIGHTS_NAME)
    return info.st_size, info.st_mtime_ns, info.st_ino


def embed_chunk(clip_dir: str, rows: list[tuple[str, str]]) -> np.ndarray:
    """A worker's task: L2-normalised embeddings [len(rows), D] (float32) of (clean_path, record_id) pairs, in
    order. Arguments are plain data, so it runs on any engine."""
    model = _clip(clip_dir, _stamp(clip_dir))
    images = load_images(pd.DataFrame(rows, columns=["clean_path", "record_id"]))
    with _one_thread():
        return encode_images(model, images).numpy()


def embed_records(clip_dir: Path, records: pd.DataFrame, engine: EngineParams) -> torch.Tensor:
    """Embeddings [N, D] of the records' clean images (a frame with clean_path and record_id), in order."""
    rows = list(zip(records["clean_path"], records["record_id"]))
    tasks = ((str(clip_dir), rows[i : i + CHUNK_RECORDS]) for i in range(0, len(rows), CHUNK_RECORDS))
    with _one_thread(), Engine(engine) as e:
        parts = list(e.imap(embed_chunk, tasks, threads=True))
    if not parts:
        raise ValueError("no records to embed")
    return torch.from_numpy(np.concatenate(parts))
