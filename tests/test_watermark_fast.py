"""The vectorised watermark is invisible-watermark's `dwtDctSvd`, bit for bit: the same marked pixels for the same
image and id, and the same bits read from marked, unmarked, JPEG-compressed and resized images, on flat, saturated,
gradient, noise and drawn images, at 256 px and at sizes that are not multiples of 8."""

import io

import numpy as np
import pytest
from imwatermark import WatermarkDecoder, WatermarkEncoder
from PIL import Image, ImageDraw

from provenance import watermark, watermark_v1
from tests.test_watermark import artwork


def _flat(rgb, size=(256, 256)):
    return Image.new("RGB", size, rgb)


def _gradient(size=(256, 256), vertical=False, seed=0):
    w, h = size
    ramp = np.linspace(0, 255, h if vertical else w)
    grid = np.broadcast_to(ramp[:, None] if vertical else ramp[None, :], (h, w))
    rng = np.random.default_rng(seed)
    channels = [grid * a + b for a, b in zip(rng.uniform(0.3, 1, 3), rng.uniform(0, 60, 3))]
    return Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))


def _noise(size=(256, 256), seed=0, low=0, high=256):
    return Image.fromarray(np.random.default_rng(seed).integers(low, high, (size[1], size[0], 3), dtype=np.uint8))


def _drawing(size=(256, 256), seed=0):
    """Lines, boxes and text on a pale background, like a sketch."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(200, 250, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(25):
        x0, x1 = sorted(int(x) for x in rng.integers(0, size[0], 2))
        y0, y1 = sorted(int(y) for y in rng.integers(0, size[1], 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 6)))
        else:
            draw.rectangle([x0, y0, x1, y1], outline=colour, fill=colour if rng.random() < 0.5 else None)
    draw.text((10, 10), "Atelier 2026", fill=(20, 20, 20))
    return img


IMAGES = {
    "flat grey": _flat((128, 128, 128)),
    "flat multiple of 7": _flat((70, 140, 210)),
    "flat white": _flat((255, 255, 255)),
    "flat black": _flat((0, 0, 0)),
    "saturated red": _flat((255, 0, 0)),
    "saturated blue half": Image.fromarray(
        np.concatenate([np.asarray(_flat((0, 0, 255), (256, 128))), np.asarray(_flat((40, 200, 90), (256, 128)))])
    ),
    "horizontal gradient": _gradient(),
    "vertical gradient": _gradient(vertical=True, seed=1),
    "uniform noise": _noise(),
    "faint noise": _noise(seed=1, low=118, high=138),
    "upscaled noise": _noise((32, 32), seed=2).resize((256, 256), Image.NEAREST),
    "checkerboard": Image.fromarray((np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)).convert("RGB"),
    "circles 1": artwork(1),
    "circles 2": artwork(2),
    "circles 3": artwork(7),
    "drawing 1": _drawing(seed=1),
    "drawing 2": _drawing(seed=2),
    "smooth drawing": _drawing(seed=3).resize((64, 64), Image.LANCZOS).resize((256, 256), Image.BICUBIC),
    "odd size 301x259 drawing": _drawing((301, 259), seed=4),
    "odd size 262x270 noise": _noise((262, 270), seed=3),
    "wide 517x256 gradient": _gradient((517, 256), seed=5),
    "large 512x384 circles": artwork(4).resize((512, 384), Image.BILINEAR),
}
IDS = {name: int(i) for name, i in zip(IMAGES, np.random.default_rng(7).integers(0, 2**32, len(IMAGES)))}


def _bgr(image):
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _library_encode(image, wm_id):
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", watermark_v1._to_bits(wm_id))
    bgr = encoder.encode(_bgr(image), watermark.METHOD_V1, scales=watermark_v1.SCALES)
    return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))


def _library_decode(image):
    return WatermarkDecoder("bits", watermark_v1.BITS).decode(
        _bgr(image), watermark.METHOD_V1, scales=watermark_v1.SCALES
    )


def _copies(image):
    """What an audit may be handed: the image, lossless and JPEG re-encodes, and resized copies."""

    def jpeg(img, quality):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    w, h = image.size
    return [
        image,
        jpeg(image, 90),
        jpeg(image, 75),
        jpeg(image, 50),
        image.resize((w * 5 // 4, h * 5 // 4), Image.BILINEAR),
        image.resize((max(256, w * 3 // 4), 256), Image.LANCZOS),
    ]


@pytest.mark.parametrize("name", IMAGES)
def test_same_pixels_and_same_bits_as_the_library(name):
    image, wm_id = IMAGES[name], IDS[name]
    expected = _library_encode(image, wm_id)
    marked = watermark_v1._encode(_bgr(image), watermark_v1._to_bits(wm_id))
    assert np.array_equal(marked, _bgr(expected)), f"{name}: {np.count_nonzero(marked != _bgr(expected))} values differ"

    for copy_ in _copies(expected) + [image]:  # marked copies, and the unmarked original (noise bits)
        assert np.array_equal(watermark_v1._decode(_bgr(copy_), watermark_v1.BITS), _library_decode(copy_))


def _library_embed(image, wm_id):
    """provenance.watermark.embed_v1 as it was before the vectorised code: the library, then the lossless read-back."""
    marked = _library_encode(image, wm_id)
    if watermark.hamming(watermark_v1._from_bits(_library_decode(marked)), wm_id) > watermark_v1.MAX_EMBED_ERRORS:
        return None
    return marked


@pytest.mark.parametrize("name", IMAGES)
def test_public_embed_and_decode_agree_with_the_library(name):
    image, wm_id = IMAGES[name], IDS[name]
    expected = _library_embed(image, wm_id)
    if expected is None:  # too saturated to carry the mark: refused by both
        assert name in ("flat white", "checkerboard")
        with pytest.raises(watermark.WatermarkError, match="saturated"):
            watermark.embed_v1(image, wm_id)
        return
    marked = watermark.embed_v1(image, wm_id)
    assert marked.mode == "RGB" and marked.tobytes() == expected.tobytes()
    assert watermark.decode(marked) == watermark_v1._from_bits(_library_decode(marked))
    assert watermark.hamming(watermark.decode(marked), wm_id) <= watermark_v1.MAX_EMBED_ERRORS
