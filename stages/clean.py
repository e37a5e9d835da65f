"""clean stage: decode, check, normalise and de-duplicate raw records; every rejected record is kept with its reason.

Writes data/clean/images/<record_id>.png (RGB, EXIF orientation applied, all metadata stripped, resized and
centre-cropped to the training resolution), data/clean/records.parquet and data/clean/rejects.parquet.
"""

from __future__ import annotations

import io
import re
import warnings
from collections import Counter
from dataclasses import dataclass

import imagehash
import pandas as pd
from PIL import Image, ImageOps
from tqdm import tqdm

from atelier import paths
from atelier.config import CleanParams, load_params
from atelier.io import atomic_dir, write_parquet
from atelier.progress import progress_enabled

REJECT_COLUMNS = ["reason", "detail"]
# Only these Pillow decoders ever see a file: never EPS (it runs Ghostscript on the file), PSD, ICO and the rest.
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG includes camera MPO files
NOT_IMAGES = [(b"PK\x03\x04", "a ZIP archive (or a document packed as one)"), (b"%PDF", "a PDF document"),
              (b"%!PS", "a PostScript file"), (b"\x1f\x8b", "a gzip archive"), (b"7z\xbc\xaf", "a 7-Zip archive"),
              (b"Rar!", "a RAR archive"), (b"\x7fELF", "a program (ELF)"), (b"MZ", "a Windows program")]


class Rejected(Exception):
    """A record cannot be used; `reason` is a short code, `detail` says why in words."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class CleanImage:
    image: Image.Image  # RGB, resolution x resolution, no metadata
    width: int
    height: int
    format: str
    phash: str


def _unsupported(data: bytes) -> str | None:
    """What a file that is not an accepted image is (an SVG, HTML, a ZIP, an ICO...), or None if it is just noise."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "an SVG drawing (vector images are not accepted; export it as PNG)"
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if head.startswith(b"<?xml"):
        return "an XML document"
    for magic, what in NOT_IMAGES:
        if data.startswith(magic):
            return what
    try:  # a format Pillow knows but we do not decode: identify it from its header only, never load it
        with Image.open(io.BytesIO(data)) as other:
            return f"in {other.format} format (accepted: {', '.join(ACCEPTED_FORMATS)})"
    except Exception:
        return None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Flatten transparency onto white and bring any mode (P, 1, L, I;16, I, F, CMYK, LAB...) to RGB."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(flat, rgba)
    if img.mode == "I;16" or img.mode.startswith("I"):
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def decode(data: bytes, p: CleanParams) -> CleanImage:
    """Decode and normalise one image, or raise Rejected with the reason."""
    if not data:
        raise Rejected("empty_file", "the file has zero bytes")
    previous_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, p.max_pixels  # Pillow's limit is global:
    try:                                                                         # set it for this decode only
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as probe:
                probe.verify()
            # An animated GIF, WebP or PNG opens at its first frame, the artwork; frames are never counted (a
            # hostile file can hold millions).
            img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            fmt = img.format or "unknown"
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected("decompression_bomb", f"exceeds clean.max_pixels={p.max_pixels}: {exc}") from None
    except Image.UnidentifiedImageError:
        what = _unsupported(data)
        if what is not None:
            raise Rejected("unsupported_format", f"the file is {what}") from None
        raise Rejected("undecodable", f"not a {', '.join(ACCEPTED_FORMATS)} image (first bytes {data[:8]!r})"
                       ) from None
    except Exception as exc:  # Pillow raises many types for broken files
        message = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the file", str(exc))
        if isinstance(exc, ValueError) and "Decompressed data too large" in message:  # a zTXt/iCCP text bomb
            raise Rejected("decompression_bomb", f"a compressed metadata chunk expands too far: {message}") from None
        raise Rejected("undecodable", f"{type(exc).__name__}: {message or 'no detail'} (the data is truncated or "
                                      "corrupt)") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    try:
        img = ImageOps.exif_transpose(img)
        width, height = img.size
        if min(width, height) < p.min_size:
            raise Rejected("too_small", f"{width}x{height} is below clean.min_size={p.min_size}")
        rgb = _to_rgb(img)
    except Rejected:
        raise
    except Exception as exc:  # a mode or an EXIF block that Pillow decodes but cannot convert
        raise Rejected("undecodable", f"{fmt} {img.mode} image cannot be converted to RGB: {type(exc).__name__}: "
                                      f"{exc}") from None
    phash = str(imagehash.phash(rgb))
    scale = p.resolution / min(width, height)
    resized = rgb.resize((max(p.resolution, round(width * scale)), max(p.resolution, round(height * scale))),
                         Image.LANCZOS)
    left = (resized.width - p.resolution) // 2
    top = (resized.height - p.resolution) // 2
    cropped = resized.crop((left, top, left + p.resolution, top + p.resolution))
    stripped = Image.frombytes("RGB", cropped.size, cropped.tobytes())  # a fresh image: no EXIF, GPS, ICC or text
    return CleanImage(stripped, width, height, fmt, phash)


