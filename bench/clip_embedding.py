"""CLIP embedding throughput: atelier.models.clip.encode_images against a bare open_clip forward loop, same model."""

from __future__ import annotations

import time

import torch

from atelier import paths
from atelier.models.clip import encode_images, load_clip, normalize_images

IMAGES, BATCH, REPEATS = 4096, 256, 5


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
            f = model.encode_image(normalize_images(images[i:i + BATCH]))
            out.append(f / f.norm(dim=-1, keepdim=True))
        return torch.cat(out)

    assert torch.allclose(bare(), encode_images(model, images, batch_size=BATCH), atol=1e-5)  # the same work
    ours_t, bare_t = [], []
    for _ in range(REPEATS):  # interleaved, best of REPEATS: neither side gets the warm caches
        bare_t.append(_seconds(bare))
        ours_t.append(_seconds(lambda: encode_images(model, images, batch_size=BATCH)))
    ours, base = IMAGES / min(ours_t), IMAGES / min(bare_t)
    print(f"atelier encode_images: {ours:,.0f} images/s; bare open_clip loop: {base:,.0f} images/s; "
          f"ratio {ours / base:.2f}")
    return {"atelier": ours, "baseline": base, "ratio": ours / base}


if __name__ == "__main__":
    main()
