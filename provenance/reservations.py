"""Machine-readable reservations inside an image's bytes, read the same way whatever source the image came from
(folder, WebDataset shard, Parquet, URL): `reservation(data, where)` is the one entry point, called by the ingest
stage for every image it reads (stages/ingest.py). It lives in provenance/ because reading C2PA is c2pa's job and
c2pa is imported only here and in provenance/signing.py; the sources in atelier/ stay free of it.

What reserves a work, checked in this order (the first found is the reason recorded):
- C2PA / CAWG `c2pa.training-mining` or `cawg.training-mining` assertions (also versioned `.v2` and instance `__1`
  labels) in any manifest of the embedded manifest store: an entry (`cawg.ai_training`, `cawg.ai_generative_training`,
  `cawg.data_mining`, `cawg.ai_inference`, the c2pa.* equivalents, or any other) whose `use` is anything but
  "allowed" ("notAllowed", "constrained": we cannot check constraints) -> `opted_out:c2pa_training_mining`, whether
  or not the signer is trusted or the manifest valid: a reservation is honoured however it was written.
- A manifest store that is there but cannot be read, or that the reader judges `Invalid` (tampered, malformed), and
  says nothing we can honour -> `rights_undetermined:c2pa_unreadable`: fail closed, not counted as an opt-out (as a
  robots.txt that cannot be fetched). An intact manifest from an untrusted signer is read like any other.
- IPTC / PLUS `plus:DataMining` in an XMP packet (namespace http://ns.useplus.org/ldf/xmp/1.0/, any prefix): a value
  of the PLUS vocabulary other than `DMI-UNSPECIFIED` and `DMI-ALLOWED` (every `DMI-PROHIBITED*`, and values we do not
  know: fail closed) -> `opted_out:xmp_data_mining`. `plus:OtherConstraints` is free text and is not read.
- A `noai` / `noimageai` marker in metadata text -> `opted_out:noai_metadata`. The rule (`noai_marker`), so that
  ordinary prose does not opt a work out: a text is split at commas, semicolons and line breaks, and one item, once
  trimmed, is exactly `noai` or `noimageai` (any case), optionally after one `name:` prefix (`robots: noai`,
  `AtelierBot: noimageai`) or a `#`; or the text holds the hashtag `#noai` / `#noimageai` as a word. So "noai",
  "noindex, NoAI", "XPKeywords: art;noai" and "Sunset. #NoAI" opt out; "no AI was used", "Noaidi", "noairbrush"
  and ".../noai/pic.jpg" do not. Texts read: every text value of an XMP packet; PNG tEXt/zTXt/iTXt chunks; JPEG
  comments; EXIF ImageDescription, Artist, Copyright, UserComment and the Windows XPTitle/XPComment/XPKeywords/
  XPSubject (in JPEG APP1, PNG eXIf and WebP EXIF).

Cheap first: the bytes are walked only as far as their metadata (PNG chunk headers, JPEG segments before the scan,
WebP chunk headers), and scanned once for the C2PA manifest-store UUID and once for an XMP packet. Only an image that
has a manifest store pays for the C2PA reader; only a packet that mentions DataMining or a noai-like word is parsed;
only an EXIF block or text chunk holding a noai-like byte pattern is decoded. Remote manifests are not fetched.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from dataclasses import dataclass, field
from xml.etree import ElementTree

# The UUID of a C2PA manifest store's JUMBF description box ("c2pa" + 0011-0010-8000-00AA00389B71): in every embedding
C2PA_STORE_UUID = bytes.fromhex("6332706100110010800000aa00389b71")
TRAINING_MINING_LABELS = ("c2pa.training-mining", "cawg.training-mining")
C2PA_SETTINGS = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
XMP_START, XMP_END = b"<x:xmpmeta", b"</x:xmpmeta>"
PLUS_NS = "http://ns.useplus.org/ldf/xmp/1.0/"
RDF_RESOURCE = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource"
DMI_NOT_RESERVED = {"DMI-UNSPECIFIED", "DMI-ALLOWED"}
# a byte pattern any noai marker contains (UTF-16 too, as in EXIF XP* fields): the gate before decoding anything
NOAI_BYTES = re.compile(rb"(?i)n\x00?o\x00?(?:i\x00?m\x00?a\x00?g\x00?e\x00?)?a\x00?i")
NOAI_ITEM = re.compile(r"(?:[\w.*-]+\s*:\s*)?#?(noai|noimageai)", re.IGNORECASE)
NOAI_HASHTAG = re.compile(r"(?<![\w#])#(noai|noimageai)(?!\w)", re.IGNORECASE)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_LIMIT = 1 << 20  # a compressed PNG text chunk is inflated to at most this many bytes
EXIF_TEXT_TAGS = {
    0x010E: "ImageDescription",
    0x013B: "Artist",
    0x8298: "Copyright",
    0x9C9B: "XPTitle",
    0x9C9C: "XPComment",
    0x9C9D: "XPAuthor",
    0x9C9E: "XPKeywords",
    0x9C9F: "XPSubject",
}
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286


@dataclass
class Embedded:
    """The metadata found in an image's bytes, undecoded."""

    c2pa: bool = False  # a C2PA manifest store is embedded
    xmp: list[bytes] = field(default_factory=list)  # XMP packets
    texts: list[tuple[str, bytes]] = field(default_factory=list)  # (where, text) that may hold a noai marker
    exif: list[bytes] = field(default_factory=list)  # EXIF blocks (TIFF header onwards) that may, too


