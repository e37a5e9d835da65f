"""Content digests used across the pipeline and the provenance records."""

from __future__ import annotations

import hashlib
from pathlib import Path

import imagehash
from PIL import Image


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_digest(folder: Path) -> str:
    """One sha256 over every safetensors file of a model folder (sorted `relative/path:sha256` lines)."""
    folder = Path(folder)
    files = sorted(folder.rglob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors weights found")
    lines = "".join(f"{f.relative_to(folder)}:{file_sha256(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def pixels_sha256(image: Image.Image) -> str:
    """sha256 of an image's decoded RGB pixels (independent of the file's encoding and metadata)."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()


def phash(image: Image.Image) -> str:
    """64-bit perceptual hash as 16 hex digits."""
    return str(imagehash.phash(image.convert("RGB")))


def phash_distance(a: str | int, b: str | int) -> int:
    """Hamming distance between two 64-bit perceptual hashes given as hex strings or ints."""
    ia = int(a, 16) if isinstance(a, str) else int(a)
    ib = int(b, 16) if isinstance(b, str) else int(b)
    return bin(ia ^ ib).count("1")
