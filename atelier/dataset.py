"""The licensed training set as tensors, and its deterministic held-out split."""

from __future__ import annotations

import hashlib
import io
import re

import numpy as np
import pandas as pd
import torch
from PIL import Image

from atelier import paths
from atelier.demo import PALETTES, STYLES
from atelier.rawstore import read_pack

_CAPTION = re.compile(rf"^a ({'|'.join(PALETTES)}) ({'|'.join(STYLES)}) composition$")


def is_holdout(record_id: str, fraction: float) -> bool:
    """Stable split by record id: a record stays on its side as the data grows."""
    bucket = int(hashlib.sha256(f"holdout:{record_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def split(records: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout) by is_holdout()."""
    mask = records["record_id"].map(lambda r: is_holdout(r, fraction))
    return records[~mask].reset_index(drop=True), records[mask].reset_index(drop=True)


def load_images(records: pd.DataFrame) -> torch.Tensor:
    """The records' clean images (PNGs in the packs their clean_path names) as a float tensor [N, 3, H, W] in
    [0, 1], in the records' order."""
    pngs: dict[str, bytes] = {}
    for pack, ids in records.groupby("clean_path", sort=False)["record_id"]:
        pngs.update(read_pack(paths.absolute(pack), set(ids)))
    missing = [rid for rid in records["record_id"] if rid not in pngs]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} clean images are not in their packs (first: {missing[0]}); "
            "run `dvc repro clean` or `dvc checkout data/clean`"
        )
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(pngs[rid])).convert("RGB")) for rid in records["record_id"]])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def labels(caption: str) -> tuple[str, str] | None:
    """(style, palette) named by a caption of the demo convention, or None for other captions."""
    m = _CAPTION.match(caption.strip().lower())
    return (m.group(2), m.group(1)) if m else None
