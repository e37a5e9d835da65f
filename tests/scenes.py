"""A second built-in collection, unlike the demo: small seeded scenes with free-text captions, mixed sizes, formats
and licences, for development, tests and calibrating the promotion gate.

Each picture is a simple scene drawn with Pillow: a sky (day, overcast, dusk or night), a ground (meadow, snow,
sand or sea) and one subject made large enough to survive the 32 px training resolution (a house, trees, a sailboat,
mountains, flowers, fish under water, a hot-air balloon, a lighthouse, or a big sun or moon), in varied colours,
positions and sizes. The caption is a natural sentence written from what was drawn, with synonyms and varying word
order and length ("At dusk, a red sailboat drifts on a calm sea.", "Night scene: yellow moon above dark hills");
every colour word names the colour of something in the picture. Captions never follow the demo's
"a {palette} {style} composition" convention.

It writes an ordinary imagefolder (images + metadata.jsonl) with what real catalogues hold: sizes from 40 to 400 px
in many aspect ratios; PNG, JPEG at several qualities, WebP (lossy and lossless), GIF, greyscale, palette and RGBA
images and JPEGs stored sideways with an EXIF orientation; licences spelled as SPDX ids, "CC BY 4.0", Creative
Commons URLs, "Public Domain Mark 1.0"..., most of which may train, plus non-commercial, all-rights-reserved,
missing and unknown ones that must be excluded; creators with accents, and a few rows without one.

Beside the metadata it writes two files the stages never read (the tests do):
- `layout.json`: per file, what was drawn and where: for each colour the caption names, probe points (fractions of
  the upright image's width and height) where that colour was drawn; the licence category and expected decision.
- `expected.json`: like the demo's, the file names that must not train and the reason the license stage gives.

Everything comes from the seed: the same (n, seed) writes the same bytes. `python -m tests.scenes PATH --n N`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from atelier.io import atomic_dir

# ---------------------------------------------------------------------------------------------------- colours

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 40),
    "orange": (240, 135, 25),
    "yellow": (245, 210, 45),
    "green": (55, 150, 55),
    "blue": (40, 85, 205),
    "purple": (135, 60, 175),
    "pink": (240, 135, 185),
    "white": (244, 244, 240),
    "black": (25, 25, 28),
    "brown": (125, 78, 38),
    "grey": (135, 135, 135),
}
COLOUR_WORDS = {**{c: c for c in COLOURS}, "gray": "grey"}  # the words a caption may use, and the colour each names


def nearest_colour(rgb) -> str:
    """The named colour nearest to an RGB triple (what a person would call it, for these saturated colours)."""
    r, g, b = (int(v) for v in rgb[:3])
    return min(COLOURS, key=lambda c: (COLOURS[c][0] - r) ** 2 + (COLOURS[c][1] - g) ** 2 + (COLOURS[c][2] - b) ** 2)


def colour_words(caption: str) -> list[str]:
    """The colours a caption names, in order ("gray" counts as grey; "greyscale" is not a colour word)."""
    return [COLOUR_WORDS[w] for w in re.findall(r"[a-z]+", caption.lower()) if w in COLOUR_WORDS]


def _shade(rng: random.Random, name: str, scale: float = 1.0, amount: int = 10) -> tuple[int, int, int]:
    """A jittered shade of a named colour that is still nearest to that name."""
    base = tuple(min(255, int(c * scale)) for c in COLOURS[name])
    for _ in range(8):
        rgb = tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in base)
        if nearest_colour(rgb) == name:
            return rgb  # type: ignore[return-value]
    return COLOURS[name]


def _jitter(rng: random.Random, rgb, amount: int = 8) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------- drawing

SKIES = {  # gradient stops from the top of the square (0) to the horizon (1)
    "day": [(0.0, (78, 142, 224)), (1.0, (184, 220, 250))],
    "overcast": [(0.0, (146, 154, 166)), (1.0, (206, 208, 212))],
    "dusk": [(0.0, (58, 46, 116)), (0.55, (214, 96, 102)), (1.0, (250, 174, 92))],
    "night": [(0.0, (8, 10, 32)), (1.0, (34, 44, 88))],
    "water": [(0.0, (46, 128, 200)), (1.0, (14, 48, 112))],  # under water: light from above
}
GROUNDS = {  # ground colour per time of day
    "meadow": {"day": (78, 158, 62), "overcast": (70, 134, 62), "dusk": (62, 118, 58), "night": (22, 48, 34)},
    "snow": {"day": (238, 242, 248), "overcast": (222, 226, 232), "dusk": (236, 212, 214), "night": (120, 130, 158)},
    "sand": {"day": (228, 198, 134), "overcast": (204, 184, 140), "dusk": (220, 160, 110), "night": (96, 86, 72)},
    "sea": {"day": (36, 100, 182), "overcast": (70, 100, 130), "dusk": (92, 72, 130), "night": (14, 28, 66)},
}


def _gradient(stops, t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    xs = [s[0] for s in stops]
    return np.stack([np.interp(t, xs, [s[1][c] for s in stops]) for c in range(3)], axis=-1)


class _Canvas:
    """A W x H picture drawn k times larger (then reduced, for smooth edges). Scene coordinates are fractions of the
    central square, so what clean's centre crop keeps holds the whole scene; the rest extends sky and ground."""

    def __init__(self, width: int, height: int, k: int):
        self.W, self.H, self.k = width, height, k
        self.S = min(width, height)
        self.ox, self.oy = (width - self.S) / 2, (height - self.S) / 2
        self.img: Image.Image | None = None
        self.d: ImageDraw.ImageDraw | None = None

    def p(self, x: float, y: float) -> tuple[float, float]:
        return ((self.ox + x * self.S) * self.k, (self.oy + y * self.S) * self.k)

    def unit_y(self, rows: np.ndarray) -> np.ndarray:
        return (rows / self.k - self.oy) / self.S

    def frac(self, x: float, y: float) -> list[float]:
        """A scene point as fractions of the whole picture's width and height (what layout.json records)."""
        return [round((self.ox + x * self.S) / self.W, 4), round((self.oy + y * self.S) / self.H, 4)]

    def background(self, sky: str, horizon: float, ground_rgb, rng: random.Random, stars: bool) -> None:
        h, w = self.H * self.k, self.W * self.k
        uy = self.unit_y(np.arange(h) + 0.5)
        rows = _gradient(SKIES[sky], uy / max(horizon, 1e-6))
        rows[uy >= horizon] = ground_rgb
        arr = np.repeat(rows[:, None, :], w, axis=1)
        self.img = Image.fromarray(arr.round().astype(np.uint8), "RGB")
        self.d = ImageDraw.Draw(self.img)
        if stars:
            for _ in range(int(30 * self.W * self.H / self.S**2)):
                x, y = rng.uniform(0, w), rng.uniform(0, (self.oy + horizon * self.S) * self.k * 0.95)
                r = self.k * rng.choice([0.5, 0.5, 0.8])
                self.d.ellipse([x - r, y - r, x + r, y + r], fill=(236, 236, 210))

    def poly(self, pts, fill) -> None:
        self.d.polygon([self.p(x, y) for x, y in pts], fill=fill)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill) -> None:
        (x0, y0), (x1, y1) = self.p(cx - rx, cy - ry), self.p(cx + rx, cy + ry)
        self.d.ellipse([x0, y0, x1, y1], fill=fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill) -> None:
        (a, b), (c, d) = self.p(x0, y0), self.p(x1, y1)
        self.d.rectangle([a, b, c, d], fill=fill)

    def line(self, pts, fill, width: float) -> None:
        self.d.line([self.p(x, y) for x, y in pts], fill=fill, width=max(1, round(width * self.S * self.k)))

    def band(self, x0: float, x1: float, y0: float, y1: float, fill) -> None:
        """A rectangle that runs past the central square to the picture's edges (ground features, water)."""
        left = -self.ox / self.S - 0.01 if x0 <= 0 else x0
        right = 1 + self.ox / self.S + 0.01 if x1 >= 1 else x1
        bottom = 1 + self.oy / self.S + 0.01 if y1 >= 1 else y1
        self.rect(left, y0, right, bottom, fill)

    def finish(self, rng: np.random.Generator, noise: float) -> Image.Image:
        img = self.img.resize((self.W, self.H), Image.LANCZOS, reducing_gap=2.0) if self.k > 1 else self.img
        if noise:
            arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, noise, (self.H, self.W, 1))
            img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")
        return img


@dataclass
class Part:
    """Something drawn in one named colour, with the scene points where that colour shows."""

    colour: str
    probes: list[tuple[float, float]]


@dataclass
class Scene:
    subject: str
    time: str  # day, overcast, dusk, night; "water" under the sea
    ground: str  # meadow, snow, sand, sea, water
    facts: dict = field(default_factory=dict)  # what the caption may say: counts, kinds, flags
    parts: dict[str, Part] = field(default_factory=dict)  # colour-bearing parts the caption may name


