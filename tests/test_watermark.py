"""The version 1 invisible watermark (dwtDctSvd, still read for old ledgers; tests/test_watermark_ids.py tests
version 2): it survives PNG and JPEG quality 75, names the right id among many candidates, refuses
unmarked images, and refuses images that cannot carry it."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from provenance import watermark
from provenance.watermark import WatermarkError

RNG = np.random.default_rng(2026)
CANDIDATES = [int(x) for x in RNG.integers(0, 2**32, size=50)]


def artwork(seed: int) -> Image.Image:
    """A 256 px composition of concentric circles in mid-range colours, upscaled from 32 px (nearest)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (32, 32), tuple(int(c) for c in rng.integers(60, 200, 3)))
    draw = ImageDraw.Draw(img)
    for r in range(14, 0, -3):
        draw.ellipse([16 - r, 16 - r, 16 + r, 16 + r], fill=tuple(int(c) for c in rng.integers(40, 215, 3)))
    return img.resize((256, 256), Image.NEAREST)


def reencode(image: Image.Image, fmt: str, **options) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return Image.open(io.BytesIO(buf.getvalue()))


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return 10 * np.log10(255**2 / (diff**2).mean())


@pytest.mark.parametrize("seed", [1, 2])
def test_mark_survives_png_and_jpeg_q75_and_names_the_right_id(seed):
    wm_id = CANDIDATES[17 + seed]
    original = artwork(seed)
    marked = watermark.embed_v1(original, wm_id)
    assert psnr(original, marked) > 33

    lossless = watermark.match(reencode(marked, "PNG"), CANDIDATES)
    assert lossless.id == wm_id and lossless.distance == 0
    found = watermark.match(reencode(marked, "JPEG", quality=75), CANDIDATES)
    assert found.id == wm_id and found.distance <= 2 and found.margin >= 2


def test_unmarked_images_and_unknown_ids_have_no_match():
    for seed in (1, 2, 3):
        found = watermark.match(artwork(seed), CANDIDATES)
        assert found.id is None and found.distance > 4
    marked = watermark.embed_v1(artwork(1), CANDIDATES[5])
    others = CANDIDATES[:5] + CANDIDATES[6:]
    assert watermark.match(marked, others).id is None


def test_embedding_and_decoding_are_deterministic():
    a, b = watermark.embed_v1(artwork(3), 0xC0FFEE), watermark.embed_v1(artwork(3), 0xC0FFEE)
    assert a.tobytes() == b.tobytes() and a.mode == "RGB" and a.size == (256, 256)
    assert watermark.decode(a) == watermark.decode(reencode(a, "PNG")) == 0xC0FFEE


def test_small_or_unsuitable_images_are_refused():
    with pytest.raises(WatermarkError, match="at least 256x256"):
        watermark.embed_v1(Image.new("RGB", (255, 256), (90, 90, 90)), 1)
    with pytest.raises(WatermarkError, match="at least 256x256"):
        watermark.decode(Image.new("RGB", (300, 200)))
    with pytest.raises(WatermarkError, match="RGB"):
        watermark.embed_v1(Image.new("RGBA", (256, 256)), 1)
    with pytest.raises(ValueError, match="2\\*\\*32"):
        watermark.embed_v1(artwork(1), 2**32)
    with pytest.raises(WatermarkError, match="saturated"):  # white cannot carry a chroma change
        watermark.embed_v1(Image.new("RGB", (256, 256), (255, 255, 255)), CANDIDATES[0])


def test_only_a_clear_unique_nearest_match_is_accepted():
    a = 0b1111_0000
    assert watermark.nearest(a, [a ^ 0b1, 0xFFFF0000]) == (a ^ 0b1, 1, 19)  # runner-up 20 bits away
    assert watermark.nearest(a, [a ^ 0b11, a ^ 0b1100]).id is None  # a tie is not a match
    assert watermark.nearest(a, [a ^ 0b11111]).id is None  # 5 bits away: too far
    assert watermark.nearest(a, [a ^ 0b1, a ^ 0b10]).id is None  # runner-up 0 bits farther
    assert watermark.nearest(a, []) == (None, None, None)
