"""The built-in demo source: a seeded, deterministic folder of small abstract artworks with planted defects.

It writes an ordinary imagefolder (images + metadata.jsonl), so the demo goes through the same ingest code as a
user's own folder. `expected.json` lists every planted defect and the reason a later stage must give for it; the
stages never read it, the tests do.
"""

from __future__ import annotations

import io
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from atelier.io import atomic_dir

STYLES = ["grid", "concentric circles", "stripes", "sunset landscape", "scattered blobs", "spiral"]
PALETTES: dict[str, list[tuple[int, int, int]]] = {
    "red": [(196, 28, 36), (240, 96, 72), (110, 10, 18), (252, 206, 196)],
    "blue": [(28, 64, 200), (96, 156, 242), (10, 22, 92), (204, 222, 252)],
    "green": [(30, 150, 62), (126, 212, 104), (10, 72, 30), (212, 242, 200)],
    "golden": [(228, 176, 36), (250, 220, 118), (150, 98, 8), (255, 244, 208)],
    "purple": [(128, 48, 178), (192, 120, 232), (58, 18, 92), (236, 214, 246)],
    "monochrome": [(22, 22, 22), (112, 112, 112), (190, 190, 190), (246, 246, 246)],
}
CREATORS = [
    "Ada Moreno",
    "Bram Visser",
    "Chiara Conti",
    "Dmitri Volkov",
    "Esi Mensah",
    "Farah Haddad",
    "Goro Tanaka",
    "Helga Berg",
    "Ines Duarte",
    "Jonas Weber",
    "Kavya Rao",
    "Luca Romano",
]
OPTED_OUT_CREATOR = "Marta Okafor"  # listed in policy/opt_out.csv
GOOD_LICENSES = [
    ("CC0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    ("cc-by-sa-4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    ("Public Domain Mark 1.0", "https://creativecommons.org/publicdomain/mark/1.0/"),
    ("CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/"),
]


def caption_for(style: str, palette: str) -> str:
    """The caption convention shared by the demo, the prompts and the evaluator."""
    return f"a {palette} {style} composition"


def _jitter(rng: random.Random, colour: tuple[int, int, int], amount: int = 14) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)  # type: ignore[return-value]


