"""Watermark robustness (issue 20): how often a version 2 mark (provenance/watermark.py) reads back the exact id after
the transforms a copy meets on the way (re-encoding, resizing, cropping, colour edits), how often the ledger's
perceptual hash finds the artworks the mark missed, and that mark-free images never read as an id.

Images (all offline), each made 256 px as generate makes artworks (centre square, enlarged with nearest):
- `demo`: drawings of the built-in demo (params.yaml demo section, atelier/demo.py);
- `scenes`: the scenes collection (tests/scenes.py, seed 0);
- `photos`: real photographs bundled with scikit-image (skimage.data: astronaut, chelsea, coffee, rocket, ...), each
  as several 256 px windows and once whole (skipped with a note when scikit-image is missing).
Each image is marked with a distinct id (some above 2**32); its perceptual hash goes into a temporary ledger, as
generate records it. Recovery by perceptual hash follows audit.recover: a unique nearest hash within
PHASH_ONLY_BITS. The control set is every CONTROL_EVERY-th image unmarked, through the same transforms: any id read is
a false match (as is any wrong id read from a marked image).

Writes reports/bench/watermark_robustness.json and a 1:1 crop (reports/bench/watermark_crop.png: a photograph and a
demo drawing, each as original, marked, and their difference x8; bench/watermark_crop.png is a copy for the README).
Run: `python -m bench.watermark_robustness` (or `python -m bench watermark_robustness`); `--per-set N` limits each
set (default 80).
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image, ImageEnhance

from app.audit import PHASH_ONLY_BITS
from atelier import paths
from atelier.hashing import phash
from atelier.io import write_json
from provenance import watermark
from provenance.watermark import WatermarkError

SIDE = watermark.ARTWORK_SIDE
PHOTOS = [
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "cat",
    "camera",
    "moon",
    "coins",
    "brick",
    "grass",
    "gravel",
    "page",
    "clock",
]  # colour ones first
OUT = paths.REPORTS / "bench"
CONTROL_EVERY = 3  # an unmarked read searches every offset, shift and scale (about 0.1-0.25 s): a third of the images


def _encode(image: Image.Image, fmt: str, **options) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(image: Image.Image, fraction: float, centred: bool) -> Image.Image:
    """`fraction` of the width and of the height cut away: from the bottom-right corner, or half from each side."""
    w, h = image.size
    cw, ch = round(w * (1 - fraction)), round(h * (1 - fraction))
    left, top = ((w - cw) // 2, (h - ch) // 2) if centred else (0, 0)
    return image.crop((left, top, left + cw, top + ch))


def _resize(image: Image.Image, factor: float) -> Image.Image:
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)


TRANSFORMS = {
    "none (PNG)": lambda im: _encode(im, "PNG"),
    "JPEG q95": lambda im: _encode(im, "JPEG", quality=95),
    "JPEG q75": lambda im: _encode(im, "JPEG", quality=75),
    "JPEG q50": lambda im: _encode(im, "JPEG", quality=50),
    "WebP q80": lambda im: _encode(im, "WEBP", quality=80),
    "PNG->JPEG q85->PNG": lambda im: _encode(_encode(im, "JPEG", quality=85), "PNG"),
    "resize 0.5x": lambda im: _resize(im, 0.5),
    "resize 2x": lambda im: _resize(im, 2.0),
    "crop 10% corner": lambda im: _crop(im, 0.10, False),
    "crop 25% corner": lambda im: _crop(im, 0.25, False),
    "crop 10% centred": lambda im: _crop(im, 0.10, True),
    "crop 25% centred": lambda im: _crop(im, 0.25, True),
    "brightness +20%": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "brightness -20%": lambda im: ImageEnhance.Brightness(im).enhance(0.8),
    "contrast +20%": lambda im: ImageEnhance.Contrast(im).enhance(1.2),
    "contrast -20%": lambda im: ImageEnhance.Contrast(im).enhance(0.8),
}


def _artwork(image: Image.Image) -> Image.Image:
    """The centre square enlarged (or reduced) to 256 px: nearest when enlarging, as generate; Lanczos when reducing."""
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((SIDE, SIDE), Image.NEAREST if side <= SIDE else Image.LANCZOS)


def corpus(per_set: int) -> tuple[dict[str, list[Image.Image]], list[str]]:
    """The three sets of 256 px images (at most `per_set` each) and notes on what was missing."""
    from atelier.config import load_params
    from atelier.demo import build_demo
    from tests.scenes import build_scenes, upright

    notes, sets = [], {"demo": [], "scenes": [], "photos": []}
    d = load_params().demo
    for f in build_demo(d.seed, d.per_class, d.size)[0]:
        try:
            sets["demo"].append(_artwork(Image.open(io.BytesIO(f.data))))
        except Exception:  # the demo's planted broken files
            continue
    sets["demo"] = sets["demo"][:: max(1, len(sets["demo"]) // per_set)][:per_set]
    for f in build_scenes(per_set, 0):
        try:
            sets["scenes"].append(_artwork(upright(f.data)))
        except Exception:
            continue
    try:
        from skimage import data
    except ImportError:
        notes.append("scikit-image is not installed: no photographs (`.venv/bin/pip install scikit-image`)")
    else:
        for name in PHOTOS:
            try:
                photo = Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
            except Exception as e:  # not bundled with this version
                notes.append(f"skimage.data.{name}: {e}")
                continue
            sets["photos"].append(_artwork(photo))
            for k in range(4):  # 256 px windows at the photograph's own scale, as a crop of a big photograph
                x = (photo.width - SIDE) * k // 3 if photo.width > SIDE else 0
                y = (photo.height - SIDE) * ((k * 2 + 1) % 4) // 3 if photo.height > SIDE else 0
                if min(photo.size) >= SIDE:
                    sets["photos"].append(photo.crop((x, y, x + SIDE, y + SIDE)))
        sets["photos"] = sets["photos"][:per_set]
    return sets, notes


def _phash_finds(h: str, hashes: list[str], index: int) -> bool:
    """audit.recover's perceptual-hash rule: a unique nearest within PHASH_ONLY_BITS, and it is the right one."""
    distances = sorted((watermark.hamming(int(h, 16), int(other, 16)), k) for k, other in enumerate(hashes))
    best, k = distances[0]
    unique = len(distances) == 1 or distances[1][0] > best
    return best <= PHASH_ONLY_BITS and unique and k == index


