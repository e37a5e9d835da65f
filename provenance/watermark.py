"""The invisible watermark: the artwork's 32-bit ledger watermark id hidden in the chroma of its pixels with
invisible-watermark's `dwtDctSvd` method, so that a copy stripped of its manifest (re-saved, re-encoded as JPEG) can
still be traced to its ledger row.

Embed before the pixel sha256 is computed and before signing: the watermark changes the pixels.

Measured on 159 demo training images upscaled to 256 px (nearest), invisible-watermark 0.2.0:
- the library's default strength (U-channel scale 36, PSNR about 42 dB) read back exactly from JPEG quality 75 for
  only 73 of 159 images; at scale 56 (PSNR about 38 dB, 5th percentile 36 dB) 138 were exact and 151 within 2 bits.
  So this module uses scale 56; an image embedded at another scale does not decode here.
- about 3 in 100 images with large saturated areas cannot carry the mark even losslessly (the chroma change is
  clipped away). `embed` reads its own output back and raises WatermarkError for those; such an artwork can still be
  found by its perceptual hash.
Decoding is blind (no original needed) and deterministic. Accept a decoded id only as a clear, unique nearest match.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

METHOD = "dwtDctSvd"
BITS = 32
SCALES = [0, 56, 0]  # Y, U, V strengths: the U (chroma) channel only, as the library's default but stronger
MIN_SIDE = 256  # invisible-watermark refuses smaller images
MAX_EMBED_ERRORS = 1  # bits allowed to differ when the freshly marked image is read back losslessly


class WatermarkError(ValueError):
    """The image cannot carry the watermark reliably (too small, or too saturated to read back)."""


class Match(NamedTuple):
    id: int | None  # the accepted candidate, or None when no clear, unique match
    distance: int | None  # Hamming distance (bits) to the nearest candidate; None when there are no candidates
    margin: int | None  # bits by which the runner-up is farther than the nearest


def embed(image: Image.Image, wm_id: int) -> Image.Image:
    """A copy of the RGB `image` with `wm_id` (0 <= id < 2**32) embedded; raises WatermarkError if it cannot be read."""
    from imwatermark import WatermarkEncoder  # imports torch (seconds); only the embedding and decoding need it

    _check_size(image)
    if image.mode != "RGB":
        raise WatermarkError(f"expected an RGB image, got mode {image.mode}; convert it first (alpha is not kept)")
    if not isinstance(wm_id, int) or not 0 <= wm_id < 2**BITS:
        raise ValueError(f"watermark id must be an integer in [0, 2**{BITS}), got {wm_id!r}")
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", _to_bits(wm_id))
    bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
    marked = Image.fromarray(np.ascontiguousarray(encoder.encode(bgr, METHOD, scales=SCALES)[:, :, ::-1]))
    errors = hamming(decode(marked), wm_id)
    if errors > MAX_EMBED_ERRORS:
        raise WatermarkError(f"watermark {wm_id} reads back with {errors} wrong bits even losslessly: the image's "
                             "saturated colours leave no room for the chroma mark; find it by perceptual hash instead")
    return marked


def decode(image: Image.Image) -> int:
    """The 32 bits read from `image` as an integer (blind: whatever mark, or noise, the pixels hold)."""
    from imwatermark import WatermarkDecoder

    _check_size(image)
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    bits = WatermarkDecoder("bits", BITS).decode(bgr, METHOD, scales=SCALES)
    return _from_bits(bits)


def match(image: Image.Image, candidate_ids: list[int], max_bits: int = 4, min_margin: int = 2) -> Match:
    """The candidate whose id is nearest to the bits decoded from `image`, accepted only when clear and unique."""
    return nearest(decode(image), candidate_ids, max_bits=max_bits, min_margin=min_margin)


def nearest(bits: int, candidate_ids: list[int], max_bits: int = 4, min_margin: int = 2) -> Match:
    """Accept the nearest candidate when it is within `max_bits` and every other is at least `min_margin` farther."""
    ids = sorted(set(candidate_ids))
    if not ids:
        return Match(None, None, None)
    distances = sorted((hamming(bits, c), c) for c in ids)
    best, best_id = distances[0]
    runner_up = distances[1][0] if len(distances) > 1 else BITS + 1
    margin = runner_up - best
    accepted = best <= max_bits and margin >= min_margin
    return Match(best_id if accepted else None, best, margin)


def hamming(a: int, b: int) -> int:
    """Number of differing bits."""
    return (a ^ b).bit_count()


def _check_size(image: Image.Image) -> None:
    if image.width < MIN_SIDE or image.height < MIN_SIDE:
        raise WatermarkError(f"image is {image.width}x{image.height}; the watermark needs at least "
                             f"{MIN_SIDE}x{MIN_SIDE} px (upscale the model output first)")


def _to_bits(value: int) -> list[int]:
    return [(value >> (BITS - 1 - k)) & 1 for k in range(BITS)]


def _from_bits(bits) -> int:
    value = 0
    for bit in bits:
        value = (value << 1) | int(bool(bit))
    return value
