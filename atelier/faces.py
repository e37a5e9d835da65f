"""Faces in images: found offline on the CPU, blurred in the training copy, or the reason a record may keep them.

The detector is dlib's frontal-face HOG detector (`dlib.get_frontal_face_detector()`, from the `dlib-bin` wheel): it
needs no model file and nothing is downloaded. It finds frontal and near-frontal faces of about 40 pixels or more
at the size it looks at; small, turned, distant or covered faces are missed (bench/faces.py measures how many).

The detector looks at the decoded source image, not the small training copy: an image is scaled so that its longer
side is between DETECT_MIN_SIDE and DETECT_MAX_SIDE pixels (big photographs scaled down, small images up) and then
upsampled once by dlib (the detector's window is 80 pixels): frontal faces down to about 1/10 of the image's longer
side are found, smaller ones are missed. A detection counts when
its score is above SCORE_THRESHOLD (calibrated in bench/faces.py: the demo's and scenes' drawings give none).

Exemptions (kept unblurred under `clean.faces: blur` or `exclude`), read from a record's metadata columns when the
raw table has them (ingest carries them from the source's metadata):
- `model_release` (or `consent`): a true value (true, yes, 1) records that the people shown consented or signed a
  model release;
- `historical`: a true value marks an artwork of historical figures; it counts only when the work's licence is the
  Public Domain Mark (its copyright has expired, so the people shown are long dead). A CC0 photograph or any other
  licence is not exempted by the flag alone.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

DETECTOR = "dlib-hog-frontal-1"  # names the detector and its settings: part of clean's decode key
DETECT_MAX_SIDE = 400  # a bigger image is scaled down to this longer side before detection
DETECT_MIN_SIDE = 200  # a smaller image is scaled up to this longer side (then dlib upsamples it once more)
SCORE_THRESHOLD = 0.0  # dlib's detection score must exceed this
MARGIN = 0.3  # the blurred box grows by this fraction of the face box on each side (hair, chin, ears)
BLUR_CELLS = 4  # the face box keeps at most this many cells across (4x4 colours), then is smoothed

TRUE_WORDS = {"1", "true", "yes", "y", "on"}
PUBLIC_DOMAIN = {"LicenseRef-PDM-1.0"}  # licences under which `historical: true` exempts a record


@lru_cache(maxsize=1)
def _detector():
    import dlib  # here: a run that decodes nothing does not load it

    return dlib.get_frontal_face_detector()


def detect(img: Image.Image) -> list[tuple[int, int, int, int]]:
    """The face boxes (left, top, right, bottom) in `img`'s pixels, found by the HOG detector at a bounded size."""
    side = max(img.size)
    scale = min(DETECT_MAX_SIDE, max(DETECT_MIN_SIDE, side)) / side
    look = img.convert("L")
    if scale != 1:
        look = look.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR, reducing_gap=2.0
        )
    boxes, scores, _ = _detector().run(np.asarray(look), 1, SCORE_THRESHOLD)
    out = []
    for box, _score in sorted(zip(boxes, scores), key=lambda bs: (bs[0].top(), bs[0].left())):
        left, top = max(0, round(box.left() / scale)), max(0, round(box.top() / scale))
        right, bottom = min(img.width, round(box.right() / scale)), min(img.height, round(box.bottom() / scale))
        if right > left and bottom > top:
            out.append((left, top, right, bottom))
    return out


def blur(img: Image.Image, boxes: list[tuple[int, int, int, int]]) -> Image.Image:
    """A copy of `img` with each face box (grown by MARGIN) reduced to BLUR_CELLS cells across and smoothed."""
    out = img.copy()
    for left, top, right, bottom in boxes:
        grow_x, grow_y = round((right - left) * MARGIN), round((bottom - top) * MARGIN)
        box = (
            max(0, left - grow_x),
            max(0, top - grow_y),
            min(img.width, right + grow_x),
            min(img.height, bottom + grow_y),
        )
        region = out.crop(box)
        cells = (max(1, min(BLUR_CELLS, region.width)), max(1, min(BLUR_CELLS, region.height)))
        coarse = region.resize(cells, Image.BOX).resize(region.size, Image.BILINEAR)
        out.paste(coarse.filter(ImageFilter.GaussianBlur(max(region.size) / 8)), box)
    return out


def is_yes(value: object) -> bool:
    """A consent-like flag (model release, historical): only an explicit yes counts, so a missing or unclear value
    never exempts a work's faces from blurring."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in TRUE_WORDS if value is not None else False


def exemption(record: dict) -> str | None:
    """Why a record's faces may stay unblurred ("model_release" or "historical"), or None (see the module doc)."""
    if is_yes(record.get("model_release")) or is_yes(record.get("consent")):
        return "model_release"
    if is_yes(record.get("historical")):
        from atelier.licenses import normalise

        spdx, _, status = normalise(record.get("license_raw"), record.get("license_url"))
        if status == "ok" and spdx in PUBLIC_DOMAIN:
            return "historical"
    return None
