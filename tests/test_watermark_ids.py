"""Version 2 watermark ids (provenance/watermark.py): 2**17 ids' code words are distinct and decode back exactly;
marked images read back their exact id (above 2**32 too) losslessly, after JPEG quality 75 and after a crop; noise,
unmarked and foreign-marked images read as no id, never a wrong one; an old ledger's version 1 marks still resolve;
the C2PA soft-binding value round-trips and refuses bad input; the ledger allocates and looks ids up."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from provenance import ledger, watermark
from provenance.watermark import WatermarkError
from tests.test_watermark import artwork


def reencode(image: Image.Image, fmt: str, **options) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def photo_like(seed: int) -> Image.Image:
    """A textured 256 px picture (smooth colour fields, shapes and grain), unlike the flat upscaled artworks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:256, 0:256] / 256
    base = np.stack(
        [128 + 90 * np.sin(2 * np.pi * (f * x + g * y) + p) for f, g, p in rng.uniform(0.3, 2.5, (3, 3))], -1
    )
    img = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x0, y0 = (int(v) for v in rng.integers(0, 200, 2))
        draw.ellipse(
            [x0, y0, x0 + int(rng.integers(20, 90)), y0 + int(rng.integers(20, 90))],
            fill=tuple(int(c) for c in rng.integers(0, 256, 3)),
        )
    return img


def test_2_17_ids_have_distinct_code_words_that_decode_back_exactly():
    """Every code word is distinct and its message part (the code is systematic: id, CRC) gives the id back; every
    16th also goes through the full Reed-Solomon decoder (0.3 ms each, in pure Python)."""
    rng = np.random.default_rng(17)
    ids = list(range(2**16)) + [int(v) for v in rng.choice(2**watermark.ID_BITS, 2**16, replace=False)]
    ids[-1] = 2**watermark.ID_BITS - 1
    ids[-2] = 2**32 - 1
    assert len(set(ids)) == 2**17
    words = np.stack([watermark.code_bits(wm_id) for wm_id in ids])  # (2**17, 192) bits
    assert words.shape == (2**17, 192)
    packed = np.packbits(words, axis=1)
    assert len({row.tobytes() for row in packed}) == 2**17
    message = np.packbits(words[:, :64] ^ watermark._layout().whitening[:64], axis=1)  # 8 bytes: id, CRC-16
    assert [int.from_bytes(row[:6].tobytes(), "big") for row in message] == ids
    assert all(watermark._message(wm_id) == row.tobytes() for wm_id, row in zip(ids, message))
    for k in range(0, 2**17, 16):
        assert watermark.id_from_code_bits(words[k]) == (ids[k], 0)


def test_a_code_word_with_a_few_wrong_bytes_still_decodes_and_noise_does_not():
    rng = np.random.default_rng(3)
    for wm_id in (0, 1, 2**32 - 1, 2**40 + 12345):
        bits = watermark.code_bits(wm_id).copy()
        for byte in rng.choice(24, 8, replace=False):  # 8 bytes wrong: the Reed-Solomon (24, 8) code's limit
            bits[byte * 8 + int(rng.integers(0, 8))] ^= 1
        assert watermark.id_from_code_bits(bits) == (wm_id, 8)
    assert all(watermark.id_from_code_bits(rng.integers(0, 2, 192)) is None for _ in range(2000))


@pytest.mark.parametrize("wm_id", [0, 1, 65_536, 2**32 - 1, 2**32, 2**47 + 99, 2**48 - 1])
def test_embedded_ids_read_back_exactly(wm_id):
    image = artwork(wm_id % 7) if wm_id % 2 else photo_like(wm_id % 5)
    marked = watermark.embed(image, wm_id)
    assert marked.mode == "RGB" and marked.size == image.size
    reading = watermark.read(reencode(marked, "PNG"))
    assert reading.id == wm_id and reading.confidence > 0.5 and reading.transform_found.startswith("as is")
    diff = np.asarray(marked, float) - np.asarray(image, float)
    assert 10 * np.log10(255**2 / (diff**2).mean()) > 34  # PSNR, dB


