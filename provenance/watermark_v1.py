"""Version 1 of the invisible watermark (METHOD_V1 "dwtDctSvd"; embed_v1(), decode(), match()): written by older
ledgers, still read (provenance/watermark.py, which callers use, tries version 2 first). 32-bit Reed-Muller code words
(provenance/ledger.py) in the U channel by invisible-watermark's dwtDctSvd, matched by nearest code word among the
ledger's candidates.

Measured on 159 demo training images upscaled to 256 px (nearest), invisible-watermark 0.2.0:
- the library's default strength (U-channel scale 36, PSNR about 42 dB) read back exactly from JPEG quality 75 for
  only 73 of 159 images; at scale 56 (PSNR about 38 dB, 5th percentile 36 dB) 138 were exact and 151 within 2 bits.
  So this module uses scale 56; an image embedded at another scale does not decode here.
- about 3 in 100 images with large saturated areas cannot carry the mark even losslessly (the chroma change is
  clipped away). `embed_v1` reads its own output back and raises WatermarkError for those; such an artwork can still be
  found by its perceptual hash.
Decoding is blind (no original needed) and deterministic. Accept a decoded id only as a clear, unique nearest match.

Implementation: a vectorised copy of invisible-watermark 0.2.0's `dwtDctSvd` encode and decode
(imwatermark/dwtDctSvd.py), pixel-for-pixel and bit-for-bit identical to it (tests/test_watermark_fast.py compares the
two), so marks made with the library read back here and vice versa. The package stays a dependency as that reference
(and for cv2 and pywt, which it requires); this module no longer imports it (it imports torch: seconds).
The algorithm, per channel with a positive scale (the library looks at Y and U only, so SCALES[2] is never used):
1. BGR -> YUV (cv2, uint8); one level of the 'haar' DWT (pywt) on the channel cropped to a multiple of 4 px.
2. The approximation band is cut into 4x4 blocks, row by row; block k carries bit k % 32 (the id repeats).
3. Per block: 2-D DCT (cv2), SVD, and the largest singular value s0 is moved to the middle of the lower (bit 0) or
   upper (bit 1) half of its interval of width `scale`: s0' = (s0 // scale + 0.25 + 0.5 * bit) * scale. The block
   becomes the inverse DCT of U diag(s') V^T. Decoding reads bit = s0 % scale > scale / 2 per block and takes a
   majority vote per bit.
4. The inverse DWT (with the library's swap of the horizontal and vertical detail bands) is written back into the
   uint8 channel (numpy's float -> uint8 assignment, as the library does), then YUV -> BGR.
Why vectorised: the library runs step 3 as a Python loop over the 1024 blocks of a 256 px image, with an SVD and two
cv2 calls each; `embed` (with its read-back) took 26 ms and `decode` 11 ms, against a budget of a few ms. Here the
blocks are stacked into one (n, 4, 4) array (5.5 ms and 2.2 ms), computed exactly as the library computes them:
numpy's stacked SVD calls the same LAPACK routine per matrix (same U, s, V, signs included), stacked matmul the same
BLAS gemm, and the DCT of every block is two cv2.dct(DCT_ROWS) passes (rows, then columns), which is how cv2.dct
computes a 2-D DCT. scipy's dctn differs from cv2 in the last bits, and singular values computed alone
(compute_uv=False) take another LAPACK path and differ too; such differences would flip the truncation to uint8 or
the s0 // scale interval in flat regions, so neither is used.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

METHOD_V1 = "dwtDctSvd"  # the manifest's watermark method for version 1 marks (the library's method name)
BITS = 32  # version 1
SCALES = [0, 56, 0]  # Y, U, V strengths: the U (chroma) channel only, as the library's default but stronger
MIN_SIDE = 256  # invisible-watermark refuses smaller images
MAX_EMBED_ERRORS = 1  # bits allowed to differ when the freshly marked image is read back losslessly


class WatermarkError(ValueError):
    """The image cannot carry the watermark reliably (too small, or too saturated to read back)."""


class Match(NamedTuple):
    id: int | None  # the accepted candidate, or None when no clear, unique match
    distance: int | None  # Hamming distance (bits) to the nearest candidate; None when there are no candidates
    margin: int | None  # bits by which the runner-up is farther than the nearest


def embed_v1(image: Image.Image, wm_id: int) -> Image.Image:
    """Version 1: a copy of the RGB `image` with the 32 bits `wm_id` embedded; raises WatermarkError if they cannot be
    read back. New artworks are marked with embed() (version 2); this stays for tests and old ledgers' marks."""
    _check_size(image)
    if image.mode != "RGB":
        raise WatermarkError(f"expected an RGB image, got mode {image.mode}; convert it first (alpha is not kept)")
    if not isinstance(wm_id, int) or not 0 <= wm_id < 2**BITS:
        raise ValueError(f"watermark id must be an integer in [0, 2**{BITS}), got {wm_id!r}")
    bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
    marked = Image.fromarray(np.ascontiguousarray(_encode(bgr, _to_bits(wm_id))[:, :, ::-1]))
    errors = hamming(decode(marked), wm_id)
    if errors > MAX_EMBED_ERRORS:
        raise WatermarkError(
            f"watermark {wm_id} reads back with {errors} wrong bits even losslessly: the image's "
            "saturated colours leave no room for the chroma mark; find it by perceptual hash instead"
        )
    return marked


