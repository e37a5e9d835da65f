import random

import numpy as np
import pytest
from PIL import Image

from atelier.demo import PALETTES, STYLES, caption_for, draw_artwork
from atelier.figures import (
    PAPER,
    _drawable,
    _font,
    _has_glyph,
    _wrap,
    image_grid,
    palette_style_grid,
    prompt_grid,
    sample_grid,
)


def _demo(n=None):
    rng = random.Random(0)
    pairs = [(p, s) for p in PALETTES for s in STYLES][:n]
    return [draw_artwork(s, p, 32, rng) for p, s in pairs], [caption_for(s, p) for p, s in pairs]


def _edges_blank(img: Image.Image) -> bool:
    """Nothing drawn on the outermost pixels: no label or caption runs off the canvas."""
    a = np.asarray(img)
    return all((edge == PAPER).all() for edge in (a[0], a[-1], a[:, 0], a[:, -1]))


def _ink(img: Image.Image, box) -> int:
    """Pixels in `box` that are not paper."""
    return int((np.asarray(img.crop(box)) != PAPER).any(-1).sum())


def test_plain_grid_is_the_tiles_edge_to_edge_as_before():
    images, _ = _demo(8)
    grid = image_grid(images, columns=6, scale=3)
    assert grid.size == (6 * 96, 2 * 96)
    old = Image.new("RGB", (6 * 32, 2 * 32), PAPER)
    for i, im in enumerate(images):
        old.paste(im, ((i % 6) * 32, (i // 6) * 32))
    assert grid.tobytes() == old.resize((6 * 96, 2 * 96), Image.NEAREST).tobytes()


def test_labelled_grid_has_margins_with_text_and_nothing_clipped():
    images, _ = _demo(12)
    long = "a palette name far too long to fit beside a row without being wrapped onto lines " * 3
    grid = image_grid(
        images,
        columns=6,
        scale=3,
        row_labels=[long, "b"],
        col_labels=[f"style {i}" for i in range(6)],
        title="Samples " + "with a long title " * 20,
    )
    assert grid.width > 6 * 96 and grid.height > 2 * 96
    assert _edges_blank(grid)
    with pytest.raises(ValueError, match="3 row labels for 2 rows"):
        image_grid(images, columns=6, row_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="5 column labels for 6 columns"):
        image_grid(images, columns=6, col_labels=list("abcde"))
    with pytest.raises(ValueError, match="image 1 is 8x8"):
        image_grid([images[0], Image.new("RGB", (8, 8))], columns=2)


def test_wrapping_fits_the_width_and_ends_truncated_text_with_an_ellipsis():
    font = _font(12)
    lines = _wrap(
        "a lighthouse at dusk in the style of a woodcut print, heavy ink, dramatic clouds over a sea", font, 100, 3
    )
    assert len(lines) == 3 and lines[-1].endswith("\u2026")
    assert all(font.getlength(line) <= 100 for line in lines)
    word = _wrap("supercalifragilisticexpialidocious" * 3, font, 60, 10)
    assert len(word) > 1 and "".join(word) == "supercalifragilisticexpialidocious" * 3
    assert _wrap("short", font, 100, 3) == ["short"]
    # control characters collapse; characters the bundled font lacks become plain ones, never an empty box
    text = _drawable("caf\u00e9 \u2014 \u201cquoted\u201d\nnext\tline", font)
    assert text.startswith("cafe - ") and "quoted" in text and text.endswith(" next line")
    assert all(c == " " or _has_glyph(font, c) for c in text)
    assert _drawable("\u65e5\u672c", font) == "??"


def test_prompt_grid_captions_every_cell():
    images, _ = _demo(5)
    prompts = [
        "cat",
        "a lighthouse at dusk, heavy ink, dramatic clouds over a stormy northern sea with gulls",
        "<script>alert(1)</script>",
        "",
        "x" * 200,
    ]
    grid = prompt_grid(images, prompts, columns=3, scale=2)
    assert _edges_blank(grid)
    cell_w = 120 + 10  # cells are at least 120 px wide, 10 px apart
    assert grid.width == 6 + 3 * cell_w - 10 + 6
    for i in (0, 1, 2):  # ink under each image of the first row: its caption
        assert _ink(grid, (6 + i * cell_w, 6 + 64 + 2, 6 + i * cell_w + 120, 6 + 64 + 20)) > 0
    with pytest.raises(ValueError, match="4 prompts for 5 images"):
        prompt_grid(images, prompts[:4], columns=3)


def test_palette_style_grid_puts_each_caption_in_its_row_and_column():
    images, prompts = _demo()
    order = list(range(len(images)))
    random.Random(1).shuffle(order)  # the grid places by caption, not by position
    grid = palette_style_grid([images[i] for i in order], [prompts[i] for i in order], scale=3)
    plain = palette_style_grid(images[:6], prompts[:6], scale=3)  # one palette: one row
    assert grid.height - plain.height == 5 * (96 + 4)
    assert _edges_blank(grid)
    with pytest.raises(ValueError, match="is not a demo caption"):
        palette_style_grid(images[:2], [prompts[0], "a cat"])
    with pytest.raises(ValueError, match="two images for"):
        palette_style_grid(images[:2], [prompts[0], prompts[0]])
    fallback = sample_grid(images[:2], [prompts[0], "a cat"], columns=6)
    assert fallback.size == prompt_grid(images[:2], [prompts[0], "a cat"], columns=6).size


def test_palette_style_grid_leaves_missing_combinations_grey():
    images, prompts = _demo(8)  # red: all six styles, blue: two
    grid = palette_style_grid(images, prompts, scale=1)
    a = np.asarray(grid)
    right, bottom = grid.width - 6 - 16, grid.height - 6 - 16  # centre of the last cell (blue, spiral)
    assert tuple(a[bottom, right]) == (236, 236, 236)