def clean_records(raw: pd.DataFrame, load_bytes, p: CleanParams, on_image=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw records into (clean, rejects). `load_bytes(record)` returns a record's bytes; `on_image(id, img)` saves."""
    kept, rejects = [], []
    seen_ids: dict[str, str] = {}
    seen_hashes: list[tuple[imagehash.ImageHash, str]] = []
    for record in tqdm(raw.to_dict("records"), desc="clean", disable=not progress_enabled()):
        try:
            if isinstance(record.get("ingest_error"), str):
                reason, _, detail = record["ingest_error"].partition(": ")
                raise Rejected(reason, detail)
            if record["record_id"] in seen_ids:
                raise Rejected("duplicate_exact", f"same bytes as {seen_ids[record['record_id']]}")
            try:
                data = load_bytes(record)
            except OSError as exc:  # the raw copy vanished or cannot be read: say so, keep the record
                raise Rejected("file_unreadable", f"raw copy {record.get('raw_path')}: {exc.strerror or exc}") from None
            img = decode(data, p)
            h = imagehash.hex_to_hash(img.phash)
            for other, other_uri in seen_hashes:
                if h - other <= p.near_duplicate_hamming:
                    raise Rejected("duplicate_near", f"perceptual hash within {h - other} bits of {other_uri}")
        except Rejected as r:
            rejects.append({**record, "reason": r.reason, "detail": r.detail})
            continue
        seen_ids[record["record_id"]] = record["source_uri"]
        seen_hashes.append((h, record["source_uri"]))
        if on_image is not None:
            on_image(record["record_id"], img.image)
        kept.append({**record, "width": img.width, "height": img.height, "format": img.format, "phash": img.phash,
                     "clean_path": paths.relative(paths.CLEAN_IMAGES / f"{record['record_id']}.png")})
    clean = pd.DataFrame(kept, columns=[*raw.columns, "width", "height", "format", "phash", "clean_path"])
    rejected = pd.DataFrame(rejects, columns=[*raw.columns, *REJECT_COLUMNS])
    return clean, rejected


def main() -> dict:
    """Clean data/raw into data/clean; return counts."""
    p = load_params().clean
    raw = pd.read_parquet(paths.RAW_RECORDS)
    # One commit point: the images and both tables replace data/clean together, so a run killed part way leaves the
    # previous data/clean (or none), never new images beside old tables.
    with atomic_dir(paths.CLEAN) as tmp:
        images_dir = tmp / paths.CLEAN_IMAGES.relative_to(paths.CLEAN)
        images_dir.mkdir()
        clean, rejects = clean_records(
            raw,
            load_bytes=lambda r: paths.absolute(r["raw_path"]).read_bytes(),
            p=p,
            on_image=lambda rid, img: img.save(images_dir / f"{rid}.png", format="PNG"),
        )
        write_parquet(tmp / paths.CLEAN_RECORDS.relative_to(paths.CLEAN), clean)
        write_parquet(tmp / paths.CLEAN_REJECTS.relative_to(paths.CLEAN), rejects)
    summary = {"clean": len(clean), "rejected": len(rejects),
               "rejects_per_reason": dict(Counter(rejects["reason"]))}
    print(f"clean: {len(clean)} kept, {len(rejects)} rejected {summary['rejects_per_reason']}")
    return summary


if __name__ == "__main__":
    main()
