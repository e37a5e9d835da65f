"""CLIP embedding throughput: atelier.models.clip.encode_images against a bare open_clip forward loop, same model."""

from __future__ import annotations

import time

import torch

from atelier import paths
from atelier.models.clip import encode_images, load_clip, normalize_images

IMAGES, BATCH, REPEATS = 4096, 256, 3


def _best(fn) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> dict:
    torch.manual_seed(0)
    model, _ = load_clip(paths.CLIP_DIR)
    images = torch.rand(IMAGES, 3, 32, 32)

    @torch.no_grad()
    def bare() -> None:
        for i in range(0, IMAGES, BATCH):
            f = model.encode_image(normalize_images(images[i:i + BATCH]))
            f / f.norm(dim=-1, keepdim=True)

    ours = IMAGES / _best(lambda: encode_images(model, images, batch_size=BATCH))
    base = IMAGES / _best(bare)
    print(f"atelier encode_images: {ours:,.0f} images/s; bare open_clip loop: {base:,.0f} images/s; "
          f"ratio {ours / base:.2f}")
    return {"atelier": ours, "baseline": base, "ratio": ours / base}


if __name__ == "__main__":
    main()
