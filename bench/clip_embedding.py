"""CLIP embedding throughput against a bare open_clip forward loop, same model.

Two figures: atelier.models.clip.encode_images on images in memory; and atelier.embedding.embed_records, the path
evaluate and generate take (read the clean packs, decode the PNGs, embed with one thread per task on the engine),
on the trained project's training records repeated to EMBED_RECORDS, against loading the same images and the bare
loop with torch's default threads."""

from __future__ import annotations

import time

import pandas as pd
import torch

from atelier import paths
from atelier.config import load_params
from atelier.dataset import load_images
from atelier.embedding import embed_records
from atelier.models.clip import encode_images, load_clip, normalize_images

IMAGES, BATCH, REPEATS = 4096, 256, 5
EMBED_RECORDS = 8192


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> dict:
    torch.manual_seed(0)
    model, _ = load_clip(paths.CLIP_DIR)
    images = torch.rand(IMAGES, 3, 32, 32)

    @torch.no_grad()
    def bare() -> torch.Tensor:  # what anyone would write: normalise, encode, L2-normalise, keep the embeddings
        out = []
        for i in range(0, IMAGES, BATCH):
            f = model.encode_image(normalize_images(images[i : i + BATCH]))
            out.append(f / f.norm(dim=-1, keepdim=True))
        return torch.cat(out)

    assert torch.allclose(bare(), encode_images(model, images, batch_size=BATCH), atol=1e-5)  # the same work
    ours_t, bare_t = [], []
    for _ in range(REPEATS):  # interleaved, best of REPEATS: neither side gets the warm caches
        bare_t.append(_seconds(bare))
        ours_t.append(_seconds(lambda: encode_images(model, images, batch_size=BATCH)))
    ours, base = IMAGES / min(ours_t), IMAGES / min(bare_t)
    print(
        f"atelier encode_images: {ours:,.0f} images/s; bare open_clip loop: {base:,.0f} images/s; "
        f"ratio {ours / base:.2f}"
    )
    results = {"atelier": ours, "baseline": base, "ratio": ours / base}

    train = pd.read_parquet(paths.TRAIN_RECORDS, columns=["clean_path", "record_id"])
    # the training records repeated, in pack order as real records are (a task's records sit in a few packs)
    records = pd.concat([train] * (EMBED_RECORDS // len(train) + 1), ignore_index=True).head(EMBED_RECORDS)
    records = records.sort_values("clean_path", kind="stable", ignore_index=True)
    engine = load_params().engine

    @torch.no_grad()
    def bare_from_packs() -> torch.Tensor:
        pixels = load_images(records)
        out = []
        for i in range(0, len(pixels), BATCH):
            f = model.encode_image(normalize_images(pixels[i : i + BATCH]))
            out.append(f / f.norm(dim=-1, keepdim=True))
        return torch.cat(out)

    ours_t, bare_t = [], []
    for _ in range(3):
        bare_t.append(_seconds(bare_from_packs))
        ours_t.append(_seconds(lambda: embed_records(paths.CLIP_DIR, records, engine)))
    ours, base = EMBED_RECORDS / min(ours_t), EMBED_RECORDS / min(bare_t)
    print(
        f"atelier embed_records ({EMBED_RECORDS:,} records from the clean packs, engine: {engine.workers} "
        f"workers): {ours:,.0f} images/s; loading them and the bare loop: {base:,.0f} images/s; "
        f"ratio {ours / base:.2f}"
    )
    results.update(engine_path=ours, engine_path_baseline=base, engine_path_ratio=ours / base)
    return results


if __name__ == "__main__":
    main()