def _psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    mse = (diff**2).mean()
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def _crop_figure(pairs: list[tuple[Image.Image, Image.Image]]) -> Image.Image:
    """One row per (original, marked) pair: a 128 px window of the original, of the marked image, and their difference
    (x8 around grey), at 1:1."""
    box = (64, 64, 192, 192)
    figure = Image.new("RGB", (3 * 128 + 16, len(pairs) * 136 - 8), "white")
    for row, (original, marked) in enumerate(pairs):
        a, b = np.asarray(original.crop(box), np.int16), np.asarray(marked.crop(box), np.int16)
        diff = np.clip(128 + 8 * (b - a), 0, 255).astype(np.uint8)
        for col, part in enumerate([a.astype(np.uint8), b.astype(np.uint8), diff]):
            figure.paste(Image.fromarray(part), (col * 136, row * 136))
    return figure


def main(per_set: int = 80) -> dict:
    began = time.perf_counter()
    sets, notes = corpus(per_set)
    images = [(name, im) for name, ims in sets.items() for im in ims]
    print(f"{len(images)} images: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()), flush=True)
    marked, ids, hashes, psnrs, refused, embed_s = [], [], [], [], [], []
    for k, (name, im) in enumerate(images):
        wm_id = 2**32 - 1 + (k * 7_919 if k % 2 else -k)  # ids on both sides of 2**32
        start = time.perf_counter()
        try:
            out = watermark.embed(im, wm_id)
        except WatermarkError:
            refused.append(name)
            out, wm_id = im, None
        embed_s.append(time.perf_counter() - start)
        marked.append(out)
        ids.append(wm_id)
        hashes.append(phash(out))
        if wm_id is not None:
            psnrs.append(_psnr(im, out))
    shown = [
        next(k for k, (name, _) in enumerate(images) if name == wanted and ids[k] is not None)
        for wanted in ("photos", "demo")
        if sets[wanted]
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    _crop_figure([(images[k][1], marked[k]) for k in shown]).save(OUT / "watermark_crop.png")

    rows, read_s, control_s, false_matches = {}, [], [], 0
    for tname, transform in TRANSFORMS.items():
        exact = wrong = by_phash = marked_n = control_ids = control_n = 0
        for k, im in enumerate(marked):
            copy = transform(im)
            start = time.perf_counter()
            reading = watermark.read(copy)
            read_s.append(time.perf_counter() - start)
            if ids[k] is not None:
                marked_n += 1
                if reading.id == ids[k]:
                    exact += 1
                else:
                    wrong += reading.id is not None
                    by_phash += _phash_finds(phash(copy), hashes, k)
            if k % CONTROL_EVERY == 0:
                unmarked = transform(images[k][1])  # the same image, never marked
                start = time.perf_counter()
                control_ids += watermark.read(unmarked).id is not None
                control_s.append(time.perf_counter() - start)
                control_n += 1
        false_matches += wrong + control_ids
        rows[tname] = {
            "marked": marked_n,
            "exact": exact,
            "exact_rate": round(exact / marked_n, 4),
            "wrong_id": wrong,
            "phash_recovers": by_phash,
            "with_phash_rate": round((exact + by_phash) / marked_n, 4),
            "control_images": control_n,
            "control_false_ids": control_ids,
        }
        print(
            f"{tname:20s} exact {exact}/{marked_n}  +phash {by_phash}  wrong {wrong}  control ids {control_ids}",
            flush=True,
        )
    result = {
        "images": {k: len(v) for k, v in sets.items()},
        "notes": notes,
        "cannot_carry": {"count": len(refused), "of": len(images), "by_set": {k: refused.count(k) for k in sets}},
        "psnr_db": {
            "mean": round(float(np.mean(psnrs)), 2),
            "p5": round(float(np.percentile(psnrs, 5)), 2),
            "min": round(float(np.min(psnrs)), 2),
        },
        "embed_ms_mean": round(1000 * float(np.mean(embed_s)), 1),
        "read_ms": {
            "marked_mean": round(1000 * float(np.mean(read_s)), 1),
            "marked_p95": round(1000 * float(np.percentile(read_s, 95)), 1),
            "unmarked_mean": round(1000 * float(np.mean(control_s)), 1),
            "unmarked_p95": round(1000 * float(np.percentile(control_s, 95)), 1),
        },
        "false_matches": false_matches,
        "transforms": rows,
        "crop_figure": paths.relative(OUT / "watermark_crop.png"),
        "seconds": round(time.perf_counter() - began, 1),
    }
    write_json(OUT / "watermark_robustness.json", result)
    print({k: v for k, v in result.items() if k != "transforms"})
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-set", type=int, default=80, help="images per set (default 80)")
    main(parser.parse_args().per_set)
