import io
import random

import pandas as pd
from PIL import Image

from atelier.config import CleanParams
from atelier.demo import STYLES, draw_artwork
from atelier.images import Rejected, decode
from stages.clean import clean_records

P = CleanParams(resolution=32, min_size=32, max_pixels=1_000_000, near_duplicate_hamming=4)


def _bytes(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _pattern(seed: int) -> Image.Image:
    return draw_artwork(STYLES[seed % len(STYLES)], "blue", 64, random.Random(seed))


def _reason(data: bytes) -> str:
    try:
        decode(data, P)
    except Rejected as r:
        return r.reason
    return "ok"


def test_decode_rejections():
    good = _bytes(_pattern(1))
    assert (
        _reason(_bytes(Image.new("RGB", (40, 40)), "GIF", save_all=True, append_images=[Image.new("RGB", (40, 40), 9)]))
        == "ok"
    )
    assert _reason(b"") == "empty_file"
    assert _reason(good[: len(good) // 2]) == "undecodable"
    assert _reason(b"plain text, not a picture") == "undecodable"
    assert _reason(_bytes(Image.new("RGB", (10, 10)))) == "too_small"
    assert _reason(_bytes(Image.new("L", (1200, 1200)))) == "decompression_bomb"
    assert _reason(good) == "ok"


def test_exif_orientation_applied_and_metadata_stripped():
    img = Image.new("RGB", (64, 32), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 32, 32))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise for display: blue ends up on top
    exif[0x8825] = {1: "N", 2: (52.0, 1.0, 0.0)}
    out = decode(_bytes(img, "JPEG", exif=exif.tobytes(), quality=95), P)
    assert (out.width, out.height) == (32, 64)
    top, bottom = out.image.getpixel((16, 2)), out.image.getpixel((16, 29))
    assert top[2] > 200 and bottom[0] > 200
    saved = Image.open(io.BytesIO(_bytes(out.image)))
    assert not saved.getexif() and "exif" not in saved.info and "icc_profile" not in saved.info
    assert out.image.size == (32, 32) and out.image.mode == "RGB"


def test_transparency_and_sixteen_bit_are_converted():
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert decode(_bytes(rgba), P).image.getpixel((5, 5)) == (255, 255, 255)
    sixteen = Image.new("I;16", (40, 40), 65535)
    assert decode(_bytes(sixteen), P).image.getpixel((5, 5))[0] > 250


def test_duplicates_rejected_and_every_record_accounted_for():
    a, b = _bytes(_pattern(1)), _bytes(_pattern(5))
    near = _bytes(_pattern(1), "JPEG", quality=90)
    raw = pd.DataFrame(
        [
            {"record_id": "a", "source_uri": "a.png", "ingest_error": None, "data": a},
            {"record_id": "b", "source_uri": "b.png", "ingest_error": None, "data": b},
            {"record_id": "a", "source_uri": "a-copy.png", "ingest_error": None, "data": a},
            {"record_id": "n", "source_uri": "a.jpg", "ingest_error": None, "data": near},
            {"record_id": "m", "source_uri": "gone.png", "ingest_error": "file_missing: gone", "data": b""},
        ]
    )
    saved = {}
    clean, rejects = clean_records(raw, lambda r: r["data"], P, on_image=lambda rid, img: saved.update({rid: img}))
    assert list(clean["source_uri"]) == ["a.png", "b.png"] and set(saved) == {"a", "b"}
    assert dict(zip(rejects["source_uri"], rejects["reason"])) == {
        "a-copy.png": "duplicate_exact",
        "a.jpg": "duplicate_near",
        "gone.png": "file_missing",
    }
    assert len(clean) + len(rejects) == len(raw)