@pytest.mark.parametrize("seed", [1, 2])
def test_jpeg_q75_and_a_crop_read_back(seed):
    wm_id = 2**32 + 1000 * seed
    for image in (artwork(seed), photo_like(seed)):
        marked = watermark.embed(image, wm_id)
        assert watermark.read(reencode(marked, "JPEG", quality=75)).id == wm_id
        cropped = marked.crop((27, 13, 27 + 200, 13 + 220))  # neither the block grid nor the tile's origin
        reading = watermark.read(cropped)
        assert reading.id == wm_id and reading.transform_found.startswith("as is")


def test_noise_and_unmarked_images_read_as_no_id():
    rng = np.random.default_rng(2026)
    images = [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(100)]
    images += [
        Image.fromarray(np.clip(rng.normal(128, s, (256, 256, 3)), 0, 255).astype(np.uint8))
        for s in rng.uniform(2, 60, 100)
    ]
    images += [artwork(seed) for seed in range(50)] + [photo_like(seed) for seed in range(50)]
    images += [Image.new("RGB", (256, 256), tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(20)]
    images.append(Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)))
    readings = [watermark.read(im) for im in images]
    assert [r for r in readings if r.id is not None] == []
    assert all(r.confidence == 0 and r.corrected_errors is None for r in readings)


def test_a_version_1_mark_does_not_read_as_version_2_and_an_old_ledger_still_resolves_it(tmp_path):
    conn = ledger.open_ledger(tmp_path / "l.sqlite")
    with ledger.transaction(conn):  # as a ledger made before version 2 reserved ids
        for seq in (1, 2, 3):
            conn.execute(
                "INSERT INTO watermarks (seq, watermark_id, source, reserved_at) VALUES (?, ?, ?, ?)",
                (seq, ledger.code_word(seq), f"old-{seq}", "2026-11-01T00:00:00+00:00"),
            )
    old_id = ledger.code_word(2)
    ledger.record(conn, _manifest("old2", watermark.METHOD_V1), old_id)
    new_id = ledger.watermark_id_for(conn, "new")
    assert new_id == 4 and ledger.watermark_id_for(conn, "new") == 4  # same source, same id
    ledger.record(conn, _manifest("new4", watermark.METHOD), new_id)

    old_mark = watermark.embed_v1(artwork(4), old_id)
    assert watermark.read(old_mark).id is None
    found = ledger.by_watermark(conn, watermark.decode(reencode(old_mark, "JPEG", quality=75)))
    assert found["id"] == "old2" and found["manifest"]["artwork"]["watermark"]["method"] == "dwtDctSvd"
    assert ledger.v1_watermark_ids(conn) == [old_id]  # a version 2 id is never a version 1 candidate

    new_mark = watermark.embed(artwork(4), new_id)
    assert ledger.by_watermark_id(conn, watermark.read(new_mark).id)["id"] == "new4"
    assert ledger.by_watermark_id(conn, 5) is None

    # one lookup for either version (for the audit's recovery), and the marking checklist's view of each
    hit = ledger.by_mark(conn, reencode(new_mark, "JPEG", quality=75))
    assert hit["id"] == "new4" and hit["match"] == {"method": watermark.METHOD, "distance": 0, "margin": None}
    hit = ledger.by_mark(conn, reencode(old_mark, "JPEG", quality=75))
    assert hit["id"] == "old2" and hit["match"]["method"] == "dwtDctSvd" and hit["match"]["distance"] <= 4
    assert ledger.by_mark(conn, artwork(5)) is None
    assert ledger.by_mark(conn, watermark.embed(artwork(5), 77)) is None  # a mark this ledger never issued
    assert watermark.check(new_mark, new_id, watermark.METHOD) == {"read": new_id, "distance": 0, "readable": True}
    assert watermark.check(new_mark, new_id + 1, watermark.METHOD)["readable"] is False
    assert watermark.check(old_mark, old_id, "dwtDctSvd") == {"read": old_id, "distance": 0, "readable": True}
    assert watermark.check(old_mark.crop((0, 0, 200, 200)), old_id, "dwtDctSvd")["read"] is None
    assert watermark.check(artwork(5), new_id, watermark.METHOD) == {"read": None, "distance": None, "readable": False}


