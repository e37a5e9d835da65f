"""train_clip stage: the CLIP that is evaluator, text encoder and similarity model. Loads a local pretrained
checkpoint when params.yaml names one, else trains a small open_clip model on the licensed image-caption pairs."""

from __future__ import annotations

import time

import pandas as pd

from atelier import checkpoint, paths
from atelier.config import load_params
from atelier.dataset import labels, load_images, split
from atelier.io import atomic_dir, write_json
from atelier.models.clip import load_clip, save_clip_bundle, train_clip, zero_shot
from atelier.reports import write_curve


def holdout_accuracy(model, tokenizer, holdout: pd.DataFrame) -> dict:
    """Zero-shot style and palette accuracy on held-out real images whose captions name both."""
    named = holdout[holdout["caption"].map(labels).notna()]
    if named.empty:
        return {"holdout_images": 0}
    images = load_images(named)
    styles, palettes = zip(*named["caption"].map(labels))
    return {
        "holdout_images": len(named),
        "holdout_style_accuracy": zero_shot(model, tokenizer, images, list(styles), "style")[0],
        "holdout_palette_accuracy": zero_shot(model, tokenizer, images, list(palettes), "palette")[0],
    }


def main() -> dict:
    """Train or load CLIP, save the local-dir bundle to models/clip, report zero-shot accuracy."""
    p = load_params().train_clip
    records = pd.read_parquet(paths.TRAIN_RECORDS)
    train, holdout = split(records, p.holdout_fraction)
    start = time.time()
    curve: list[float] = []
    resumable = None
    if p.pretrained:
        model, tokenizer = load_clip(p.pretrained)
        source = f"pretrained:{p.pretrained}"
    else:
        resumable = checkpoint.for_stage("train_clip")  # a killed run resumes from its last checkpoint
        model = train_clip(load_images(train), list(train["caption"]), p,
                           on_step=lambda step, m: curve.append(m["clip_loss"]), checkpoint=resumable)
        _, tokenizer = None, None
        source = "trained"
    with atomic_dir(paths.CLIP_DIR) as tmp:
        sha256 = save_clip_bundle(model, p, tmp)
    model, tokenizer = load_clip(paths.CLIP_DIR)
    summary = {"source": source, "weights_sha256": sha256, "train_images": len(train), "steps": len(curve),
               "seconds": round(time.time() - start, 1), **holdout_accuracy(model, tokenizer, holdout)}
    write_curve(paths.TRAIN_CURVES / "clip.csv", "clip_loss", curve)
    write_json(paths.REPORTS / "clip.json", summary)
    if resumable is not None:
        resumable.clear()  # every output is written: nothing left to resume
    print(f"train_clip: {summary}")
    return summary


if __name__ == "__main__":
    main()
