"""Decoding an image's bytes safely, as the clean stage does: accepted formats only, bounded pixels, EXIF
orientation applied, any mode flattened to RGB, a perceptual hash, faces counted (and blurred when asked), then
resized and centre-cropped to the training resolution with every piece of metadata stripped.

Used by the clean stage for every record, and by the operator commands that match a picture to records (takedown,
forget): both must see the same image and the same perceptual hash.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from atelier import faces as face_policy
from atelier.config import CleanParams

ORIENTATION = 0x0112  # the EXIF tag
# A JPEG is decoded at reduced scale down to this side, never smaller: the perceptual hash (32x32 DCT) of a
# 128 px or larger image does not depend on the decode scale, so near duplicates match across formats and sizes.
DRAFT_MIN_SIDE = 128
PHASH_FROM = 64  # the perceptual hash is computed from a copy box-reduced to at least this side
# Only these Pillow decoders ever see a file: never EPS (it runs Ghostscript on the file), PSD, ICO and the rest.
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG includes camera MPO files
NOT_IMAGES = [
    (b"PK\x03\x04", "a ZIP archive (or a document packed as one)"),
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript file"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x7fELF", "a program (ELF)"),
    (b"MZ", "a Windows program"),
]


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
    faces: int = 0  # faces found in the decoded image
    blurred: int = 0  # faces blurred in `image`


def unsupported_kind(data: bytes) -> str | None:
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


def to_rgb(img: Image.Image) -> Image.Image:
    """Flatten transparency onto white and bring any mode (P, 1, L, I;16, I, F, CMYK, LAB...) to RGB."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(flat, rgba)
    if img.mode == "I;16" or img.mode.startswith("I"):
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def decode(data: bytes, p: CleanParams, blur: bool = False) -> CleanImage:
    """Decode and normalise one image, or raise Rejected with the reason; count its faces and, when `blur`, blur
    them in the training copy."""
    if not data:
        raise Rejected("empty_file", "the file has zero bytes")
    previous_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, p.max_pixels  # Pillow's limit is global:
    try:  # set it for this decode only
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # An animated GIF, WebP or PNG opens at its first frame, the artwork; frames are never counted (a
            # hostile file can hold millions).
            img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            fmt = img.format or "unknown"
            if fmt == "PNG":  # verify() checks every chunk's CRC; Pillow implements it for PNG only
                with Image.open(io.BytesIO(data), formats=("PNG",)) as probe:
                    probe.verify()
            width, height = img.size
            if fmt == "JPEG":  # let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers what we need
                side = max(p.resolution, DRAFT_MIN_SIDE, face_policy.DETECT_MIN_SIDE)
                img.draft("RGB", (side, side))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected("decompression_bomb", f"exceeds clean.max_pixels={p.max_pixels}: {exc}") from None
    except Image.UnidentifiedImageError:
        what = unsupported_kind(data)
        if what is not None:
            raise Rejected("unsupported_format", f"the file is {what}") from None
        raise Rejected("undecodable", f"not a {', '.join(ACCEPTED_FORMATS)} image (first bytes {data[:8]!r})") from None
    except Exception as exc:  # Pillow raises many types for broken files
        message = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the file", str(exc))
        if isinstance(exc, ValueError) and "Decompressed data too large" in message:  # a zTXt/iCCP text bomb
            raise Rejected("decompression_bomb", f"a compressed metadata chunk expands too far: {message}") from None
        raise Rejected(
            "undecodable", f"{type(exc).__name__}: {message or 'no detail'} (the data is truncated or corrupt)"
        ) from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    try:
        if img.getexif().get(ORIENTATION) in (5, 6, 7, 8):  # stored sideways: the artwork is height x width
            width, height = height, width
        img = ImageOps.exif_transpose(img)
        if min(width, height) < p.min_size:
            raise Rejected("too_small", f"{width}x{height} is below clean.min_size={p.min_size}")
        rgb = to_rgb(img)
    except Rejected:
        raise
    except Exception as exc:  # a mode or an EXIF block that Pillow decodes but cannot convert
        raise Rejected(
            "undecodable", f"{fmt} {img.mode} image cannot be converted to RGB: {type(exc).__name__}: {exc}"
        ) from None
    import imagehash  # here, not at the top: an incremental run that decodes nothing does not pay for scipy

    factor = min(rgb.size) // PHASH_FROM  # the hash looks at 32x32: a box-reduced copy gives the same hash, faster
    phash = str(imagehash.phash(rgb.reduce(factor) if factor >= 2 else rgb))
    boxes = face_policy.detect(rgb)  # at the decoded image's own size (bounded), not the small training copy
    if blur and boxes:
        rgb = face_policy.blur(rgb, boxes)
    scale = p.resolution / min(rgb.size)
    resized = rgb.resize(
        (max(p.resolution, round(rgb.width * scale)), max(p.resolution, round(rgb.height * scale))),
        Image.LANCZOS,
        reducing_gap=2.0,
    )  # box-reduce first when 2x or more larger: same look, faster
    left = (resized.width - p.resolution) // 2
    top = (resized.height - p.resolution) // 2
    cropped = resized.crop((left, top, left + p.resolution, top + p.resolution))
    stripped = Image.frombytes("RGB", cropped.size, cropped.tobytes())  # a fresh image: no EXIF, GPS, ICC or text
    return CleanImage(stripped, width, height, fmt, phash, len(boxes), len(boxes) if blur else 0)


def decode_record(data: bytes, p: CleanParams, blur: bool = False) -> tuple[dict, Image.Image | None]:
    """The decode result of one record's bytes ({width, height, format, phash, faces, blurred} or {reason, detail})
    and its image."""
    try:
        img = decode(data, p, blur)
    except Rejected as r:
        return {"reason": r.reason, "detail": r.detail}, None
    return {
        "width": img.width,
        "height": img.height,
        "format": img.format,
        "phash": img.phash,
        "faces": img.faces,
        "blurred": img.blurred,
    }, img.image