SUBJECTS = ["house", "trees", "boat", "mountains", "flowers", "fish", "balloon", "lighthouse", "sky"]
TIMES = ["day", "day", "overcast", "dusk", "night"]


def _sun_or_moon(
    c: _Canvas, sc: Scene, rng: random.Random, side: float, big: bool = False, horizon: float = 0.6
) -> None:
    """A sun by day or dusk, a moon at night, in the upper part of the sky on the side `side` (0 left, 1 right)."""
    r = rng.uniform(0.13, 0.19) if big else rng.uniform(0.075, 0.11)
    cx = rng.uniform(0.5, 0.7) if big else (rng.uniform(0.14, 0.3) if side < 0.5 else rng.uniform(0.7, 0.86))
    if big:
        cx = cx if rng.random() < 0.5 else 1 - cx
    top = r + 0.05
    cy = rng.uniform(top, max(top, horizon - r - 0.06)) if not big else rng.uniform(top, max(top, horizon - r * 1.2))
    if sc.time == "night":
        colour = rng.choice(["white", "white", "yellow"])
        rgb = _shade(rng, colour, amount=6)
        c.ellipse(cx, cy, r, r, rgb)
        crescent = rng.random() < 0.4
        if crescent:  # a bite in the sky's colour
            dx = r * rng.uniform(0.45, 0.6) * rng.choice([-1, 1])
            sky = tuple(int(v) for v in _gradient(SKIES["night"], np.array([(cy - r * 0.2) / horizon]))[0])
            c.ellipse(cx + dx, cy - r * 0.2, r, r, sky)
            probe = (cx - math.copysign(r * 0.7, dx), cy + r * 0.15)
        else:
            probe = (cx, cy)
        sc.parts["moon"] = Part(colour, [probe])
        sc.facts["moon"] = "crescent" if crescent else "full"
    else:
        colour = rng.choice(["orange", "red", "orange"] if sc.time == "dusk" else ["yellow", "yellow", "orange"])
        rgb = _shade(rng, colour, amount=6)
        if sc.time != "overcast" and rng.random() < 0.5:  # a halo
            halo = tuple(int(a * 0.55 + b * 0.45) for a, b in zip(rgb, (250, 240, 200)))
            c.ellipse(cx, cy, r * 1.25, r * 1.25, halo)
        c.ellipse(cx, cy, r, r, rgb)
        sc.parts["sun"] = Part(colour, [(cx, cy)])
        sc.facts["sun"] = True


def _clouds(c: _Canvas, rng: random.Random, horizon: float, grey: bool) -> None:
    for _ in range(rng.randint(1, 3)):
        cx, cy, s = rng.uniform(0.05, 0.95), rng.uniform(0.08, horizon * 0.55), rng.uniform(0.06, 0.1)
        rgb = _jitter(rng, (190, 192, 198) if grey else (250, 250, 252), 5)
        for dx, dy, f in ((-1.1, 0.2, 0.75), (0.0, 0.0, 1.0), (1.1, 0.25, 0.7), (0.5, 0.35, 0.8), (-0.5, 0.3, 0.8)):
            c.ellipse(cx + dx * s, cy + dy * s, s * f * 1.2, s * f, rgb)


def _birds(c: _Canvas, rng: random.Random, horizon: float) -> int:
    n = rng.randint(2, 4)
    for _ in range(n):
        x, y, s = rng.uniform(0.1, 0.9), rng.uniform(0.08, horizon * 0.5), rng.uniform(0.025, 0.04)
        c.line([(x - s, y - s * 0.5), (x, y), (x + s, y - s * 0.5)], (30, 30, 35), 0.012)
    return n


def _pine(c: _Canvas, cx: float, base: float, h: float, rgb, rng: random.Random) -> tuple[float, float]:
    c.rect(cx - 0.05 * h, base - 0.2 * h, cx + 0.05 * h, base, _shade(rng, "brown"))
    for i in range(3):
        yb = base - 0.15 * h - i * 0.22 * h
        half = 0.3 * h * (1 - 0.22 * i)
        c.poly([(cx - half, yb), (cx + half, yb), (cx, yb - 0.42 * h)], rgb)
    return (cx, base - 0.3 * h)


def _round_tree(c: _Canvas, cx: float, base: float, h: float, rgb, rng: random.Random) -> tuple[float, float]:
    c.rect(cx - 0.05 * h, base - 0.5 * h, cx + 0.05 * h, base, _shade(rng, "brown"))
    r = 0.3 * h
    cy = base - 0.66 * h
    for dx, dy in ((-0.55, 0.25), (0.55, 0.25), (0.0, -0.45)):
        c.ellipse(cx + dx * r, cy + dy * r, r * 0.7, r * 0.7, rgb)
    c.ellipse(cx, cy, r, r, rgb)
    return (cx, cy)


def _house(c: _Canvas, sc: Scene, rng: random.Random, cx: float, base: float, w: float) -> None:
    wall = rng.choice(["red", "white", "yellow", "blue", "pink", "orange", "brown"])
    dark = ["black"] if sc.time != "night" else []  # a black roof would vanish into the night sky
    roof = rng.choice([x for x in ["red", "brown", "grey", "blue", "green"] + dark if x != wall])
    h = w * rng.uniform(0.6, 0.82)
    x0, x1, y0 = cx - w / 2, cx + w / 2, base - h
    roof_h = w * rng.uniform(0.38, 0.55)
    if rng.random() < 0.5:  # a chimney, drawn before the roof so the roof covers its foot
        c.rect(x0 + 0.66 * w, y0 - roof_h * 0.75, x0 + 0.78 * w, y0 - roof_h * 0.2, _shade(rng, "brown", 0.8))
    c.rect(x0, y0, x1, base, _shade(rng, wall))
    c.poly(
        [(x0 - 0.07 * w, y0 + 0.005), (x1 + 0.07 * w, y0 + 0.005), (cx + rng.uniform(-0.05, 0.05) * w, y0 - roof_h)],
        _shade(rng, roof),
    )
    glass = (252, 222, 110) if sc.time in ("night", "dusk") else (176, 212, 236)
    for wx in (0.12, 0.68):
        c.rect(x0 + wx * w, y0 + 0.2 * h, x0 + (wx + 0.2) * w, y0 + 0.45 * h, glass)
    door = (70, 44, 28) if wall not in ("brown",) else (40, 30, 26)
    c.rect(x0 + 0.42 * w, base - 0.55 * h, x0 + 0.58 * w, base, door)
    sc.parts["wall"] = Part(wall, [(x0 + 0.22 * w, y0 + 0.76 * h), (x0 + 0.78 * w, y0 + 0.76 * h), (cx, y0 + 0.1 * h)])
    sc.parts["roof"] = Part(roof, [(cx, y0 - roof_h * 0.25), (cx - 0.25 * w, y0 - roof_h * 0.1)])
    sc.facts.update(wall=wall, roof=roof)


