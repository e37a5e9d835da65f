"""Small report writers shared by the stages: loss curves as CSV (DVC plots), sample grids as PNG.

Grid text (title, row and column labels, captions) is drawn with Pillow's bundled font (`ImageFont.load_default`,
no network, no system fonts) at the output resolution, so it stays sharp when the images are upscaled. Text longer
than its space is wrapped on words, and what still does not fit ends with an ellipsis.
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from atelier.io import write_bytes, write_text

LABEL_PX, CAPTION_PX, TITLE_PX = 13, 12, 16  # font sizes
PAD = 6  # space around text, in pixels
GAP = 4  # space between cells of a labelled grid
CAPTION_GAP = 10  # ... and between captioned cells
CAPTION_LINES, LABEL_LINES, TITLE_LINES = 4, 3, 2
MIN_CAPTION_WIDTH = 120  # a captioned cell is at least this wide (images are centred in it)
MAX_ROW_LABEL_WIDTH = 150
INK, MUTED, PAPER, EMPTY = (20, 20, 20), (70, 70, 70), (255, 255, 255), (236, 236, 236)


def write_curve(path: Path, name: str, values: list[float]) -> None:
    """A `step,<name>` CSV that `dvc plots` and MLflow can both read."""
    rows = [f"step,{name}"] + [f"{i},{v:.6f}" for i, v in enumerate(values)]
    write_text(path, "\n".join(rows) + "\n")


def read_curve(path: Path) -> list[float]:
    """Values of a curve written by write_curve (empty when the file is missing)."""
    if not path.exists():
        return []
    return [float(line.split(",")[1]) for line in path.read_text().splitlines()[1:] if line]


def image_grid(
    images: list[Image.Image | None],
    columns: int,
    scale: int = 1,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    title: str | None = None,
) -> Image.Image:
    """Tile images (all the same size; None leaves a grey cell) into a grid, upscaled `scale` times with nearest
    neighbour; optional row labels on the left, column labels on top and a title above them.

    Without labels or title the grid is the bare tiles, edge to edge, as before.
    """
    tiles = _tiles(images, scale, "image_grid")
    rows = (len(tiles) + columns - 1) // columns
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"image_grid: {len(row_labels)} row labels for {rows} rows of {columns} columns")
    if col_labels is not None and len(col_labels) != columns:
        raise ValueError(f"image_grid: {len(col_labels)} column labels for {columns} columns")
    return _compose(tiles, columns, row_labels=row_labels, col_labels=col_labels, title=title)


def prompt_grid(
    images: list[Image.Image], prompts: list[str], columns: int, scale: int = 1, title: str | None = None
) -> Image.Image:
    """Tile images (all the same size) into a grid, each captioned underneath with its prompt (any free text,
    wrapped, at most four lines, then an ellipsis); cells are at least 120 px wide so captions stay legible."""
    if len(prompts) != len(images):
        raise ValueError(f"prompt_grid: {len(prompts)} prompts for {len(images)} images; pass one prompt per image")
    tiles = _tiles(images, scale, "prompt_grid")
    return _compose(tiles, max(1, min(columns, len(tiles))), captions=prompts, title=title)


def palette_style_grid(
    images: list[Image.Image], prompts: list[str], scale: int = 1, title: str | None = None
) -> Image.Image:
    """The demo's grid: one image per demo caption ("a <palette> <style> composition"), rows palettes and columns
    styles (in atelier.demo's order, only those present), labelled; a combination without an image is a grey cell."""
    from atelier.demo import PALETTES, STYLES, caption_for

    known = {caption_for(s, p): (p, s) for s in STYLES for p in PALETTES}
    if len(prompts) != len(images):
        raise ValueError(f"palette_style_grid: {len(prompts)} prompts for {len(images)} images")
    placed: dict[tuple[str, str], Image.Image] = {}
    for image, prompt in zip(images, prompts):
        key = known.get(" ".join(prompt.lower().split()))
        if key is None:
            raise ValueError(
                f"palette_style_grid: prompt {prompt!r} is not a demo caption "
                "('a <palette> <style> composition'); use prompt_grid for other prompts"
            )
        if key in placed:
            raise ValueError(f"palette_style_grid: two images for {prompt!r}; pass one image per prompt")
        placed[key] = image
    palettes = [p for p in PALETTES if any(k[0] == p for k in placed)]
    styles = [s for s in STYLES if any(k[1] == s for k in placed)]
    cells = [placed.get((p, s)) for p in palettes for s in styles]
    return image_grid(cells, len(styles), scale, row_labels=palettes, col_labels=styles, title=title)


def sample_grid(
    images: list[Image.Image], prompts: list[str], scale: int = 1, columns: int = 6, title: str | None = None
) -> Image.Image:
    """palette_style_grid when every prompt is a distinct demo caption, else prompt_grid with `columns` columns."""
    try:
        return palette_style_grid(images, prompts, scale, title=title)
    except ValueError:
        return prompt_grid(images, prompts, columns, scale, title=title)


def save_png(path: Path, image: Image.Image) -> None:
    """Save a PNG atomically."""
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


# --- layout -----------------------------------------------------------------------------------------------------


def _tiles(images: list[Image.Image | None], scale: int, caller: str) -> list[Image.Image | None]:
    present = [im for im in images if im is not None]
    if not present:
        raise ValueError(f"{caller}: no images to tile")
    size = present[0].size
    odd = next((i for i, im in enumerate(images) if im is not None and im.size != size), None)
    if odd is not None:
        raise ValueError(
            f"{caller}: image {odd} is {images[odd].size[0]}x{images[odd].size[1]}, the first is "
            f"{size[0]}x{size[1]}; resize them to one size first"
        )
    if scale < 1:
        raise ValueError(f"{caller}: scale must be a whole number >= 1, got {scale}")
    w, h = size[0] * scale, size[1] * scale
    return [
        None if im is None else im.convert("RGB").resize((w, h), Image.NEAREST) if scale > 1 else im.convert("RGB")
        for im in images
    ]


def _compose(
    tiles: list[Image.Image | None],
    columns: int,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    captions: list[str] | None = None,
    title: str | None = None,
) -> Image.Image:
    """Place tiles on a canvas with margins for the title, labels and captions."""
    tw, th = next(t for t in tiles if t is not None).size
    rows = (len(tiles) + columns - 1) // columns
    annotated = bool(row_labels or col_labels or captions or title)
    label_font, caption_font, title_font = _font(LABEL_PX), _font(CAPTION_PX), _font(TITLE_PX)

    gap = CAPTION_GAP if captions else GAP if annotated else 0
    cell_w = max(tw, MIN_CAPTION_WIDTH) if captions else tw
    caption_lines = [_wrap(c, caption_font, cell_w, CAPTION_LINES) for c in captions] if captions else []
    caption_h = max(len(ls) for ls in caption_lines) * _line_h(caption_font) + PAD if captions else 0
    cell_h = th + caption_h
    row_lines = (
        [
            _wrap(r, label_font, MAX_ROW_LABEL_WIDTH, max(1, min(LABEL_LINES, th // _line_h(label_font))))
            for r in row_labels
        ]
        if row_labels
        else []
    )
    left = max(_width(ls, label_font) for ls in row_lines) + 2 * PAD if row_labels else 0
    col_lines = [_wrap(c, label_font, cell_w, LABEL_LINES) for c in col_labels] if col_labels else []
    head = max(len(ls) for ls in col_lines) * _line_h(label_font) + PAD if col_labels else 0
    grid_w = columns * cell_w + (columns - 1) * gap
    margin = PAD if annotated else 0
    width = margin + left + grid_w + margin
    title_lines = _wrap(title, title_font, width - 2 * PAD, TITLE_LINES) if title else []
    title_h = len(title_lines) * _line_h(title_font) + PAD if title else 0
    top = margin + title_h + head
    height = top + rows * cell_h + (rows - 1) * gap + margin

    canvas = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(canvas)
    _lines(draw, title_lines, title_font, margin, margin, width - 2 * margin, INK, align="left")
    x0 = margin + left
    for c, ls in enumerate(col_lines):  # bottom-aligned over their column, centred
        y = top - PAD // 2 - len(ls) * _line_h(label_font)
        _lines(draw, ls, label_font, x0 + c * (cell_w + gap), y, cell_w, INK)
    for r, ls in enumerate(row_lines):  # right-aligned beside their row, centred on the image
        y = top + r * (cell_h + gap) + (th - len(ls) * _line_h(label_font)) // 2
        _lines(draw, ls, label_font, margin, y, left - PAD, INK, align="right")
    for i, tile in enumerate(tiles):
        x, y = x0 + (i % columns) * (cell_w + gap), top + (i // columns) * (cell_h + gap)
        if tile is None:
            draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=EMPTY)
        else:
            canvas.paste(tile, (x + (cell_w - tw) // 2, y))
        if captions:
            _lines(draw, caption_lines[i], caption_font, x, y + th + PAD // 2, cell_w, MUTED)
    return canvas


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size` px (Pillow >= 10.1 with FreeType), else its fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no size argument
        return ImageFont.load_default()


@functools.lru_cache(maxsize=4096)
def _has_glyph(font, ch: str) -> bool:
    """Whether `font` draws `ch` (the bundled font covers about ASCII; others draw as an empty box)."""
    if not isinstance(font, ImageFont.FreeTypeFont):
        return ch.isprintable() and ord(ch) < 256

    def ink(c: str) -> bytes:
        img = Image.new("L", (3 * font.size, 2 * font.size))
        ImageDraw.Draw(img).text((0, 0), c, font=font, fill=255)
        return img.tobytes()

    return ink(ch) != ink("\U0010fffd")


def _line_h(font) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent + 2


def _width(lines: list[str], font) -> int:
    return int(max((font.getlength(line) for line in lines), default=0))


_PLAIN = {
    "\u2010": "-",
    "\u2011": "-",
    "\u2012": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u2212": "-",
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u00d7": "x",
    "\u2026": "...",
}


def _drawable(text: str, font) -> str:
    """One line of plain text: whitespace and control characters collapsed; a character the font lacks becomes its
    unaccented letter or plain punctuation where there is one (é -> e, — -> -), else "?"."""
    out = []
    for ch in " ".join("".join(c if c.isprintable() else " " for c in str(text)).split()):
        if ch == " " or _has_glyph(font, ch):
            out.append(ch)
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        if base and base != ch and all(_has_glyph(font, c) for c in base):
            out.append(base)
        else:
            out.append(_PLAIN.get(ch, "?"))
    return "".join(out)


def _wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """`text` wrapped on words into lines at most `width` px wide (a word wider than a line is split); beyond
    `max_lines` the last line ends with an ellipsis."""
    ellipsis = "\u2026" if _has_glyph(font, "\u2026") else "..."
    fits = lambda s: font.getlength(s) <= width  # noqa: E731
    lines: list[str] = []
    for word in _drawable(text, font).split(" "):
        if lines and fits(f"{lines[-1]} {word}"):
            lines[-1] = f"{lines[-1]} {word}"
            continue
        while word and not fits(word):  # split a long word at the most characters that fit
            n = max(1, max((k for k in range(1, len(word) + 1) if fits(word[:k])), default=1))
            lines.append(word[:n])
            word = word[n:]
        if word:
            lines.append(word)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and not fits(last + ellipsis):
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last.rstrip() + ellipsis]
    return lines or [""]


def _lines(
    draw: ImageDraw.ImageDraw, lines: list[str], font, x: int, y: int, width: int, fill, align: str = "center"
) -> None:
    for i, line in enumerate(lines):
        w = font.getlength(line)
        dx = (width - w) / 2 if align == "center" else width - w if align == "right" else 0
        draw.text((x + max(0, dx), y + i * _line_h(font)), line, font=font, fill=fill)