def decode(image: Image.Image) -> int:
    """Version 1: the 32 bits read from `image` as an integer (blind: whatever mark, or noise, the pixels hold)."""
    _check_size(image)
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    return _from_bits(_decode(bgr, BITS))


def match(image: Image.Image, candidate_ids: list[int], max_bits: int = 4, min_margin: int = 2) -> Match:
    """Version 1: the candidate whose id is nearest to the bits decoded from `image`, if clear and unique."""
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
        raise WatermarkError(
            f"image is {image.width}x{image.height}; the watermark needs at least "
            f"{MIN_SIDE}x{MIN_SIDE} px (upscale the model output first)"
        )


def _to_bits(value: int) -> list[int]:
    return [(value >> (BITS - 1 - k)) & 1 for k in range(BITS)]


def _from_bits(bits) -> int:
    value = 0
    for bit in bits:
        value = (value << 1) | int(bool(bit))
    return value


# The dwtDctSvd method, vectorised (see the module docstring). cv2 and pywt are imported when first needed.


def cv2_one_thread():
    """cv2, imported when first needed, on one thread (both versions' blocks are small)."""
    import cv2

    cv2.setNumThreads(1)  # 4x4 blocks are tiny: OpenCV's worker threads would only take the cores from torch
    return cv2


def _encode(bgr: np.ndarray, bits: list[int]) -> np.ndarray:
    """`bits` embedded in the uint8 BGR image, as imwatermark's EmbedDwtDctSvd.encode with SCALES."""
    cv2 = cv2_one_thread()
    import pywt

    rows, cols = bgr.shape[0] // 4 * 4, bgr.shape[1] // 4 * 4
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    for channel in range(2):  # as the library: Y and U only
        scale = SCALES[channel]
        if scale <= 0:
            continue
        approx, (horizontal, vertical, diagonal) = pywt.dwt2(yuv[:rows, :cols, channel], "haar")
        blocks = _to_blocks(approx)
        u, s, vt = np.linalg.svd(_dct(blocks))
        block_bits = np.resize(np.asarray(bits), len(blocks))  # block k carries bit k % len(bits)
        s[:, 0] = (s[:, 0] // scale + 0.25 + 0.5 * block_bits) * scale
        # u @ diag(s) @ vt; scaling the rows of vt equals the library's product with diag(s) exactly
        _from_blocks(approx, _dct(u @ (s[:, :, None] * vt), inverse=True))
        # the detail bands go back as (vertical, horizontal, diagonal): the library's swap, kept for identical pixels
        yuv[:rows, :cols, channel] = pywt.idwt2((approx, (vertical, horizontal, diagonal)), "haar")
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)


def _decode(bgr: np.ndarray, n_bits: int) -> np.ndarray:
    """The `n_bits` booleans read from the uint8 BGR image, as imwatermark's EmbedDwtDctSvd.decode with SCALES."""
    cv2 = cv2_one_thread()
    import pywt

    rows, cols = bgr.shape[0] // 4 * 4, bgr.shape[1] // 4 * 4
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    votes, slots = [], []
    for channel in range(2):
        scale = SCALES[channel]
        if scale <= 0:
            continue
        approx, _ = pywt.dwt2(yuv[:rows, :cols, channel], "haar")
        # the full SVD, as the library: singular values alone (compute_uv=False) can differ in the last bit
        s0 = np.linalg.svd(_dct(_to_blocks(approx)))[1][:, 0]
        votes.append(s0 % scale > scale * 0.5)
        slots.append(np.arange(len(s0)) % n_bits)  # block k of each channel votes for bit k % n_bits
    slots = np.concatenate(slots)
    ones = np.bincount(slots, weights=np.concatenate(votes), minlength=n_bits)
    return ones / np.bincount(slots, minlength=n_bits) * 255 > 127  # the library's mean vote * 255 > 127


def _to_blocks(band: np.ndarray) -> np.ndarray:
    """The whole 4x4 blocks of `band` in row-major order, as an (n, 4, 4) array (a copy)."""
    nr, nc = band.shape[0] // 4, band.shape[1] // 4
    return band[: nr * 4, : nc * 4].reshape(nr, 4, nc, 4).swapaxes(1, 2).reshape(-1, 4, 4)


def _from_blocks(band: np.ndarray, blocks: np.ndarray) -> None:
    """Write the (n, 4, 4) `blocks` back into `band` in place (the inverse of _to_blocks)."""
    nr, nc = band.shape[0] // 4, band.shape[1] // 4
    band[: nr * 4, : nc * 4] = blocks.reshape(nr, nc, 4, 4).swapaxes(1, 2).reshape(nr * 4, nc * 4)


def _dct(blocks: np.ndarray, inverse: bool = False) -> np.ndarray:
    """cv2.dct (or cv2.idct) of every 4x4 block, bit-identical: a 1-D DCT of every row, then of every column."""
    cv2 = cv2_one_thread()

    flags = cv2.DCT_ROWS | (cv2.DCT_INVERSE if inverse else 0)
    rows_done = cv2.dct(np.ascontiguousarray(blocks).reshape(-1, 4), flags=flags).reshape(-1, 4, 4)
    columns = np.ascontiguousarray(rows_done.swapaxes(1, 2)).reshape(-1, 4)
    return cv2.dct(columns, flags=flags).reshape(-1, 4, 4).swapaxes(1, 2)