def reservation(data: bytes, where: str) -> str | None:
    """The reservation the image bytes carry, as an ingest error "reason: detail" (`where` names the item), or None
    when nothing in them reserves the work."""
    found = embedded(data)
    if found.c2pa and (reason := c2pa_reservation(data, where)):
        return reason
    for packet in found.xmp:
        if reason := xmp_reservation(packet, where):
            return reason
    if not (found.texts or found.exif):
        return None
    for name, text in found.texts + [t for block in found.exif for t in exif_texts(block)]:
        if marker := noai_marker(text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text):
            return f"opted_out:noai_metadata: {where} has '{marker}' in its {name}"
    return None


# --- finding the metadata ------------------------------------------------------------------------------------------


def embedded(data: bytes) -> Embedded:
    """Where the image's metadata is: a C2PA store, XMP packets, text that may carry noai (cheap: headers only)."""
    found = Embedded(c2pa=data.find(C2PA_STORE_UUID) >= 0)
    start = data.find(XMP_START)
    while start >= 0:
        end = data.find(XMP_END, start)
        found.xmp.append(data[start : end + len(XMP_END)] if end >= 0 else data[start : start + TEXT_LIMIT])
        start = data.find(XMP_START, end) if end >= 0 else -1
    if data.startswith(PNG_SIGNATURE):
        _png(data, found)
    elif data.startswith(b"\xff\xd8"):
        _jpeg(data, found)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        _webp(data, found)
    return found


def _png(data: bytes, found: Embedded) -> None:
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            pos += 12 + length
            continue
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"caBX":
            found.c2pa = True
        elif kind == b"eXIf" and NOAI_BYTES.search(body):
            found.exif.append(body)
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            keyword, text = _png_text(kind, body)
            if keyword == "XML:com.adobe.xmp":
                if XMP_START not in body:  # compressed: the scan above could not see it
                    found.xmp.append(text)
            elif NOAI_BYTES.search(text):
                found.texts.append((f"PNG {kind.decode()} chunk '{keyword}'", text))
        elif kind == b"IEND":
            break
        pos += 12 + length


def _png_text(kind: bytes, body: bytes) -> tuple[str, bytes]:
    """(keyword, text bytes) of a PNG text chunk; compressed text is inflated up to TEXT_LIMIT bytes."""
    keyword, _, rest = body.partition(b"\x00")
    compressed = kind == b"zTXt"
    if kind == b"zTXt":
        rest = rest[1:]
    elif kind == b"iTXt":
        compressed = rest[:1] == b"\x01"
        rest = rest[2:].split(b"\x00", 2)[-1]  # after the language tag and the translated keyword
    if compressed:
        try:
            rest = zlib.decompressobj().decompress(rest, TEXT_LIMIT)
        except zlib.error:
            rest = b""
    return keyword.decode("latin-1"), rest


def _jpeg(data: bytes, found: Embedded) -> None:
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: the metadata is before
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker in (0xE1, 0xEB, 0xFE):  # APP1 (EXIF), APP11 (JUMBF), comment: the only segments read
            body = data[pos + 4 : pos + 2 + length]
            if marker == 0xE1 and body.startswith(b"Exif\x00\x00") and NOAI_BYTES.search(body):
                found.exif.append(body[6:])
            elif marker == 0xEB and body[:2] == b"JP" and b"c2pa" in body:  # a JUMBF box holding a C2PA store
                found.c2pa = True
            elif marker == 0xFE and NOAI_BYTES.search(body):
                found.texts.append(("JPEG comment", body))
        pos += 2 + length


def _webp(data: bytes, found: Embedded) -> None:
    pos = 12
    while pos + 8 <= len(data):
        kind, length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"C2PA":
            found.c2pa = True
        elif kind == b"EXIF" and NOAI_BYTES.search(body):
            found.exif.append(body[6:] if body.startswith(b"Exif\x00\x00") else body)
        pos += 8 + length + (length & 1)


# --- reading each kind -----------------------------------------------------------------------------------------------