def draw_scene(subject: str, time: str, c: _Canvas, rng: random.Random) -> Scene:
    """Draw one scene of `subject` at `time` on the canvas; return what was drawn."""
    if subject == "fish":
        time = "water"
    ground = {
        "house": ["meadow", "meadow", "snow", "sand"],
        "trees": ["meadow", "meadow", "snow"],
        "boat": ["sea"],
        "lighthouse": ["sea"],
        "mountains": ["meadow", "snow", "sand", "sea"],
        "flowers": ["meadow"],
        "balloon": ["meadow", "meadow", "snow", "sand"],
        "sky": ["meadow", "sea", "sand"],
        "fish": ["water"],
    }[subject]
    sc = Scene(subject, time, rng.choice(ground))
    horizon = {
        "flowers": rng.uniform(0.45, 0.6),
        "balloon": rng.uniform(0.72, 0.84),
        "sky": rng.uniform(0.62, 0.76),
        "mountains": rng.uniform(0.7, 0.8),
        "fish": 1.0,
    }.get(subject, rng.uniform(0.55, 0.7))
    if subject == "fish":
        c.background("water", 0.999, (0, 0, 0), rng, stars=False)
        sand = _jitter(rng, (214, 190, 130), 6)
        floor = rng.uniform(0.84, 0.9)
        c.d.polygon(
            [
                c.p(-2, floor),
                c.p(0.3, floor - 0.02),
                c.p(0.7, floor + 0.01),
                c.p(3, floor - 0.015),
                c.p(3, 3),
                c.p(-2, 3),
            ],
            fill=sand,
        )
        ground_rgb = sand
    else:
        ground_rgb = _jitter(rng, GROUNDS[sc.ground][time], 5)
        c.background(time, horizon, ground_rgb, rng, stars=time == "night")
        if time in ("day", "overcast") and rng.random() < (0.9 if time == "overcast" else 0.45):
            _clouds(c, rng, horizon, grey=time == "overcast")
            sc.facts["clouds"] = True
    sc.facts["horizon"] = horizon
    main_x = rng.uniform(0.32, 0.68)
    other_side = 0.0 if main_x > 0.5 else 1.0
    if subject != "fish" and subject != "sky" and rng.random() < 0.55:
        _sun_or_moon(c, sc, rng, other_side, horizon=horizon)
    if subject != "fish" and time in ("day", "dusk") and rng.random() < 0.25:
        sc.facts["birds"] = _birds(c, rng, horizon)
    if sc.ground != "sea" and subject != "fish" and rng.random() < 0.5:  # rolling hills at the horizon
        hill = tuple(int(v * rng.uniform(0.85, 0.95)) for v in ground_rgb)
        for _ in range(rng.randint(1, 2)):
            hx, hw = rng.uniform(0.0, 1.0), rng.uniform(0.35, 0.7)
            c.ellipse(hx, horizon + 0.02, hw, rng.uniform(0.06, 0.12), hill)
        sc.facts["hills"] = True
    if sc.ground == "sea":
        for _ in range(rng.randint(3, 7)):  # a few wave crests
            wx, wy = rng.uniform(0.0, 1.0), rng.uniform(horizon + 0.05, 0.97)
            c.line(
                [(wx - 0.05, wy), (wx + 0.05, wy)], _jitter(rng, tuple(min(255, v + 45) for v in ground_rgb), 4), 0.01
            )

    if subject == "house":
        w = rng.uniform(0.38, 0.55)
        base = rng.uniform(horizon + 0.12, min(0.93, horizon + 0.26))
        has_tree = rng.random() < 0.45
        if has_tree:
            main_x = rng.uniform(0.55, 0.66) if main_x > 0.5 else rng.uniform(0.34, 0.45)
        _house(c, sc, rng, main_x, base, w)
        if has_tree:
            tx = main_x - w / 2 - 0.14 if main_x > 0.5 else main_x + w / 2 + 0.14
            th = rng.uniform(0.34, 0.45)
            tb = min(0.97, base + rng.uniform(-0.02, 0.04))
            if rng.random() < 0.5:
                colour = "green"
                sc.parts["tree"] = Part(colour, [_pine(c, tx, tb, th, _shade(rng, "green", 0.78), rng)])
                sc.facts["tree"] = "pine"
            else:
                colour = rng.choice(["green", "green", "orange", "yellow"])
                sc.parts["tree"] = Part(colour, [_round_tree(c, tx, tb, th, _shade(rng, colour), rng)])
                sc.facts["tree"] = "round"
    elif subject == "trees":
        n = rng.choice([1, 1, 2, 2, 3])
        kind = rng.choice(["pine", "round"])
        colour = "green" if kind == "pine" else rng.choice(["green", "green", "orange", "yellow", "red"])
        slots = {
            1: [main_x],
            2: [rng.uniform(0.25, 0.36), rng.uniform(0.64, 0.75)],
            3: [rng.uniform(0.17, 0.24), rng.uniform(0.46, 0.54), rng.uniform(0.76, 0.83)],
        }[n]
        probes = []
        rgb = _shade(rng, colour, 0.78 if kind == "pine" else 1.0)
        for x in slots:
            h = rng.uniform(0.55, 0.8) if n == 1 else rng.uniform(0.45, 0.65)
            if kind == "round" and n == 3:
                h = min(h, 0.5)
            base = rng.uniform(horizon + 0.1, min(0.96, horizon + 0.25))
            h = min(h, base - 0.05)
            probes.append(_pine(c, x, base, h, rgb, rng) if kind == "pine" else _round_tree(c, x, base, h, rgb, rng))
        sc.parts["tree"] = Part(colour, probes)
        sc.facts.update(count=n, kind=kind)
    elif subject == "boat":
        hull = rng.choice(["red", "white", "brown", "blue", "yellow", "black", "orange"])
        sail = rng.choice([x for x in ["white", "white", "red", "yellow", "orange"] if x != hull])
        w = rng.uniform(0.42, 0.6)
        y = rng.uniform(horizon + 0.12, min(0.86, horizon + 0.22))
        cx = main_x
        c.poly(
            [(cx - w / 2, y), (cx + w / 2, y), (cx + 0.36 * w, y + 0.2 * w), (cx - 0.36 * w, y + 0.2 * w)],
            _shade(rng, hull),
        )
        mast_h = min(0.85 * w, y - 0.08)
        c.line([(cx, y), (cx, y - mast_h)], (60, 44, 30), 0.012)
        sail_rgb = _shade(rng, sail)
        c.poly([(cx + 0.015, y - 0.04 * w), (cx + 0.015, y - mast_h), (cx + 0.42 * w, y - 0.04 * w)], sail_rgb)
        if rng.random() < 0.6:  # a jib
            c.poly([(cx - 0.015, y - 0.06 * w), (cx - 0.015, y - mast_h * 0.8), (cx - 0.3 * w, y - 0.06 * w)], sail_rgb)
        sc.parts["hull"] = Part(hull, [(cx, y + 0.07 * w), (cx - 0.25 * w, y + 0.05 * w)])
        sc.parts["sail"] = Part(sail, [(cx + 0.015 + 0.13 * w, y - 0.04 * w - mast_h * 0.3)])
        sc.facts.update(hull=hull, sail=sail)
    elif subject == "mountains":
        n = rng.choice([1, 2, 2, 3])
        colour = rng.choice(["grey", "purple", "brown", "blue", "grey"])
        snow = rng.random() < 0.6
        probes = []
        xs = {
            1: [main_x],
            2: [rng.uniform(0.25, 0.38), rng.uniform(0.62, 0.75)],
            3: [rng.uniform(0.15, 0.25), rng.uniform(0.45, 0.55), rng.uniform(0.75, 0.85)],
        }[n]
        order = sorted(range(n), key=lambda _: rng.random())
        for rank, i in enumerate(order):
            x = xs[i]
            height = rng.uniform(0.42, 0.62) if n == 1 else rng.uniform(0.3, 0.52)
            half = height * rng.uniform(0.8, 1.15)
            base = horizon + 0.01
            scale = 1.0 - 0.12 * (n - 1 - rank)  # farther peaks drawn first and a little lighter
            rgb = _shade(rng, colour, scale if colour != "grey" else 1.0)
            apex = (x + rng.uniform(-0.04, 0.04), base - height)
            c.poly([(x - half, base), apex, (x + half, base)], rgb)
            if snow:
                f = rng.uniform(0.25, 0.33)
                ly, lx, rx = apex[1] + f * height, apex[0] - f * half, apex[0] + f * half
                c.poly(
                    [
                        apex,
                        (rx, ly),
                        (rx - 0.3 * (rx - lx), ly - 0.03),
                        (apex[0], ly + 0.02),
                        (lx + 0.3 * (rx - lx), ly - 0.03),
                        (lx, ly),
                    ],
                    (244, 246, 250),
                )
            probes.append((apex[0], base - 0.3 * height))
        sc.parts["mountain"] = Part(colour, probes)
        sc.facts.update(count=n, snow=snow)
    elif subject == "flowers":
        n = rng.choice([1, 1, 2, 3])
        petal = rng.choice(["red", "yellow", "pink", "purple", "white", "orange", "blue"])
        centre = rng.choice([x for x in ["yellow", "brown", "black", "orange"] if x != petal])
        xs = {
            1: [main_x],
            2: [rng.uniform(0.27, 0.36), rng.uniform(0.64, 0.73)],
            3: [0.2 + rng.uniform(-0.02, 0.02), 0.5 + rng.uniform(-0.03, 0.03), 0.8 + rng.uniform(-0.02, 0.02)],
        }[n]
        rmax = {1: 0.22, 2: 0.16, 3: 0.12}[n]
        petal_probes, centre_probes = [], []
        petal_rgb, centre_rgb = _shade(rng, petal), _shade(rng, centre)
        stem_rgb = _shade(rng, "green", 0.8)
        for x in xs:
            r = rng.uniform(rmax * 0.8, rmax)
            hy = rng.uniform(r + 0.05, 0.45)
            c.line([(x, hy), (x + rng.uniform(-0.03, 0.03), 1.05)], stem_rgb, 0.025)
            side = rng.choice([-1, 1])
            c.ellipse(x + side * 0.06, min(0.93, hy + 0.4), 0.06, 0.025, stem_rgb)
            k = rng.choice([5, 6, 8])
            a0 = rng.uniform(0, 2 * math.pi)
            for j in range(k):
                a = a0 + 2 * math.pi * j / k
                c.ellipse(x + 0.55 * r * math.cos(a), hy + 0.55 * r * math.sin(a), 0.5 * r, 0.5 * r, petal_rgb)
            c.ellipse(x, hy, 0.42 * r, 0.42 * r, centre_rgb)
            petal_probes.append((x + 0.78 * r * math.cos(a0), hy + 0.78 * r * math.sin(a0)))
            centre_probes.append((x, hy))
        sc.parts["petal"] = Part(petal, petal_probes)
        sc.parts["centre"] = Part(centre, centre_probes)
        sc.facts.update(count=n, petal=petal, centre=centre)
    elif subject == "fish":
        for _ in range(rng.randint(2, 4)):  # seaweed
            x = rng.uniform(0.03, 0.97)
            pts = [(x + 0.025 * math.sin(i * 1.3 + x * 9), 1.02 - i * 0.06) for i in range(rng.randint(3, 6))]
            c.line(pts, _shade(rng, "green", 0.75), 0.022)
        for _ in range(rng.randint(3, 6)):  # bubbles
            bx, by, br = rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.5), rng.uniform(0.012, 0.025)
            c.ellipse(bx, by, br, br, (196, 226, 246))
        n = rng.choice([1, 1, 2])
        colour = rng.choice(["orange", "yellow", "red", "purple", "pink", "orange"])
        striped = colour in ("orange", "red", "purple") and rng.random() < 0.45
        rgb = _shade(rng, colour)
        spots = (
            [(main_x, rng.uniform(0.38, 0.62))]
            if n == 1
            else [(rng.uniform(0.3, 0.4), rng.uniform(0.25, 0.36)), (rng.uniform(0.6, 0.7), rng.uniform(0.6, 0.7))]
        )
        body_probes, stripe_probes = [], []
        for cx, cy in spots:
            L = rng.uniform(0.5, 0.62) if n == 1 else rng.uniform(0.36, 0.44)
            face = rng.choice([-1, 1])
            bx = cx + face * 0.08 * L
            tail = bx - face * 0.55 * L
            c.poly([(bx - face * 0.3 * L, cy), (tail, cy - 0.2 * L), (tail, cy + 0.2 * L)], rgb)
            c.poly(
                [
                    (bx - face * 0.1 * L, cy - 0.18 * L),
                    (bx + face * 0.08 * L, cy - 0.3 * L),
                    (bx + face * 0.15 * L, cy - 0.15 * L),
                ],
                rgb,
            )  # dorsal fin
            c.ellipse(bx, cy, 0.38 * L, 0.2 * L, rgb)
            if striped:
                sx = bx + face * 0.1 * L
                c.ellipse(sx, cy, 0.045 * L, 0.185 * L, (246, 246, 242))
                stripe_probes.append((sx, cy))
            ex = bx + face * 0.24 * L
            c.ellipse(ex, cy - 0.05 * L, 0.05 * L, 0.05 * L, (250, 250, 250))
            c.ellipse(ex + face * 0.01 * L, cy - 0.05 * L, 0.025 * L, 0.025 * L, (15, 15, 15))
            body_probes.append((bx - face * 0.12 * L, cy + 0.02 * L))
        sc.parts["body"] = Part(colour, body_probes)
        if striped:
            sc.parts["stripe"] = Part("white", stripe_probes)
        sc.facts.update(count=n, striped=striped)
    elif subject == "balloon":
        colour = rng.choice(["red", "yellow", "orange", "blue", "purple", "pink", "green"])
        stripe = rng.choice([None, None] + [x for x in ["white", "yellow", "red", "blue"] if x != colour])
        r = rng.uniform(0.17, 0.22)
        cx, cy = main_x, rng.uniform(r * 1.1 + 0.04, horizon - r * 1.9 - 0.02)
        main_rgb = _shade(rng, colour)
        c.ellipse(cx, cy, r, r * 1.08, main_rgb)
        c.poly(
            [
                (cx - 0.86 * r, cy + 0.45 * r),
                (cx + 0.86 * r, cy + 0.45 * r),
                (cx + 0.28 * r, cy + 1.35 * r),
                (cx - 0.28 * r, cy + 1.35 * r),
            ],
            main_rgb,
        )
        if stripe:
            srgb = _shade(rng, stripe)
            c.ellipse(cx, cy, 0.32 * r, r * 1.07, srgb)
            c.poly(
                [
                    (cx - 0.3 * r, cy + 0.6 * r),
                    (cx + 0.3 * r, cy + 0.6 * r),
                    (cx + 0.1 * r, cy + 1.34 * r),
                    (cx - 0.1 * r, cy + 1.34 * r),
                ],
                srgb,
            )
            sc.parts["stripe"] = Part(stripe, [(cx, cy - 0.2 * r)])
        for dx in (-0.26, 0.26):
            c.line([(cx + dx * r, cy + 1.33 * r), (cx + dx * 0.8 * r, cy + 1.55 * r)], (50, 40, 30), 0.006)
        c.rect(cx - 0.2 * r, cy + 1.55 * r, cx + 0.2 * r, cy + 1.82 * r, _shade(rng, "brown"))
        sc.parts["envelope"] = Part(colour, [(cx - 0.66 * r, cy - 0.05 * r), (cx + 0.66 * r, cy - 0.05 * r)])
        sc.facts.update(stripe=stripe)
    elif subject == "lighthouse":
        pair = rng.choice(
            [("red", "white"), ("red", "white"), ("black", "white"), ("blue", "white"), ("white", None), ("red", None)]
        )
        cx = main_x
        base = rng.uniform(horizon + 0.1, min(0.92, horizon + 0.2))
        rock = _jitter(rng, (96, 88, 80), 8)
        c.poly(
            [
                (cx - 0.3, base + 0.12),
                (cx - 0.2, base - 0.02),
                (cx + 0.05, base - 0.04),
                (cx + 0.22, base + 0.01),
                (cx + 0.32, base + 0.12),
            ],
            rock,
        )
        c.band(0, 1, base + 0.11, 1.0, GROUNDS["sea"][time])
        h = min(rng.uniform(0.5, 0.62), base - 0.14)
        wb = rng.uniform(0.15, 0.19)
        top = base - h
        bands = rng.choice([3, 4, 5]) if pair[1] else 1
        rgbs = [_shade(rng, pair[0])] + ([_shade(rng, pair[1])] if pair[1] else [])
        probes: dict[str, list] = {pair[0]: []}
        if pair[1]:
            probes[pair[1]] = []
        for i in range(bands):
            y1, y0 = base - i * h / bands, base - (i + 1) * h / bands
            w1, w0 = wb * (1 - 0.35 * (base - y1) / h), wb * (1 - 0.35 * (base - y0) / h)  # tapering
            colour_i = i % len(rgbs)
            c.poly([(cx - w1 / 2, y1), (cx + w1 / 2, y1), (cx + w0 / 2, y0), (cx - w0 / 2, y0)], rgbs[colour_i])
            probes[pair[colour_i]].append((cx, (y0 + y1) / 2))
        lamp = (252, 226, 120) if time in ("night", "dusk") else (206, 226, 236)
        c.rect(cx - wb * 0.28, top - 0.07, cx + wb * 0.28, top, lamp)
        c.rect(cx - wb * 0.42, top - 0.012, cx + wb * 0.42, top + 0.008, (36, 36, 40))
        c.poly([(cx - wb * 0.36, top - 0.07), (cx + wb * 0.36, top - 0.07), (cx, top - 0.12)], (36, 36, 40))
        if time == "night":  # a beam of light
            side = rng.choice([-1, 1])
            c.poly([(cx, top - 0.04), (cx + side * 0.6, top - 0.16), (cx + side * 0.6, top + 0.06)], (92, 96, 104))
            sc.facts["beam"] = True
        sc.parts["band1"] = Part(pair[0], probes[pair[0]])
        if pair[1]:
            sc.parts["band2"] = Part(pair[1], probes[pair[1]])
        sc.facts.update(colours=[p for p in pair if p])
    elif subject == "sky":
        _sun_or_moon(c, sc, rng, 0.5, big=True, horizon=horizon)
        if sc.ground != "sea":  # hills in front
            hill = tuple(int(v * 0.8) for v in ground_rgb)
            c.ellipse(rng.uniform(0.0, 1.0), horizon + 0.03, rng.uniform(0.4, 0.7), rng.uniform(0.06, 0.1), hill)
            sc.facts["hills"] = True
    else:
        raise ValueError(f"unknown scene subject {subject!r}; choose one of {SUBJECTS}")
    if "sun" in sc.parts or "moon" in sc.parts:
        sc.facts.setdefault("celestial", "moon" if "moon" in sc.parts else "sun")
    # the ground's own colour, where the caption may name it
    gname = nearest_colour(ground_rgb)
    if subject not in ("fish",) and (sc.ground, gname) in (("meadow", "green"), ("sea", "blue"), ("snow", "white")):
        gy = horizon + (1 - horizon) * 0.6
        sc.parts["ground"] = Part(gname, [(0.06, gy), (0.94, gy), (0.06, 0.97), (0.94, 0.97), (0.5, 0.985)])
    return sc