def draw_artwork(style: str, palette: str, size: int, rng: random.Random) -> Image.Image:
    """Draw one abstract composition of `style` in `palette`."""
    colours = PALETTES[palette]
    pick = lambda: _jitter(rng, rng.choice(colours))  # noqa: E731
    background = _jitter(rng, colours[rng.choice([0, 3])])
    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    s = size
    if style == "grid":
        n = rng.choice([2, 3, 4])
        cell = s / n
        for i in range(n):
            for j in range(n):
                inset = rng.uniform(0.05, 0.2) * cell
                d.rectangle(
                    [i * cell + inset, j * cell + inset, (i + 1) * cell - inset, (j + 1) * cell - inset], fill=pick()
                )
    elif style == "concentric circles":
        cx, cy = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.35, 0.65)
        r = s * rng.uniform(0.55, 0.75)
        k = rng.randint(4, 7)
        for i in range(k):
            ri = r * (1 - i / k)
            d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=colours[i % len(colours)] if i % 2 else pick())
    elif style == "stripes":
        n = rng.randint(3, 6)
        angle = rng.uniform(-0.6, 0.6) + (math.pi / 2 if rng.random() < 0.5 else 0)
        big = Image.new("RGB", (2 * s, 2 * s), background)  # drawn large, rotated, centre-cropped: no empty corners
        d2 = ImageDraw.Draw(big)
        w, x = s / n, rng.uniform(0, s / n)
        for i in range(2 * n + 1):
            band = w * rng.uniform(0.3, 0.7)
            d2.rectangle([x, 0, x + band, 2 * s], fill=colours[i % len(colours)] if i % 3 else pick())
            x += w * rng.uniform(0.8, 1.2)
        img = big.rotate(math.degrees(angle), resample=Image.BILINEAR).crop((s // 2, s // 2, s // 2 + s, s // 2 + s))
    elif style == "sunset landscape":
        horizon = s * rng.uniform(0.4, 0.75)
        for y in range(int(horizon)):
            t = y / horizon
            a, b = colours[3], colours[1]
            d.line([0, y, s, y], fill=tuple(int(a[c] * (1 - t) + b[c] * t) for c in range(3)))
        r = s * rng.uniform(0.08, 0.22)
        cx, cy = s * rng.uniform(0.1, 0.9), horizon - s * rng.uniform(-0.05, 0.25)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, colours[0]))
        d.rectangle([0, horizon, s, s], fill=_jitter(rng, colours[2]))
        for _ in range(rng.randint(0, 4)):
            hx, hw = s * rng.uniform(-0.1, 1.1), s * rng.uniform(0.15, 0.45)
            d.polygon(
                [(hx - hw, horizon + 1), (hx, horizon - s * rng.uniform(0.08, 0.35)), (hx + hw, horizon + 1)],
                fill=_jitter(rng, colours[2], 30),
            )
    elif style == "scattered blobs":
        for _ in range(rng.randint(14, 24)):
            r = s * rng.uniform(0.035, 0.075)
            x, y = rng.uniform(0, s), rng.uniform(0, s)
            d.ellipse([x - r, y - r * rng.uniform(0.7, 1.3), x + r, y + r], fill=pick())
    elif style == "spiral":
        cx, cy = s * rng.uniform(0.3, 0.7), s * rng.uniform(0.3, 0.7)
        turns = rng.uniform(1.8, 4.5)
        phase = rng.uniform(0, 2 * math.pi)
        direction = rng.choice([-1, 1])
        reach = s * rng.uniform(0.35, 0.6)
        width = max(2, int(s * rng.uniform(0.07, 0.11)))
        colour = pick()
        points = []
        for i in range(240):
            t = i / 240
            a = phase + direction * t * turns * 2 * math.pi
            points.append((cx + math.cos(a) * t * reach, cy + math.sin(a) * t * reach))
        d.line(points, fill=colour, width=width)
    else:
        raise ValueError(f"unknown demo style {style!r}; choose one of {STYLES}")
    return img


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class DemoFile:
    file_name: str
    data: bytes
    meta: dict


