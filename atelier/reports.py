"""Small report writers shared by the stages: loss curves as CSV (DVC plots), sample grids as PNG."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from atelier.io import write_bytes, write_text


def write_curve(path: Path, name: str, values: list[float]) -> None:
    """A `step,<name>` CSV that `dvc plots` and MLflow can both read."""
    rows = [f"step,{name}"] + [f"{i},{v:.6f}" for i, v in enumerate(values)]
    write_text(path, "\n".join(rows) + "\n")


def read_curve(path: Path) -> list[float]:
    """Values of a curve written by write_curve (empty when the file is missing)."""
    if not path.exists():
        return []
    return [float(line.split(",")[1]) for line in path.read_text().splitlines()[1:] if line]


def image_grid(images: list[Image.Image], columns: int, scale: int = 1) -> Image.Image:
    """Tile images (all the same size) into a grid, optionally upscaled with nearest neighbour."""
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * w, rows * h), (255, 255, 255))
    for i, img in enumerate(images):
        grid.paste(img, ((i % columns) * w, (i // columns) * h))
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST) if scale > 1 else grid


def save_png(path: Path, image: Image.Image) -> None:
    """Save a PNG atomically."""
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    write_bytes(path, buf.getvalue())
