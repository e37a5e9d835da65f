"""Content credentials: a signed artwork reads back Trusted with the local CA, and each kind of tampering is detected
with its own reason. Keys are made in temporary folders; nothing touches ~/.config."""

import base64
import copy
import io
import json
import stat
import struct
import zlib

import c2pa
import numpy as np
import pytest
from PIL import Image, ImageDraw

from atelier.hashing import phash, pixels_sha256
from provenance import watermark
from provenance.keys import SigningIdentity, create_signing_identity, ensure_signing_identity
from provenance.manifest import build_manifest
from provenance.png import png_with_manifest
from provenance.signing import artwork_terms, read_credentials, sign_png, write_signed
from tests.test_manifest import FACTS

PROMPT = "a blue concentric circles composition"


def artwork() -> Image.Image:
    """A 256 px artwork: a 32 px composition upscaled (nearest), like the generate stage's output."""
    img = Image.new("RGB", (32, 32), (90, 120, 160))
    draw = ImageDraw.Draw(img)
    colours = [(40, 60, 200), (200, 180, 60), (30, 140, 90), (170, 50, 120), (240, 240, 240)]
    for r, colour in zip(range(14, 0, -3), colours):
        draw.ellipse([16 - r, 16 - r, 16 + r, 16 + r], fill=colour)
    return img.resize((256, 256), Image.NEAREST)


def manifest_for(image: Image.Image) -> dict:
    """The sample manifest of tests/test_manifest.py for `image`: its digest and hash, a non-commercial licence in
    the training data (so the artwork's own terms say so), an attribution list not embedded."""
    sha = pixels_sha256(image)
    facts = copy.deepcopy(FACTS)
    facts["artwork"].update(
        id=sha[:16],
        file=f"{sha[:16]}.png",
        sha256_pixels=sha,
        phash=phash(image),
        watermark={"method": "dwtDctSvd", "id": None},
    )
    facts["artwork"]["generator"].update(prompt=PROMPT, seed=7)
    facts["model"].update(name="atelier-diffusion", weights_sha256="b" * 64)
    facts["data"].update(
        per_license={"CC0-1.0": 6, "CC-BY-NC-4.0": 4},
        attribution={"file": "attribution/m-v3.md", "sha256": "c" * 64, "works": 4, "creators": 2, "embedded": False},
        dataset_card={"sha256": None, "embedded": False},
    )
    facts["checks"]["clip_score"] = 0.8123
    facts["checks"]["nearest_training_images"][0]["record_id"] = "d" * 64
    return build_manifest(**facts)


@pytest.fixture(scope="module")
def identity(tmp_path_factory) -> SigningIdentity:
    return ensure_signing_identity(tmp_path_factory.mktemp("keys") / "signing")


@pytest.fixture(scope="module")
def other_identity(tmp_path_factory) -> SigningIdentity:
    return create_signing_identity(tmp_path_factory.mktemp("other") / "signing", subject="Someone else")


@pytest.fixture(scope="module")
def signed(identity):
    image = artwork()
    manifest = manifest_for(image)
    terms = artwork_terms(manifest)
    return sign_png(png_with_manifest(image, manifest), manifest, identity, terms), manifest, terms


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        out.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in parts
    )


def test_signed_artwork_is_trusted_with_our_ca_and_valid_without(signed, identity):
    png, manifest, terms = signed
    trusted = read_credentials(png, identity.ca_pem())
    assert trusted["state"] == "Trusted" and trusted["codes"] == []
    assert trusted["atelier"] == json.loads(json.dumps(manifest))
    [action] = trusted["actions"]
    assert action["action"] == "c2pa.created"
    assert action["digitalSourceType"] == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    assert trusted["training_mining"] == terms
    assert trusted["training_mining"]["cawg.ai_generative_training"] == {"use": "notAllowed"}
    assert trusted["signer"]["common_name"].startswith("Atelier")

    untrusted = read_credentials(png, None)
    assert untrusted["state"] == "Valid" and untrusted["codes"] == ["signingCredential.untrusted"]
    assert untrusted["atelier"] == trusted["atelier"]