def c2pa_reservation(data: bytes, where: str) -> str | None:
    """The error for a C2PA/CAWG training-and-mining assertion that does not allow training, or for a manifest store
    that is there but unreadable or invalid; None for an intact manifest that reserves nothing."""
    import c2pa  # only for the few images that carry a manifest store

    try:
        with c2pa.Context.from_dict(C2PA_SETTINGS) as context:
            reader = c2pa.Reader.try_create(_mime_type(data), io.BytesIO(data), None, context)
            if reader is None:
                store, state = None, None
            else:
                with reader:
                    store, state = json.loads(reader.json()), reader.get_validation_state()
    except c2pa.C2paError as exc:
        return (
            f"rights_undetermined:c2pa_unreadable: {where} carries a C2PA manifest store that cannot be read "
            f"({exc}), so its training terms are unknown"
        )
    if store is None:
        return (
            f"rights_undetermined:c2pa_unreadable: {where} carries a C2PA manifest store that the reader does not "
            "find, so its training terms are unknown"
        )
    for manifest in (store.get("manifests") or {}).values():
        for assertion in manifest.get("assertions") or []:
            label = str(assertion.get("label", ""))
            if not label.startswith(TRAINING_MINING_LABELS):
                continue
            entries = (assertion.get("data") or {}).get("entries") or {}
            for name, entry in entries.items():
                use = entry.get("use") if isinstance(entry, dict) else None
                if use != "allowed":
                    return (
                        f"opted_out:c2pa_training_mining: C2PA assertion '{label}' says '{name}' is '{use}' in {where}"
                    )
    if state == "Invalid":
        codes = sorted({s.get("code", "?") for s in store.get("validation_status") or []})
        return (
            f"rights_undetermined:c2pa_unreadable: {where} carries a C2PA manifest that is invalid "
            f"({', '.join(codes)}), so its training terms cannot be believed"
        )
    return None


def xmp_reservation(packet: bytes, where: str) -> str | None:
    """The error for a PLUS DataMining prohibition or a noai marker in one XMP packet, or None."""
    mining, noai = b"DataMining" in packet, NOAI_BYTES.search(packet)
    if not (mining or noai):
        return None
    try:
        root = ElementTree.fromstring(packet)
    except ElementTree.ParseError:
        return _unparsed_xmp(packet, where)
    key = f"{{{PLUS_NS}}}DataMining"
    for element in root.iter():
        values = [element.get(key)]
        if element.tag == key:
            values += [element.text, element.get(RDF_RESOURCE)]
        for value in filter(None, (v.strip() if v else v for v in values)):
            if value.rsplit("/", 1)[-1] not in DMI_NOT_RESERVED:
                return f"opted_out:xmp_data_mining: XMP plus:DataMining is '{value}' in {where}"
        if noai:
            for text in [element.text, *element.attrib.values()]:
                if text and (marker := noai_marker(text)):
                    return f"opted_out:noai_metadata: {where} has '{marker}' in its XMP ({_local(element.tag)})"
    return None


def _unparsed_xmp(packet: bytes, where: str) -> str | None:
    """An XMP packet that is not well-formed XML: its DataMining values and texts, found by pattern."""
    text = packet.decode("utf-8", errors="replace")
    for value in re.findall(r"DataMining(?:\s*=\s*[\"']([^\"']*)|[^>]*?resource\s*=\s*[\"']([^\"']*)|>([^<]*)<)", text):
        value = "".join(value).strip()
        if value and value.rsplit("/", 1)[-1] not in DMI_NOT_RESERVED:
            return f"opted_out:xmp_data_mining: XMP (not well-formed) plus:DataMining is '{value}' in {where}"
    for piece in re.findall(r">([^<>]+)<|=\s*\"([^\"]*)\"", text):
        if marker := noai_marker("".join(piece)):
            return f"opted_out:noai_metadata: {where} has '{marker}' in its XMP (not well-formed)"
    return None


def exif_texts(block: bytes) -> list[tuple[str, str]]:
    """(EXIF tag name, text) of the EXIF text fields that may carry a noai marker; [] when the block is unreadable."""
    from PIL import Image

    exif = Image.Exif()
    try:
        exif.load(block)
        tags = {**dict(exif), **exif.get_ifd(EXIF_IFD)}
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for broken EXIF; the clean stage judges the image
        return []
    out = []
    for tag, name in [*EXIF_TEXT_TAGS.items(), (USER_COMMENT, "UserComment")]:
        value = tags.get(tag)
        if isinstance(value, (bytes, tuple)):
            raw = bytes(value)
            if tag == USER_COMMENT:  # an 8-byte character code, then the text
                code, raw = raw[:8], raw[8:]
                value = raw.decode("utf-16" if code.startswith(b"UNICODE") else "latin-1", errors="replace")
            else:  # the Windows XP* fields are UTF-16LE
                value = raw.decode("utf-16-le", errors="replace")
        if isinstance(value, str) and value.strip("\x00 "):
            out.append((f"EXIF {name}", value.replace("\x00", "")))
    return out


def noai_marker(text: str) -> str | None:
    """The `noai`/`noimageai` marker in a metadata text, as written, or None (rule in the module docstring)."""
    for item in re.split(r"[,;\r\n]", text):
        if NOAI_ITEM.fullmatch(item.strip()):
            return item.strip()
    if match := NOAI_HASHTAG.search(text):
        return match.group(0)
    return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _mime_type(data: bytes) -> str | None:
    if data.startswith(PNG_SIGNATURE):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None  # let the SDK detect it
