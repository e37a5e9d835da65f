"""Face detection calibration: how many faces atelier.faces.detect finds, and how many it finds where there are none.

Sets (all offline):
- `astronaut`: scikit-image's astronaut photograph (one frontal face, 512 px), also at 64, 128 and 256 px, rotated
  in the image plane, and small in a 1024 px picture (the face 1/6 to 1/16 of its side: a distant face);
- `lfw_faces` / `lfw_non_faces`: scikit-image's lfw_subset (100 face crops and 100 non-face crops from Labeled
  Faces in the Wild, 25x25 grey, shipped inside the package): tiny, tightly cropped faces, the hard case;
- `photos_without_faces`: scikit-image's other photographs (cat, coffee, rocket, camera...);
- `demo` and `scenes`: every drawing of the built-in demo (params.yaml demo section) and of the scenes collection
  (tests/scenes.py, 400): no face is drawn in them, so every detection is a false positive.

scikit-image is needed for the first four sets only; install it with `.venv/bin/pip install scikit-image` (it is not
a dependency of the pipeline). Run: `python -m bench.faces` (or `python -m bench faces`).
"""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image

from atelier import faces
from atelier.config import load_params

NON_FACE_PHOTOS = [
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "horse",
    "moon",
    "page",
    "text",
    "coins",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "logo",
    "clock",
    "cat",
    "motorcycle_left",
    "colorwheel",
]


def _rate(images: list[Image.Image], expect_faces: bool) -> dict:
    """Images with at least one detection, and the mean detection time."""
    found, seconds, boxes = 0, 0.0, 0
    for img in images:
        began = time.perf_counter()
        hits = faces.detect(img)
        seconds += time.perf_counter() - began
        found += bool(hits)
        boxes += len(hits)
    n = len(images)
    key = "detected" if expect_faces else "false_positives"
    return {
        "images": n,
        key: found,
        "rate": round(found / n, 3) if n else None,
        "boxes": boxes,
        "ms_per_image": round(1000 * seconds / n, 2) if n else None,
    }


def _distant(astro: Image.Image, k: int) -> Image.Image:
    """The astronaut pasted into a 1024 px grey photograph so that her face (87 px of 512) is 1/k of its side."""
    side = 1024
    scale = side / k / 87
    small = astro.resize((round(512 * scale), round(512 * scale)), Image.LANCZOS)
    canvas = Image.new("RGB", (side, side), (110, 120, 115))
    canvas.paste(small, ((side - small.width) // 2, (side - small.height) // 2))
    return canvas


def _skimage_sets() -> dict[str, list[Image.Image]]:
    try:
        from skimage import data
    except ImportError:
        print(
            "faces bench: scikit-image is not installed (.venv/bin/pip install scikit-image): astronaut, LFW and "
            "photographs skipped"
        )
        return {}
    astro = Image.fromarray(data.astronaut())
    lfw = (data.lfw_subset() * 255).round().astype(np.uint8)  # 200 x 25 x 25: 100 faces, then 100 non-faces
    photos = []
    for name in NON_FACE_PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            photos.append(Image.fromarray(np.asarray(loader())).convert("RGB"))
        except Exception:  # a set that would need a download (the fetcher raises offline)
            continue
    return {
        "astronaut_512": [astro],
        **{f"astronaut_{s}": [astro.resize((s, s), Image.LANCZOS)] for s in (256, 128, 64)},
        **{f"astronaut_distant_face_1/{k}": [_distant(astro, k)] for k in (6, 8, 10, 12, 16)},
        **{
            f"astronaut_rotated_{a}deg": [astro.rotate(a, Image.BICUBIC, fillcolor=(128, 128, 128))]
            for a in (15, 30, 45, 90)
        },
        "lfw_faces": [Image.fromarray(a).convert("RGB") for a in lfw[:100]],
        "lfw_faces_upscaled_100": [
            Image.fromarray(a).resize((100, 100), Image.BICUBIC).convert("RGB") for a in lfw[:100]
        ],
        "lfw_non_faces": [Image.fromarray(a).convert("RGB") for a in lfw[100:]],
        "photos_without_faces": photos,
    }


def _drawn_sets() -> dict[str, list[Image.Image]]:
    from atelier.demo import build_demo
    from tests.scenes import build_scenes, upright

    d = load_params().demo
    demo, _, _ = build_demo(d.seed, d.per_class, d.size)
    demo_images = []
    for f in demo:
        try:
            demo_images.append(Image.open(io.BytesIO(f.data)).convert("RGB"))
        except Exception:  # the demo's planted broken files
            continue
    scenes = []
    for f in build_scenes(400, 0):
        try:
            scenes.append(upright(f.data).convert("RGB"))
        except Exception:
            continue
    return {"demo": demo_images, "scenes": scenes}


def main() -> dict:
    """Detection rates per calibration set, printed and returned."""
    sets = {**_skimage_sets(), **_drawn_sets()}
    results = {}
    for name, images in sets.items():
        expect = name.startswith(("astronaut", "lfw_faces"))
        results[name] = _rate(images, expect)
        print(f"{name:24s} {results[name]}", flush=True)
    results["detector"] = {
        "name": faces.DETECTOR,
        "max_side": faces.DETECT_MAX_SIDE,
        "min_side": faces.DETECT_MIN_SIDE,
        "score_threshold": faces.SCORE_THRESHOLD,
    }
    return results


if __name__ == "__main__":
    main()