def build_demo(seed: int, per_class: int, size: int) -> tuple[list[DemoFile], list[str], dict[str, str]]:
    """Return (files, metadata lines, expected outcome per planted file_name). Pure and deterministic."""
    rng = random.Random(seed)
    files: list[DemoFile] = []
    expected: dict[str, str] = {}

    def add(
        name: str,
        data: bytes,
        style: str,
        palette: str,
        creator: str,
        license_raw: str,
        url: str,
        noai: bool = False,
        title: str | None = None,
    ) -> DemoFile:
        meta = {
            "file_name": name,
            "title": title or f"{palette.title()} {style.title()} No. {len(files) + 1}",
            "creator": creator,
            "caption": caption_for(style, palette),
            "license": license_raw,
            "license_url": url,
            "source_url": f"https://demo.atelier.invalid/works/{name}",
            "noai": noai,
        }
        f = DemoFile(name, data, meta)
        files.append(f)
        return f

    index = 0
    for style in STYLES:
        for palette in PALETTES:
            for _ in range(per_class):
                index += 1
                img = draw_artwork(style, palette, size, rng)
                lic, url = rng.choice(GOOD_LICENSES)
                add(f"art_{index:04d}.png", _png(img), style, palette, rng.choice(CREATORS), lic, url)

    def planted(
        name: str,
        reason: str,
        license_raw: str,
        url: str = "",
        creator: str | None = None,
        noai: bool = False,
        data: bytes | None = None,
    ) -> None:
        style, palette = rng.choice(STYLES), rng.choice(list(PALETTES))
        if data is None:
            data = _png(draw_artwork(style, palette, size, rng))
        add(name, data, style, palette, creator or rng.choice(CREATORS), license_raw, url, noai=noai)
        expected[name] = reason

    for i in range(4):
        planted(
            f"nc_{i}.png",
            "license_forbids:non_commercial",
            "CC BY-NC 4.0",
            "https://creativecommons.org/licenses/by-nc/4.0/",
        )
    for i in range(3):
        planted(
            f"nd_{i}.png",
            "license_forbids:no_derivatives",
            "CC-BY-ND-4.0",
            "https://creativecommons.org/licenses/by-nd/4.0/",
        )
    for i in range(3):
        planted(f"arr_{i}.png", "license_forbids:training", "All rights reserved")
    for i in range(3):
        planted(f"nolicense_{i}.png", "license_missing", "")
    for i, junk in enumerate(["free for whatever lol", "CC-BY-7.5-MOON"]):
        planted(f"badlicense_{i}.png", "license_unknown", junk)
    for i in range(4):
        planted(
            f"optout_{i}.png",
            "opted_out:creator",
            "CC-BY-4.0",
            "https://creativecommons.org/licenses/by/4.0/",
            creator=OPTED_OUT_CREATOR,
        )
    for i in range(3):
        planted(f"noai_{i}.png", "opted_out:noai_flag", "CC0-1.0", noai=True)

    originals = [f for f in files if f.file_name.startswith("art_")]
    for i in range(3):
        src = originals[(7 + 31 * i) % len(originals)]
        add(f"copy_{i}.png", src.data, "grid", "red", src.meta["creator"], src.meta["license"], src.meta["license_url"])
        files[-1].meta.update(caption=src.meta["caption"], title=src.meta["title"] + " (copy)")
        expected[f"copy_{i}.png"] = "duplicate_exact"
    for i in range(3):
        src = originals[(11 + 37 * i) % len(originals)]
        img = Image.open(io.BytesIO(src.data)).convert("RGB")
        img.putpixel((1, 1), (0, 0, 0))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=92)
        add(
            f"near_{i}.jpg",
            buf.getvalue(),
            "grid",
            "red",
            src.meta["creator"],
            src.meta["license"],
            src.meta["license_url"],
        )
        files[-1].meta.update(caption=src.meta["caption"], title=src.meta["title"] + " (re-encoded)")
        expected[f"near_{i}.jpg"] = "duplicate_near"

    good_png = _png(draw_artwork("grid", "blue", size, rng))
    planted("truncated.png", "undecodable", "CC0-1.0", data=good_png[: len(good_png) // 2])
    planted("empty.png", "empty_file", "CC0-1.0", data=b"")
    planted("notes.png", "undecodable", "CC0-1.0", data=b"these are my notes, not a picture\n" * 20)
    planted("tiny.png", "too_small", "CC0-1.0", data=_png(Image.new("RGB", (8, 8), (200, 30, 30))))

    # A photo-like JPEG with EXIF orientation and GPS: kept, rotated upright, metadata stripped by clean.
    img = draw_artwork("stripes", "golden", size, rng)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    exif[0x010F] = "AtelierCam"  # camera make
    gps = {1: "N", 2: (52.0, 22.0, 0.0), 3: "E", 4: (4.0, 53.0, 0.0)}
    exif[0x8825] = gps
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    add(
        "camera_upload.jpg",
        buf.getvalue(),
        "stripes",
        "golden",
        rng.choice(CREATORS),
        "CC0-1.0",
        "https://creativecommons.org/publicdomain/zero/1.0/",
    )

    lines = [json.dumps(f.meta, sort_keys=True) for f in files]
    # Rows that point at nothing, outside the folder, or are not JSON at all.
    missing = dict(files[0].meta, file_name="missing_file.png", title="Lost Work")
    lines.append(json.dumps(missing, sort_keys=True))
    expected["missing_file.png"] = "file_missing"
    escape = dict(files[0].meta, file_name="../../etc/passwd", title="Escape Attempt")
    lines.append(json.dumps(escape, sort_keys=True))
    expected["../../etc/passwd"] = "path_outside_source"
    lines.append('{"file_name": "broken_row.png", "title": "Broken", ')
    expected[f"<line {len(lines)}>"] = "metadata_malformed"
    return files, lines, expected


def write_demo(folder: Path, seed: int, per_class: int, size: int) -> dict[str, int]:
    """Materialise the demo source folder atomically; return counts."""
    files, lines, expected = build_demo(seed, per_class, size)
    with atomic_dir(folder) as tmp:
        for f in files:
            (tmp / f.file_name).write_bytes(f.data)
        (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"files": len(files), "metadata_rows": len(lines), "planted": len(expected)}