def test_version_2_ids_skip_numbers_an_old_ledger_holds_and_are_sequential(tmp_path):
    conn = ledger.open_ledger(tmp_path / "l.sqlite")
    first = ledger.code_word(65_535)
    with ledger.transaction(conn):
        conn.execute("INSERT INTO watermarks VALUES (?, ?, ?, ?)", (9, 65_536 + 2, "old-a", "x"))
        conn.execute("INSERT INTO watermarks VALUES (?, ?, ?, ?)", (65_536, first, "old-b", "x"))
    taken = {65_538, first}
    got = [ledger.watermark_id_for(conn, f"s{k}") for k in range(4)]
    expected = [n for n in range(65_537, 65_537 + 6) if n not in taken][:4]
    assert got == expected and len(set(got)) == 4
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM artworks WHERE watermark_id = ?", (1,)).fetchall()
    assert "USING INDEX" in " ".join(str(tuple(r)) for r in plan)  # by_watermark_id is an indexed lookup


def test_binding_value_round_trips_and_refuses_bad_input():
    for wm_id in (0, 1, 2**32 - 1, 2**48 - 1):
        value = watermark.binding_value(wm_id)
        assert len(value) == 12 and value.endswith("=") and watermark.id_from_binding(value) == wm_id
    assert watermark.binding_value(1) == "AAAAAAAAAAE="
    for bad, message in [
        ("AAAAAAAAAAE", "base64"),
        ("AAAAAAAAAA==", "holds 7 bytes"),
        ("@@@@", "base64"),
        ("AAAAAAAAAAAA", "holds 9 bytes"),
        ("AQAAAAAAAAA=", "above"),
        (7, "string"),
        ("AAAAAAAAAAé=", "base64"),
    ]:
        with pytest.raises(ValueError, match=message):
            watermark.id_from_binding(bad)
    for bad in (-1, 2**48, True, 1.0):
        with pytest.raises(ValueError, match="2\\*\\*48"):
            watermark.binding_value(bad)
    assert watermark.ALG == "local.atelier.watermark.2" and watermark.METHOD != watermark.METHOD_V1


def test_small_or_non_rgb_images_are_refused():
    with pytest.raises(WatermarkError, match="at least 128x128"):
        watermark.embed(Image.new("RGB", (127, 256), (90, 90, 90)), 1)
    with pytest.raises(WatermarkError, match="RGB"):
        watermark.embed(Image.new("RGBA", (256, 256)), 1)
    assert watermark.read(Image.new("RGB", (100, 100))).id is None


def _manifest(artwork_id: str, method: str) -> dict:
    return {
        "id": artwork_id,
        "artwork": {
            "sha256_pixels": artwork_id.ljust(64, "0"),
            "phash": "0" * 16,
            "created_at": "2026-12-01T00:00:00+00:00",
            "watermark": {"method": method},
        },
        "model": {"name": "atelier-diffusion", "version": "1"},
    }


def test_embedding_is_deterministic_and_reads_any_mode():
    """generate relies on it: the same unmarked pixels and id give the same marked pixels (the same artwork id)."""
    a, b = watermark.embed(photo_like(3), 2**40 + 5), watermark.embed(photo_like(3), 2**40 + 5)
    assert a.tobytes() == b.tobytes()
    for mode in ("RGBA", "P", "L"):
        reading = watermark.read(a.convert(mode))
        assert reading.id in (2**40 + 5, None) and (mode == "L" or reading.id == 2**40 + 5)
