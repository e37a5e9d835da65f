"""Colour agreement: a figure that needs no learned model. For a prompt that names colours ("a cyanotype of algae on
blue background"), does the picture's dominant colours include one it names? The same figure on the real images of
those captions says how often the words and the pictures agree at all on this collection, so the generated figure
is read beside it, never alone.

Colours are the eleven basic colour terms (Berlin and Kay) with a few common synonyms. A picture's dominant colours:
its pixels (downsampled to 32 x 32) are each given the nearest term's reference colour in CIELAB, and the terms
covering at least MIN_SHARE of the pixels, largest first, at most TOP of them, are dominant."""

from __future__ import annotations

import re

import numpy as np

REFERENCES = {  # sRGB reference colours of the basic terms
    "red": (200, 30, 35),
    "orange": (240, 130, 30),
    "yellow": (240, 215, 50),
    "green": (50, 150, 60),
    "blue": (40, 80, 200),
    "purple": (125, 50, 160),
    "pink": (240, 140, 185),
    "brown": (125, 80, 45),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "grey": (128, 128, 128),
}
SYNONYMS = {
    "gray": "grey",
    "violet": "purple",
    "crimson": "red",
    "scarlet": "red",
    "navy": "blue",
    "azure": "blue",
    "cyan": "blue",
    "turquoise": "blue",
    "golden": "yellow",
    "gold": "yellow",
    "magenta": "pink",
    "silver": "grey",
}
MIN_SHARE, TOP = 0.12, 3
_WORD = re.compile(r"[a-z]+")


def named_colours(prompt: str) -> set[str]:
    """The basic colour terms a prompt names (synonyms mapped), e.g. {"blue"} for "algae on blue background"."""
    words = _WORD.findall(prompt.lower())
    return {SYNONYMS.get(w, w) for w in words if w in REFERENCES or w in SYNONYMS}


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) to CIELAB (D65)."""
    c = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_NAMES = list(REFERENCES)
_REF_LAB = _lab(np.array([REFERENCES[n] for n in _NAMES], dtype=float) / 255)


def dominant_colours(image: np.ndarray) -> list[str]:
    """The dominant colour terms of an image (H x W x 3, floats in [0, 1] or uint8), largest share first."""
    a = np.asarray(image, dtype=float)
    if a.max() > 1.0:
        a = a / 255
    h, w = a.shape[:2]
    step_y, step_x = max(1, h // 32), max(1, w // 32)
    pixels = a[::step_y, ::step_x, :3].reshape(-1, 3)
    nearest = np.argmin(((_lab(pixels)[:, None, :] - _REF_LAB[None]) ** 2).sum(-1), axis=1)
    share = np.bincount(nearest, minlength=len(_NAMES)) / len(nearest)
    order = [i for i in np.argsort(-share) if share[i] >= MIN_SHARE][:TOP]
    return [_NAMES[i] for i in order]


def agreement(images: list[np.ndarray], prompts: list[str]) -> dict:
    """Over the images whose prompt names a colour: the fraction whose dominant colours include one it names.
    {"agreement": fraction or None when no prompt names a colour, "images": how many were judged}."""
    judged = agreed = 0
    for image, prompt in zip(images, prompts, strict=True):
        named = named_colours(prompt)
        if not named:
            continue
        judged += 1
        agreed += bool(named & set(dominant_colours(image)))
    return {"agreement": agreed / judged if judged else None, "images": judged}