# ---------------------------------------------------------------------------------------------------- captions

NUMBERS = {1: "a", 2: "two", 3: "three"}
TIME_WORDS = {
    "day": (
        ["on a sunny day", "in daylight", "under a clear sky", "at midday", "in the morning", "in summer"],
        ["On a sunny day", "In broad daylight", "At midday", "One summer morning"],
        ["Daytime", "Summer day", "Morning", "Midday"],
    ),
    "overcast": (
        ["under a cloudy sky", "on an overcast day", "under heavy clouds", "on a dull day"],
        ["On a cloudy day", "Under heavy clouds", "On an overcast afternoon"],
        ["Overcast", "Cloudy day", "Dull afternoon"],
    ),
    "dusk": (
        ["at dusk", "at sunset", "at twilight", "in the evening light", "as the sun goes down"],
        ["At dusk", "At sunset", "In the evening", "As evening falls"],
        ["Sunset", "Dusk", "Evening", "Twilight"],
    ),
    "night": (
        ["at night", "under a starry sky", "in the dark", "beneath the stars", "late at night"],
        ["At night", "Late at night", "Under the stars", "In the middle of the night"],
        ["Night scene", "Night", "Nocturne", "Starry night"],
    ),
    "water": (
        ["underwater", "under the sea", "in deep water", "beneath the waves"],
        ["Under the sea", "Deep under water", "Below the waves"],
        ["Underwater", "Under the sea", "Ocean life"],
    ),
}


