"""The manifest inside the PNG: an iTXt chunk `atelier.provenance` holding the manifest JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, PngImagePlugin

CHUNK_KEY = "atelier.provenance"


def png_with_manifest(image: Image.Image, manifest: dict) -> bytes:
    """PNG bytes of `image` with the manifest in a compressed iTXt chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(CHUNK_KEY, json.dumps(manifest, sort_keys=True, ensure_ascii=False), zip=True)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_manifest(path: Path) -> dict | None:
    """The manifest embedded in a PNG, or None when there is none."""
    with Image.open(path) as img:
        img.load()
        text = img.text.get(CHUNK_KEY) if hasattr(img, "text") else None
    return json.loads(text) if text else None