def test_one_pixel_changed_after_signing_is_invalid(signed, identity):
    png = signed[0]
    pixels = np.array(Image.open(io.BytesIO(png)))
    pixels[100, 100, 0] ^= 1
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    new_idat = [c for c in chunks(buf.getvalue()) if c[0] == b"IDAT"]
    parts = [c for c in chunks(png) if c[0] != b"IDAT"]
    tampered = assemble(parts[:-1] + new_idat + parts[-1:])  # keeps the original caBX (manifest) chunk
    assert (np.array(Image.open(io.BytesIO(tampered))) != np.array(Image.open(io.BytesIO(png)))).sum() == 1
    got = read_credentials(tampered, identity.ca_pem())
    assert got["state"] == "Invalid" and "assertion.dataHash.mismatch" in got["codes"]


def test_edited_manifest_bytes_are_invalid(signed, identity):
    png = signed[0]
    parts = []
    for kind, data in chunks(png):
        if kind == b"caBX":  # the JUMBF manifest store; the PNG chunk CRC is recomputed, as a forger would
            assert PROMPT.encode() in data
            data = data.replace(PROMPT.encode(), PROMPT.replace("blue", "gold").encode())
        parts.append((kind, data))
    got = read_credentials(assemble(parts), identity.ca_pem())
    assert got["state"] == "Invalid" and "assertion.hashedURI.mismatch" in got["codes"]

    truncated = assemble([(k, d[:1000] if k == b"caBX" else d) for k, d in chunks(png)])
    broken = read_credentials(truncated, identity.ca_pem())
    assert broken["state"] == "Invalid" and broken["error"] and broken["atelier"] is None
    with pytest.raises(ValueError, match="not a readable asset"):
        read_credentials(png[: len(png) // 2], identity.ca_pem())


def test_file_signed_by_another_identity_is_not_trusted(identity, other_identity):
    image = artwork()
    manifest = manifest_for(image)
    png = sign_png(png_with_manifest(image, manifest), manifest, other_identity, artwork_terms(manifest))
    got = read_credentials(png, identity.ca_pem())
    assert got["state"] == "Valid" and got["codes"] == ["signingCredential.untrusted"]
    assert read_credentials(png, other_identity.ca_pem())["state"] == "Trusted"


def test_pillow_resave_strips_the_credentials(signed, identity):
    buf = io.BytesIO()
    Image.open(io.BytesIO(signed[0])).save(buf, format="PNG")
    got = read_credentials(buf.getvalue(), identity.ca_pem())
    assert got["state"] is None and got["atelier"] is None and got["codes"] == []


def test_write_signed_leaves_no_file_when_signing_fails(tmp_path, identity, other_identity):
    image = artwork()
    manifest = manifest_for(image)
    png, terms = png_with_manifest(image, manifest), artwork_terms(manifest)
    out = tmp_path / "out"
    write_signed(out / "ok.png", png, manifest, identity, terms)
    assert read_credentials(out / "ok.png", identity.ca_pem())["state"] == "Trusted"

    mismatched = SigningIdentity(
        folder=identity.folder, key=other_identity.key, chain=identity.chain, ca_cert=identity.ca_cert
    )
    with pytest.raises(c2pa.C2paError):
        write_signed(out / "bad.png", png, manifest, mismatched, terms)
    assert sorted(p.name for p in out.iterdir()) == ["ok.png"]


def test_signing_refuses_a_manifest_that_describes_other_pixels(identity):
    image = artwork()
    manifest = manifest_for(image)
    marked = image.copy()
    marked.putpixel((0, 0), (1, 2, 3))  # e.g. the watermark embedded after the hash was taken
    with pytest.raises(ValueError, match="sha256_pixels"):
        sign_png(png_with_manifest(marked, manifest), manifest, identity, artwork_terms(manifest))
    with pytest.raises(ValueError, match="training-mining terms"):
        sign_png(png_with_manifest(image, manifest), manifest, identity, {"cawg.ai_training": {"use": "maybe"}})


def test_key_files_are_private_and_the_key_is_never_embedded(signed, identity):
    assert stat.S_IMODE(identity.folder.stat().st_mode) == 0o700
    for path in identity.folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    key_pem = identity.key.read_bytes()
    body = b"".join(line for line in key_pem.splitlines() if not line.startswith(b"-----"))
    png = signed[0]
    assert key_pem not in png and body[:40] not in png and base64.b64decode(body) not in png
    assert b"PRIVATE KEY" not in png and "PRIVATE" not in repr(identity)


def test_identity_is_created_once_and_kept_out_of_the_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_SIGNING_DIR", str(tmp_path / "env-signing"))
    first = ensure_signing_identity()
    assert first.folder == tmp_path / "env-signing"
    chain, key = first.chain.read_bytes(), first.key.read_bytes()
    again = ensure_signing_identity()
    assert again == first and again.chain.read_bytes() == chain and again.key.read_bytes() == key
    first.key.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        ensure_signing_identity()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(PermissionError, match="chmod 700"):
        ensure_signing_identity(shared)
    from atelier import paths

    with pytest.raises(ValueError, match="outside the repository"):
        ensure_signing_identity(paths.ROOT / "keys")


def test_an_independent_c2pa_reader_sees_the_assertions(signed, identity):
    """No Atelier code: the c2pa SDK alone, with our CA as a user trust anchor."""
    context = c2pa.Context.from_dict(
        {"trust": {"user_anchors": identity.ca_cert.read_text()}, "verify": {"remote_manifest_fetch": False}}
    )
    with c2pa.Reader("image/png", io.BytesIO(signed[0]), context=context) as reader:
        assert reader.get_validation_state() == "Trusted"
        active = reader.get_active_manifest()
    labels = {a["label"]: a for a in active["assertions"]}
    assert {"c2pa.actions.v2", "cawg.training-mining", "org.atelier.provenance"} <= set(labels)
    assert all(a.get("created") for a in labels.values())
    assert labels["org.atelier.provenance"]["data"]["rights"]["ai_generated"] is True
    assert "thumbnail" not in active


def test_a_marked_artwork_declares_its_watermark_to_an_independent_reader(identity):
    """c2pa-python alone: the soft-binding assertion and the watermarked action are there, attributed to the signer,
    and validation has no failure (no softBindingMissing, no unsupported algorithm): Trusted under our CA."""
    image = artwork()
    manifest = manifest_for(image)
    manifest["artwork"]["watermark"]["id"] = 4_000_000_123
    png = sign_png(png_with_manifest(image, manifest), manifest, identity, artwork_terms(manifest))
    context = c2pa.Context.from_dict(
        {"trust": {"user_anchors": identity.ca_cert.read_text()}, "verify": {"remote_manifest_fetch": False}}
    )
    with c2pa.Reader("image/png", io.BytesIO(png), context=context) as reader:
        state = reader.get_validation_state()
        failures = reader.get_validation_results()["activeManifest"].get("failure", [])
        store = json.loads(reader.json())
    assert state == "Trusted" and failures == []
    labels = {a["label"]: a for a in store["manifests"][store["active_manifest"]]["assertions"]}
    binding = labels["c2pa.soft-binding"]
    assert binding["created"] and binding["data"]["alg"] == watermark.ALG == "local.atelier.watermark.2"
    assert binding["data"]["blocks"] == [{"scope": {}, "value": watermark.binding_value(4_000_000_123)}]
    assert watermark.id_from_binding(binding["data"]["blocks"][0]["value"]) == 4_000_000_123
    assert [a["action"] for a in labels["c2pa.actions.v2"]["data"]["actions"]] == [
        "c2pa.created",
        "c2pa.watermarked.bound",
    ]
    creds = read_credentials(png, identity.ca_pem())
    assert creds["state"] == "Trusted" and creds["codes"] == [] and creds["soft_binding"] == binding["data"]


def test_an_unmarked_artwork_declares_no_watermark(signed, identity):
    creds = read_credentials(signed[0], identity.ca_pem())
    assert creds["state"] == "Trusted" and creds["soft_binding"] is None
    assert [a["action"] for a in creds["actions"]] == ["c2pa.created"]