def _an(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _a(phrase: str) -> str:
    return f"{_an(phrase)} {phrase}"


def _count(n: int, phrase_sing: str, phrase_plural: str) -> str:
    return _a(phrase_sing) if n == 1 else f"{NUMBERS[n]} {phrase_plural}"


def _grey(rng: random.Random, name: str) -> str:
    return "gray" if name == "grey" and rng.random() < 0.4 else name


Option = tuple[str, list[str]]  # text, the parts whose colour it names


def _subject_options(sc: Scene, rng: random.Random) -> tuple[list[Option], bool, list[str]]:
    """(ways to name the subject, plural, verbs in the right number)."""
    f, P = sc.facts, sc.parts
    col = lambda key: _grey(rng, P[key].colour)  # noqa: E731
    if sc.subject == "house":
        noun = rng.choice(["house", "cottage", "cabin", "farmhouse", "hut", "home"])
        wall, roof = col("wall"), col("roof")
        opts = [
            (_a(f"{wall} {noun}"), ["wall"]),
            (_a(f"{wall} {noun} with {_a(roof)} roof"), ["wall", "roof"]),
            (_a(f"{noun} with {_a(roof)} roof"), ["roof"]),
            (_a(f"{roof}-roofed {wall} {noun}"), ["roof", "wall"]),
            (_a(f"small {wall} {noun}"), ["wall"]),
            (_a(noun), []),
            (_a(f"lonely {noun}"), []),
        ]
        if "tree" in f:
            tree = "pine" if f["tree"] == "pine" else rng.choice(["tree", "round tree", "leafy tree"])
            extra = [
                (f", next to {_a(col('tree') + ' ' + tree)}", ["tree"]),
                (f" beside {_a(tree)}", []),
                (" with a tree beside it", []),
                (f" and {_a(col('tree') + ' ' + tree)}", ["tree"]),
            ]
            opts = [(t + e, k + ke) for (t, k) in opts[:3] + opts[5:6] for (e, ke) in [rng.choice(extra)]]
            opts.append((f"{_a(col('tree') + ' ' + tree)} beside {_a(col('wall') + ' ' + noun)}", ["tree", "wall"]))
            opts.append((f"{_a(tree)} next to {_a(noun)}", []))
        return opts, False, ["stands", "sits"]
    if sc.subject == "trees":
        n, kind = f["count"], f["kind"]
        if kind == "pine":
            sing, plur = rng.choice(
                [("pine tree", "pine trees"), ("pine", "pines"), ("fir tree", "fir trees"), ("spruce", "spruces")]
            )
        else:
            sing, plur = rng.choice([("tree", "trees"), ("round tree", "round trees"), ("oak", "oaks")])
        c = col("tree")
        autumn = c in ("orange", "yellow", "red")
        opts = [
            (_count(n, f"{c} {sing}", f"{c} {plur}"), ["tree"]),
            (_count(n, f"tall {sing}", f"tall {plur}"), []),
            (_count(n, sing, plur), []),
        ]
        if autumn:
            opts += [
                (_count(n, f"{c} autumn tree", f"{c} autumn trees"), ["tree"]),
                (_count(n, f"{sing} with {c} leaves", f"{plur} with {c} leaves"), ["tree"]),
                (_count(n, "autumn tree", "autumn trees"), []),
            ]
        if n == 1:
            opts.append((f"a lone {c} {sing}", ["tree"]))
        if n == 2:
            opts.append((f"a pair of {c} {plur}", ["tree"]))
        return opts, n > 1, (["stands", "grows"] if n == 1 else ["stand", "grow"])
    if sc.subject == "boat":
        noun = rng.choice(["sailboat", "sailing boat", "boat", "yacht", "dinghy"])
        return (
            [
                (_a(f"{col('hull')} {noun}"), ["hull"]),
                (_a(f"{noun} with {_a(col('sail'))} sail"), ["sail"]),
                (_a(f"{col('hull')} {noun} with {_a(col('sail'))} sail"), ["hull", "sail"]),
                (_a(f"{col('sail')}-sailed {noun}"), ["sail"]),
                (_a(noun), []),
                (_a(f"small {noun}"), []),
            ],
            False,
            ["drifts", "sails", "floats"],
        )
    if sc.subject == "mountains":
        n = f["count"]
        sing, plur = rng.choice([("mountain", "mountains"), ("peak", "peaks"), ("mountain peak", "mountain peaks")])
        c = col("mountain")
        opts = [(_count(n, f"{c} {sing}", f"{c} {plur}"), ["mountain"]), (_count(n, sing, plur), [])]
        if n > 1:
            opts += [(f"{c} {plur}", ["mountain"]), (f"a range of {c} {plur}", ["mountain"])]
        if f["snow"]:
            opts += [
                (_count(n, f"snow-capped {sing}", f"snow-capped {plur}"), []),
                (_count(n, f"snowy {c} {sing}", f"snowy {c} {plur}"), ["mountain"]),
            ]
        return opts, n > 1, (["rises", "towers"] if n == 1 else ["rise", "tower"])
    if sc.subject == "flowers":
        n = f["count"]
        sing, plur = rng.choice([("flower", "flowers"), ("blossom", "blossoms"), ("bloom", "blooms")])
        if f["petal"] == "white" and f["centre"] == "yellow" and rng.random() < 0.6:
            sing, plur = "daisy", "daisies"
        p, q = col("petal"), col("centre")
        opts = [
            (_count(n, f"{p} {sing}", f"{p} {plur}"), ["petal"]),
            (_count(n, sing, plur), []),
            (_count(n, f"{sing} with {p} petals", f"{plur} with {p} petals"), ["petal"]),
            (_count(n, f"{p} {sing} with {_a(q)} centre", f"{p} {plur} with {q} centres"), ["petal", "centre"]),
            (_count(n, f"big {sing}", f"big {plur}"), []),
        ]
        if sing == "bloom":
            return opts, n > 1, (["grows", "sways"] if n == 1 else ["grow", "sway"])
        return opts, n > 1, (["blooms", "grows"] if n == 1 else ["bloom", "grow"])
    if sc.subject == "fish":
        n = f["count"]
        noun = rng.choice(["fish", "fish", "tropical fish"])
        c = col("body")
        opts = [
            (_count(n, f"{c} {noun}", f"{c} {noun}"), ["body"]),
            (_count(n, noun, noun), []),
            (_count(n, f"little {c} {noun}", f"little {c} {noun}"), ["body"]),
            (_count(n, f"little {noun}", f"little {noun}"), []),
        ]
        if f["striped"]:
            striped = f"{c} {noun} with white stripes"
            opts += [
                (_count(n, striped, striped), ["body", "stripe"]),
                (_count(n, f"striped {noun}", f"striped {noun}"), []),
                (_count(n, f"{c} and white {noun}", f"{c} and white {noun}"), ["body", "stripe"]),
            ]
        return opts, n > 1, (["swims", "glides"] if n == 1 else ["swim", "glide"])
    if sc.subject == "balloon":
        noun = rng.choice(["hot-air balloon", "hot air balloon", "balloon"])
        opts = [
            (_a(f"{col('envelope')} {noun}"), ["envelope"]),
            (_a(noun), []),
            (_a(f"big {col('envelope')} {noun}"), ["envelope"]),
        ]
        if f["stripe"]:
            opts += [
                (_a(f"{col('envelope')} and {col('stripe')} {noun}"), ["envelope", "stripe"]),
                (_a(f"striped {noun}"), []),
                (_a(f"{col('envelope')} {noun} with {_a(col('stripe'))} stripe"), ["envelope", "stripe"]),
            ]
        return opts, False, ["floats", "drifts", "rises"]
    if sc.subject == "lighthouse":
        a = col("band1")
        opts = [(_a("lighthouse"), []), (_a("tall lighthouse"), [])]
        if "band2" in sc.parts:
            b = col("band2")
            opts += [
                (_a(f"{a} and {b} lighthouse"), ["band1", "band2"]),
                (_a("striped lighthouse"), []),
                (_a(f"{a}-and-{b} striped lighthouse"), ["band1", "band2"]),
            ]
        else:
            opts += [(_a(f"{a} lighthouse"), ["band1"]), (_a(f"tall {a} lighthouse"), ["band1"])]
        return opts, False, ["stands", "watches"]
    if sc.subject == "sky":
        if "moon" in sc.parts:
            kind = sc.facts["moon"]
            m = col("moon")
            noun = rng.choice(["moon", f"{kind} moon"])
            return (
                [
                    (_a(f"{m} {noun}"), ["moon"]),
                    (f"the {kind} moon", []),
                    (_a(f"big {m} {noun}"), ["moon"]),
                    (f"the {noun}", []),
                ],
                False,
                ["glows", "hangs", "shines"],
            )
        s = col("sun")
        verbs = ["sets", "sinks", "glows"] if sc.time == "dusk" else ["shines", "blazes", "hangs"]
        return (
            [
                (_a(f"{s} sun"), ["sun"]),
                (_a(f"big {s} sun"), ["sun"]),
                ("the sun", []),
                (f"the {'setting' if sc.time == 'dusk' else 'bright'} sun", []),
            ],
            False,
            verbs,
        )
    raise ValueError(sc.subject)


def _setting_options(sc: Scene, rng: random.Random) -> list[Option]:
    g = sc.ground
    green = [("on a green meadow", ["ground"]), ("in a green field", ["ground"])] if "ground" in sc.parts else []
    if sc.subject == "fish":
        return [
            (t, [])
            for t in [
                "among the seaweed",
                "near the sandy sea floor",
                "past the seaweed",
                "above the sand",
                "among the bubbles",
            ]
        ]
    if sc.subject == "boat":
        blue = [("on a blue sea", ["ground"])] if "ground" in sc.parts else []
        return [("on a calm sea", []), ("on the water", []), ("on the open sea", []), ("at sea", [])] + blue
    if sc.subject == "lighthouse":
        return [("by the sea", []), ("on a rocky shore", []), ("above the waves", []), ("on the coast", [])]
    if sc.subject == "balloon":
        if g == "meadow":
            return [
                ("over the fields", []),
                ("over the countryside", []),
                ("above green fields", ["ground"]) if "ground" in sc.parts else ("over rolling hills", []),
                ("high above the fields", []),
            ]
        return (
            [("over the snow", []), ("over a snowy valley", []), ("high above the snow", [])]
            if g == "snow"
            else [("over the desert", []), ("above the dunes", []), ("high above the sand", [])]
        )
    if sc.subject == "sky":
        if g == "sea":
            return [("over the sea", []), ("above the water", []), ("over the ocean", [])]
        dark = sc.time == "night"
        return [
            ("above dark hills" if dark else "over the hills", []),
            ("over the hills", []),
            ("over the desert", []) if g == "sand" else ("above the fields", []),
            ("in the sky", []),
        ]
    if sc.subject == "mountains":
        if g == "sea":
            return [("beyond the sea", []), ("across the water", []), ("by the sea", [])]
        return {
            "meadow": [
                ("above a valley", []),
                ("behind the fields", []),
                ("above a green valley", ["ground"]) if "ground" in sc.parts else ("in the distance", []),
            ],
            "snow": [("above a snowy plain", []), ("in winter", []), ("over the snowfields", [])],
            "sand": [("in the desert", []), ("above the dunes", []), ("beyond the sand", [])],
        }[g]
    if sc.subject == "flowers":
        return [("in a meadow", []), ("in the grass", []), ("in a garden", []), ("against the sky", [])]
    return {
        "meadow": [("in a meadow", []), ("in a grassy field", []), ("on a hill", []), ("in the countryside", [])]
        + green,
        "snow": [("in the snow", []), ("on a snowy field", []), ("in a winter landscape", []), ("in deep snow", [])],
        "sand": [("in the desert", []), ("on sandy ground", []), ("among the dunes", [])],
    }[g]


Extra = tuple[str, str, list[str]]  # a phrase, the same as a sentence, the parts whose colour it names


def _extra_options(sc: Scene, rng: random.Random) -> list[Extra]:
    """What else is in the picture (sun, moon, clouds, birds, a beam), as a phrase and as a sentence."""
    out: list[Extra] = []
    if "sun" in sc.parts and sc.subject != "sky":
        s = _grey(rng, sc.parts["sun"].colour)
        glow = "glows low" if sc.time == "dusk" else "shines"
        out += [
            (f"with {_a(s)} sun", f"{_a(s).capitalize()} sun {glow} in the sky.", ["sun"]),
            (f"under {_a(s)} sun", f"Above it, {_a(s)} sun {glow}.", ["sun"]),
            ("with the sun in the sky", "The sun is out." if sc.time != "dusk" else "The sun is going down.", []),
        ]
    if "moon" in sc.parts and sc.subject != "sky":
        m, kind = sc.parts["moon"].colour, sc.facts["moon"]
        out += [
            (f"under {_a(m)} moon", f"{_a(m).capitalize()} moon hangs above.", ["moon"]),
            (f"beneath {_a(m + ' ' + kind)} moon", f"Above it is {_a(m + ' ' + kind)} moon.", ["moon"]),
            (f"under {_a(kind)} moon", f"The moon is {'full' if kind == 'full' else 'a thin crescent'}.", []),
        ]
    if sc.facts.get("clouds"):
        out += [
            ("under fluffy clouds", "Fluffy clouds drift by.", []),
            ("with clouds drifting by", "A few clouds drift past.", []),
        ]
    if sc.facts.get("birds"):
        out += [("with birds overhead", "Birds fly overhead.", []), ("as birds fly past", "A few birds fly past.", [])]
    if sc.facts.get("beam"):
        out += [
            ("with its beam shining", "Its beam cuts through the dark.", []),
            ("sweeping its light across the dark", "Its light sweeps across the night.", []),
        ]
    return out


def write_caption(sc: Scene, rng: random.Random, mono: bool) -> tuple[str, list[str]]:
    """A free-text caption of the scene and the parts whose colours it names (none when `mono`)."""

    def pick(options: list, colour: float) -> tuple:
        """One option, naming a colour with probability `colour` when it can (never when `mono`)."""
        usable = [o for o in options if all(k in sc.parts and sc.parts[k].probes for k in o[-1])]
        named, plain = [o for o in usable if o[-1]], [o for o in usable if not o[-1]]
        if mono or not named:
            return rng.choice(plain)
        return rng.choice(named if rng.random() < colour or not plain else plain)

    subjects, plural, verbs = _subject_options(sc, rng)
    s_text, s_parts = pick(subjects, 0.8)
    g_text, g_parts = pick(_setting_options(sc, rng), 0.3)
    post, intro, label = (rng.choice(x) for x in TIME_WORDS[sc.time])
    if sc.time == "night" and sc.facts.get("moon") and rng.random() < 0.3:
        post = "on a moonlit night"
    extras = _extra_options(sc, rng)
    x_text, x_sentence, x_parts = pick(extras, 0.6) if extras else ("", "", [])
    verb = rng.choice(verbs)
    bare = re.sub(r"^(a|an) ", "", s_text)
    form = rng.choice(["sgt", "sgt", "sxg", "svgt", "intro", "label", "sg", "s", "s", "s", "st", "prefix", "sentence"])
    if form == "sxg" and not x_text:
        form = "sgt"
    if form == "sentence" and not x_text:
        form = "svgt"
    used = s_parts + g_parts
    if form == "sgt":
        text = f"{s_text} {g_text} {post}"
    elif form == "sxg":
        text = f"{s_text} {g_text} {x_text}" if rng.random() < 0.5 else f"{s_text} {x_text} {post}"
        used = s_parts + (g_parts if g_text in text else []) + x_parts
    elif form == "svgt":
        text = f"{s_text} {verb} {g_text} {post}"
    elif form == "intro":
        text = f"{intro}, {s_text} {verb} {g_text}."
    elif form == "label":
        text = f"{label}: {bare if rng.random() < 0.6 else s_text} {g_text}"
    elif form == "sg":
        text = f"{s_text} {g_text}"
    elif form == "s":
        text, used = s_text, s_parts
        if rng.random() < 0.4:  # the plainest name of the subject, as terse catalogues write it
            n = sc.facts.get("count", 1)
            text, used = (
                {
                    "house": "a house",
                    "trees": "a tree" if n == 1 else "trees",
                    "boat": "a sailboat",
                    "mountains": "a mountain" if n == 1 else "mountains",
                    "flowers": "a flower" if n == 1 else "flowers",
                    "fish": "a fish" if n == 1 else "fish",
                    "balloon": "a hot-air balloon",
                    "lighthouse": "a lighthouse",
                    "sky": "the moon" if "moon" in sc.parts else "the sun",
                }[sc.subject],
                [],
            )
    elif form == "st":
        text, used = f"{s_text}, {post}", s_parts
    elif form == "prefix":
        prefix = rng.choice(
            ["a painting of", "an illustration of", "a drawing of", "a picture of", "a photo of", "a simple sketch of"]
            + ["a close-up of"] * 3 * (sc.subject == "flowers")
        )
        text = f"{prefix} {s_text} {g_text}"
    else:  # two sentences
        text = f"{s_text} {g_text} {post}. {x_sentence}"
        used = s_parts + g_parts + x_parts
    if mono:
        text = rng.choice(
            [
                "a greyscale photo of {}",
                "{}, in greyscale",
                "monochrome: {}",
                "{} (monochrome)",
                "an old greyscale picture of {}",
            ]
        ).format(text.rstrip("."))
        used = []
    if form != "s" or rng.random() < 0.3:  # short captions repeat, as they do in real catalogues
        if rng.random() < 0.45:
            text = text[0].upper() + text[1:]
        if rng.random() < 0.2 and not text.endswith("."):
            text += "."
    text = re.sub(r"\s+", " ", text).replace(" ,", ",").strip()
    return text, used


def title_for(sc: Scene, rng: random.Random, index: int) -> str:
    """A catalogue title: plain, numbered, untitled or in another language."""
    name = {
        "house": ["Cottage", "The House", "Farmhouse", "Maison", "Das Haus", "Casa"],
        "trees": ["Trees", "Pines", "The Grove", "Árboles", "Bäume", "Forêt"],
        "boat": ["Sailboat", "Regatta", "Bateau", "Barco", "Segelboot"],
        "mountains": ["Mountains", "The Range", "Montagnes", "Gebirge", "Montañas"],
        "flowers": ["Flowers", "Bloom", "Fleurs", "Blumen", "Flores"],
        "fish": ["Fish", "Under the Sea", "Poissons", "Unterwasser", "Peces"],
        "balloon": ["Balloon", "Ascent", "Montgolfière", "Ballonfahrt", "Globo"],
        "lighthouse": ["Lighthouse", "The Light", "Phare", "Leuchtturm", "Faro"],
        "sky": ["Sky", "Celestial", "Le ciel", "Himmel", "Cielo"],
    }[sc.subject]
    when = {
        "day": ["", "Morning", "Noon", "Summer"],
        "overcast": ["Grey Day", "Clouds"],
        "dusk": ["Dusk", "Sunset"],
        "night": ["Night", "Nocturne"],
        "water": ["", "Deep"],
    }[sc.time]
    form = rng.random()
    noun, at = rng.choice(name), rng.choice(when)
    if form < 0.12:
        return "Untitled"
    if form < 0.3:
        return f"{noun} No. {index}"
    if form < 0.6 and at:
        return f"{noun} — {at}" if rng.random() < 0.5 else f"{at} {noun}"
    if form < 0.7:
        return f"Study #{rng.randint(1, 99)}"
    return noun


# ---------------------------------------------------------------------------------------------------- catalogue

CREATORS = [
    "Zoë Müller",
    "Amélie Laurent",
    "Łukasz Wróbel",
    "Björn Ångström",
    "Nguyễn Thị Lan",
    "Saoirse Ní Bhriain",
    "Ömer Çelik",
    "François Dubois",
    "Chidi Okeke",
    "Mei Chen",
    "Ana Ruiz",
    "Priya Natarajan",
    "Tomás Ó Súilleabháin",
    "Kaito Nakamura",
    "Ingrid Solberg",
    "Rafael Ibáñez",
    "Agnieszka Dąbrowska",
    "Leilani Kahale",
]

# licence category -> (share of the collection, spellings as (license, license_url), expected decision)
LICENSES: dict[str, tuple[float, list[tuple[str | None, str]], str]] = {
    "CC0-1.0": (
        0.22,
        [
            ("CC0-1.0", ""),
            ("CC0", "https://creativecommons.org/publicdomain/zero/1.0/"),
            ("cc0-1.0", ""),
            ("CC0 1.0", ""),
            ("", "https://creativecommons.org/publicdomain/zero/1.0/"),
            ("https://creativecommons.org/publicdomain/zero/1.0/deed.en", ""),
        ],
        "train",
    ),
    "CC-BY-4.0": (
        0.28,
        [
            ("CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/"),
            ("CC BY 4.0", ""),
            ("cc-by-4.0", ""),
            ("CC BY 4.0 International", "https://creativecommons.org/licenses/by/4.0/"),
            ("Creative Commons BY 4.0", ""),
            ("https://creativecommons.org/licenses/by/4.0/", ""),
            ("", "https://creativecommons.org/licenses/by/4.0/deed.en"),
        ],
        "train",
    ),
    "CC-BY-SA-4.0": (
        0.13,
        [
            ("CC-BY-SA-4.0", ""),
            ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
            ("cc-by-sa-4.0", ""),
            ("https://creativecommons.org/licenses/by-sa/4.0/legalcode", ""),
        ],
        "train",
    ),
    "PDM": (
        0.12,
        [
            ("Public Domain Mark 1.0", "https://creativecommons.org/publicdomain/mark/1.0/"),
            ("PDM", ""),
            ("public domain", ""),
            ("", "https://creativecommons.org/publicdomain/mark/1.0/"),
        ],
        "train",
    ),
    "CC-BY-NC-4.0": (
        0.08,
        [
            ("CC-BY-NC-4.0", ""),
            ("CC BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/"),
            ("https://creativecommons.org/licenses/by-nc/4.0/", ""),
        ],
        "license_forbids:non_commercial",
    ),
    "All rights reserved": (
        0.06,
        [("All rights reserved", ""), ("All Rights Reserved", ""), ("ARR", "")],
        "license_forbids:training",
    ),
    "missing": (0.06, [("", ""), (None, ""), ("<absent>", "")], "license_missing"),
    "unknown": (
        0.05,
        [("free for personal use", ""), ("see website", ""), ("CC-BY-7.5", ""), ("royalty free", "")],
        "license_unknown",
    ),
}

FORMATS: dict[str, float] = {  # how each file is stored; each appears at least once when n allows
    "png": 0.28,
    "jpeg": 0.27,
    "webp": 0.1,
    "webp-lossless": 0.04,
    "gif": 0.03,
    "png-palette": 0.04,
    "png-grey": 0.04,
    "jpeg-grey": 0.03,
    "png-rgba": 0.05,
    "webp-rgba": 0.03,
    "jpeg-exif": 0.09,
}
ASPECTS = [1.0, 1.0, 1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 5 / 4, 2.0, 1.85]


def _quota(rng: random.Random, shares: dict[str, float], n: int) -> list[str]:
    """n labels in the proportions `shares` (each at least once when n allows), in a seeded random order."""
    keys = list(shares)
    base = {k: max(1 if n >= len(keys) else 0, int(shares[k] * n)) for k in keys}
    total = sum(shares.values())
    while sum(base.values()) < n:  # largest remainder
        k = max(keys, key=lambda k: shares[k] / total * n - base[k])
        base[k] += 1
    while sum(base.values()) > n:
        k = max(keys, key=lambda k: base[k] - shares[k] / total * n)
        base[k] -= 1
    out = [k for k in keys for _ in range(base[k])]
    rng.shuffle(out)
    return out


def _encode(img: Image.Image, fmt: str, rng: random.Random) -> tuple[bytes, str, str, dict]:
    """(bytes, extension, mode description, details) of `img` stored as `fmt`."""
    buf = io.BytesIO()
    info: dict = {}
    if fmt == "png":
        img.save(buf, format="PNG", optimize=rng.random() < 0.3)
        return buf.getvalue(), "png", "RGB", info
    if fmt in ("jpeg", "jpeg-exif", "jpeg-grey"):
        quality = rng.choice([55, 65, 75, 85, 90, 95])
        info["quality"] = quality
        mode = "RGB"
        kw = {"quality": quality, "subsampling": rng.choice([0, 2, 2])}
        if fmt == "jpeg-grey":
            img, mode = img.convert("L"), "L"
        if fmt == "jpeg-exif":
            orientation = rng.choice([3, 6, 8])
            stored = img.transpose(
                {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[
                    orientation
                ]
            )
            exif = Image.Exif()
            exif[0x0112] = orientation
            exif[0x010F] = rng.choice(["AtelierCam", "Fujifilm", "Canon", "NIKON CORPORATION"])
            stored.save(buf, format="JPEG", exif=exif.tobytes(), **kw)
            info["orientation"] = orientation
            mode = f"RGB, EXIF orientation {orientation}"
        else:
            img.save(buf, format="JPEG", **kw)
        return buf.getvalue(), rng.choice(["jpg", "jpg", "jpeg", "JPG"]), mode, info
    if fmt == "webp":
        quality = rng.choice([70, 80, 90])
        info["quality"] = quality
        img.save(buf, format="WEBP", quality=quality, method=4)
        return buf.getvalue(), "webp", "RGB", info
    if fmt == "webp-lossless":
        img.save(buf, format="WEBP", lossless=True, method=4)
        return buf.getvalue(), "webp", "RGB", info
    if fmt in ("gif", "png-palette"):
        pal = img.quantize(colors=rng.choice([64, 96, 128]), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        pal.save(buf, format="GIF" if fmt == "gif" else "PNG")
        return buf.getvalue(), "gif" if fmt == "gif" else "png", "P", info
    if fmt == "png-grey":
        img.convert("L").save(buf, format="PNG")
        return buf.getvalue(), "png", "L", info
    if fmt in ("png-rgba", "webp-rgba"):  # a rounded frame, transparent in the corners (flattened onto white)
        mask = Image.new("L", img.size, 0)
        radius = max(3, min(img.size) // 8)
        ImageDraw.Draw(mask).rounded_rectangle([0, 0, img.width - 1, img.height - 1], radius=radius, fill=255)
        rgba = img.convert("RGBA")
        rgba.putalpha(mask)
        if fmt == "png-rgba":
            rgba.save(buf, format="PNG")
        else:
            rgba.save(buf, format="WEBP", lossless=True, method=4)
        return buf.getvalue(), "png" if fmt == "png-rgba" else "webp", "RGBA", info
    raise ValueError(f"unknown format {fmt!r}")


def upright(data: bytes) -> Image.Image:
    """The image as a viewer (and clean) shows it: EXIF orientation applied, transparency flattened onto white."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB")


def probe_colour(img: Image.Image, point) -> str:
    """The named colour of the picture at a layout probe (fractions of width and height)."""
    x = min(img.width - 1, int(point[0] * img.width))
    y = min(img.height - 1, int(point[1] * img.height))
    return nearest_colour(img.getpixel((x, y)))


def _steady(img: Image.Image, point, name: str) -> bool:
    """Whether the colour around a probe (its 3 x 3 neighbourhood) is `name` everywhere: survives re-encoding."""
    x, y = int(point[0] * img.width), int(point[1] * img.height)
    if not (1 <= x < img.width - 1 and 1 <= y < img.height - 1):
        return False
    return all(nearest_colour(img.getpixel((x + dx, y + dy))) == name for dx in (-1, 0, 1) for dy in (-1, 0, 1))


@dataclass
class SceneFile:
    file_name: str
    data: bytes
    meta: dict
    layout: dict


def _phash(img: Image.Image) -> int:
    import imagehash  # clean's perceptual hash (imported here: only the writer needs it)

    return int(str(imagehash.phash(img)), 16)


def build_scenes(n: int = 400, seed: int = 0) -> list[SceneFile]:
    """The collection's files, metadata and layout. Pure and deterministic for (n, seed)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = random.Random(f"scenes:{seed}:{n}")
    licences = _quota(rng, {k: v[0] for k, v in LICENSES.items()}, n)
    formats = _quota(rng, FORMATS, n)
    subjects = _quota(rng, dict.fromkeys(SUBJECTS, 1.0), n)
    no_creator = set(
        rng.sample(
            [i for i, lic in enumerate(licences) if lic in ("CC0-1.0", "PDM", "unknown")],
            k=min(max(1, n // 30), sum(lic in ("CC0-1.0", "PDM", "unknown") for lic in licences)),
        )
    )
    hashes: list[int] = []
    files: list[SceneFile] = []
    for i in range(n):
        fmt = formats[i]
        for attempt in range(40):
            r = random.Random(f"scene:{seed}:{i}:{attempt}")
            long_side = round(math.exp(r.uniform(math.log(48), math.log(400))))
            aspect = r.choice(ASPECTS)
            w, h = (
                (long_side, max(40, round(long_side / aspect)))
                if aspect >= 1
                else (max(40, round(long_side * aspect)), long_side)
            )
            canvas = _Canvas(w, h, k=4 if max(w, h) <= 100 else (3 if max(w, h) <= 200 else 2))
            time = r.choice(TIMES)
            sc = draw_scene(subjects[i], time, canvas, r)
            picture = canvas.finish(np.random.default_rng(r.getrandbits(32)), noise=r.choice([0.0, 1.5, 2.5, 3.5]))
            data, ext, mode, info = _encode(picture, fmt, r)
            shown = upright(data)
            mono = mode == "L"
            for key in list(sc.parts):  # keep the probes whose colour is clear in the drawing and in the file
                part = sc.parts[key]
                part.probes = [
                    pt
                    for pt in part.probes
                    if _steady(picture, canvas.frac(*pt), part.colour)
                    and probe_colour(shown, canvas.frac(*pt)) == part.colour
                ]
            ph = _phash(shown)
            if all(bin(ph ^ other).count("1") > 10 for other in hashes):
                break  # not a near duplicate of an earlier scene (clean rejects those at hamming <= 4)
        hashes.append(ph)
        caption, used = write_caption(sc, r, mono)
        assert Counter(colour_words(caption)) == Counter(sc.parts[k].colour for k in used), (caption, used)
        lic = licences[i]
        spelling, url = r.choice(LICENSES[lic][1])
        prefix = r.choice(["scene_", "IMG_", "img-", "", "artwork-", "DSC"])
        name = f"{prefix}{i + 1:04d}.{ext}"
        if r.random() < 0.15:
            name = f"{sc.subject}/{name}"  # some in sub-folders, as exports often are
        meta: dict = {
            "file_name": name,
            "title": title_for(sc, r, i + 1),
            "caption": caption,
            "license_url": url,
            "source_url": r.choice(
                [
                    "https://collections.example.org/objects/{}",
                    "https://www.example.com/photos/{}",
                    "https://commons.example.net/wiki/File:{}",
                    "https://archive.example.edu/item/{}",
                ]
            ).format(f"{seed}-{i + 1:04d}"),
        }
        if spelling != "<absent>":
            meta["license"] = spelling
        if i in no_creator:
            if r.random() < 0.5:
                meta["creator"] = ""
        else:
            meta["creator"] = r.choice(CREATORS)
        layout = {
            "subject": sc.subject,
            "time": sc.time,
            "ground": sc.ground,
            "format": fmt,
            "mode": mode,
            "size": [w, h],
            **info,
            "license_category": lic,
            "expected": LICENSES[lic][2],
            "facts": {k: v for k, v in sc.facts.items() if k != "horizon"},
            "mentions": [
                {"part": k, "colour": sc.parts[k].colour, "probes": [canvas.frac(*pt) for pt in sc.parts[k].probes]}
                for k in used
            ],
        }
        files.append(SceneFile(name, data, meta, layout))
    return files


def write_scenes(folder: Path, n: int = 400, seed: int = 0) -> dict:
    """Write the collection to `folder` atomically (it replaces the folder whole); return counts."""
    files = build_scenes(n, seed)
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        for f in files:
            (tmp / f.file_name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / f.file_name).write_bytes(f.data)
        lines = [json.dumps(f.meta, ensure_ascii=False, sort_keys=True) for f in files]
        (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        layout = {f.file_name: f.layout for f in files}
        (tmp / "layout.json").write_text(
            json.dumps(layout, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        expected = {f.file_name: f.layout["expected"] for f in files if f.layout["expected"] != "train"}
        (tmp / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summarise(files)


def summarise(files: list[SceneFile]) -> dict:
    sizes = [f.layout["size"] for f in files]
    return {
        "images": len(files),
        "licenses": dict(Counter(f.layout["license_category"] for f in files).most_common()),
        "formats": dict(Counter(f.layout["format"] for f in files).most_common()),
        "subjects": dict(Counter(f.layout["subject"] for f in files).most_common()),
        "to_train": sum(f.layout["expected"] == "train" for f in files),
        "excluded": dict(Counter(f.layout["expected"] for f in files if f.layout["expected"] != "train")),
        "distinct_captions": len({f.meta["caption"] for f in files}),
        "without_creator": sum(not f.meta.get("creator") for f in files),
        "min_side": min(min(s) for s in sizes),
        "max_side": max(max(s) for s in sizes),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m tests.scenes", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="folder to write (replaced whole), e.g. data/sources/scenes")
    parser.add_argument("--n", type=int, default=400, help="number of images (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = parser.parse_args(argv)
    summary = write_scenes(args.path, n=args.n, seed=args.seed)
    json.dump(summary, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return summary


if __name__ == "__main__":
    main()
