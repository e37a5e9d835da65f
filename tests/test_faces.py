"""Faces and personal data at clean time: blurred, excluded or kept by policy, and the record says so; the streaming
stage writes redacted text and blurred copies and nothing of the personal data into data/clean."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from atelier import faces
from atelier.config import CleanParams
from atelier.demo import STYLES, draw_artwork
from stages.clean import clean_records
from tests.workspace import copy_project, edit_params

skimage_data = pytest.importorskip("skimage.data", reason="the face photograph comes from scikit-image (dev extra)")

P = {"resolution": 64, "min_size": 64, "max_pixels": 10_000_000, "near_duplicate_hamming": 4}
EMAIL, PHONE = "jane.private@example.org", "+44 20 7946 0958"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def face_photo() -> bytes:
    """scikit-image's astronaut (a public-domain NASA portrait, one frontal face) as a 256 px JPEG."""
    buf = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).resize((256, 256), Image.LANCZOS).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _raw(face_photo: bytes, **extra) -> pd.DataFrame:
    pattern = _png(draw_artwork(STYLES[0], "blue", 64, random.Random(3)))
    return pd.DataFrame(
        [
            {
                "record_id": "face",
                "source_uri": "portrait.jpg",
                "ingest_error": None,
                "data": face_photo,
                "title": "Portrait",
                "creator": "A. Photographer",
                "caption": "a portrait",
                "license_raw": "CC-BY-4.0",
                "license_url": "",
                **extra,
            },
            {
                "record_id": "art",
                "source_uri": "grid.png",
                "ingest_error": None,
                "data": pattern,
                "title": "Grid",
                "creator": "Ada Moreno",
                "caption": f"a grid, ask {EMAIL} or call {PHONE}",
                "license_raw": "CC-BY-4.0",
                "license_url": "",
            },
        ]
    )


def _clean(raw: pd.DataFrame, **params):
    saved = {}
    clean, rejects = clean_records(
        raw, lambda r: r["data"], CleanParams(**P, **params), on_image=lambda rid, img: saved.update({rid: img})
    )
    return clean.set_index("record_id"), rejects, saved


def test_detector_finds_the_face_and_no_face_in_drawings(face_photo):
    assert len(faces.detect(Image.open(io.BytesIO(face_photo)).convert("RGB"))) == 1
    for seed in range(12):  # the demo's drawings (every style): no face
        assert faces.detect(draw_artwork(STYLES[seed % len(STYLES)], "red", 64, random.Random(seed))) == []


def test_blurred_in_the_training_copy_and_the_record_says_so(face_photo):
    clean, rejects, saved = _clean(_raw(face_photo))
    assert rejects.empty
    assert clean.loc["face", "faces"] == 1 and clean.loc["face", "face_action"] == "blurred"
    assert clean.loc["face", "privacy"] == "1 face blurred"
    _, _, kept = _clean(_raw(face_photo), faces="keep")
    blurred, original = np.asarray(saved["face"], float), np.asarray(kept["face"], float)
    box = faces.detect(Image.open(io.BytesIO(face_photo)).convert("RGB"))[0]
    left, t, r, b = (round(v * 64 / 256) for v in box)  # the face box in the 64 px training copy
    assert np.abs(blurred[t:b, left:r] - original[t:b, left:r]).mean() > 10  # the face changed
    assert np.abs(blurred[:, :8] - original[:, :8]).mean() < 1  # the far left edge did not
    assert (
        np.asarray(saved["face"])[t:b, left:r].std(axis=(0, 1)).mean() < original[t:b, left:r].std(axis=(0, 1)).mean()
    )
    assert clean.loc["art", "faces"] == 0 and pd.isna(clean.loc["art", "face_action"])


def test_excluded_by_policy_with_its_reason(face_photo):
    clean, rejects, _ = _clean(_raw(face_photo), faces="exclude")
    assert list(clean.index) == ["art"]
    assert list(rejects["reason"]) == ["faces"] and "1 face detected" in rejects["detail"].iloc[0]


def test_model_release_and_historical_exemptions(face_photo):
    clean, _, _ = _clean(_raw(face_photo, model_release="yes"), faces="exclude")
    assert clean.loc["face", "face_action"] == "kept_model_release"
    assert clean.loc["face", "privacy"] == "1 face kept (model release recorded)"
    pd_mark = {"historical": True, "license_raw": "Public Domain Mark 1.0"}
    clean, _, _ = _clean(_raw(face_photo, **pd_mark))
    assert clean.loc["face", "face_action"] == "kept_historical"
    clean, _, _ = _clean(_raw(face_photo, historical=True))  # CC BY: the flag alone does not exempt
    assert clean.loc["face", "face_action"] == "blurred"
    assert faces.exemption({"consent": "false"}) is None and faces.exemption({}) is None


def test_text_redacted_and_recorded(face_photo):
    clean, _, _ = _clean(_raw(face_photo))
    assert clean.loc["art", "caption"] == "a grid, ask [email] or call [phone]"
    assert clean.loc["art", "redacted"] == "caption:email=1,phone=1"
    assert clean.loc["art", "privacy"] == "caption: 1 email, 1 phone redacted"
    assert clean.loc["face", "redacted"] == "" and clean.loc["art", "creator"] == "Ada Moreno"


def test_the_stage_writes_redacted_text_and_blurred_copies_only(tmp_path, face_photo):
    """The real ingest and clean stages on a folder source: records.parquet holds the redacted caption and the
    face's count and action; no byte of the e-mail address or phone number is anywhere in data/clean."""
    root = copy_project(tmp_path / "ws")
    source = root / "data" / "sources" / "demo"  # the declared source's folder, holding our two files
    source.mkdir(parents=True)
    (source / "portrait.jpg").write_bytes(face_photo)
    (source / "grid.png").write_bytes(_png(draw_artwork(STYLES[2], "green", 64, random.Random(9))))
    mirrored = io.BytesIO()  # another picture of the same sitter, who signed a model release
    Image.open(io.BytesIO(face_photo)).transpose(Image.FLIP_LEFT_RIGHT).save(mirrored, "JPEG", quality=90)
    (source / "released.jpg").write_bytes(mirrored.getvalue())
    rows = [
        {
            "file_name": "portrait.jpg",
            "title": "Portrait",
            "creator": "A. Photographer",
            "caption": "a portrait of a woman",
            "license": "CC-BY-4.0",
        },
        {
            "file_name": "released.jpg",
            "title": "Portrait, released",
            "creator": "A. Photographer",
            "caption": "a portrait of a woman, mirrored",
            "license": "CC-BY-4.0",
            "model_release": "yes",
        },
        {
            "file_name": "grid.png",
            "title": f"Grid (contact {EMAIL})",
            "creator": "Ada Moreno",
            "caption": f"green stripes, call {PHONE}",
            "license": "CC-BY-4.0",
        },
    ]
    (source / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    edit_params(root, engine={"workers": 1}, clean={"resolution": 32, "min_size": 32})
    for stage in ("ingest", "clean"):
        done = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    records = pq.read_table(root / "data" / "clean" / "records.parquet").to_pandas().set_index("source_uri")
    assert records.loc["portrait.jpg", "faces"] == 1 and records.loc["portrait.jpg", "privacy"] == "1 face blurred"
    assert records.loc["released.jpg", "face_action"] == "kept_model_release"  # read from the source's metadata
    assert records.loc["grid.png", "caption"] == "green stripes, call [phone]"
    assert records.loc["grid.png", "title"] == "Grid (contact [email])"
    assert records.loc["grid.png", "redacted"] == "caption:phone=1;title:email=1"
    needles = [EMAIL.encode(), PHONE.encode(), b"7946 0958", b"jane.private"]
    for path in (root / "data" / "clean").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n in data for n in needles), path


def test_the_dataset_card_and_the_audit_count_what_was_done(face_photo):
    from atelier import cards

    train = pd.DataFrame(
        [
            {
                "record_id": "a" * 64,
                "source": "demo",
                "creator": "Ada",
                "faces": 2,
                "face_action": "blurred",
                "redacted": "caption:email=1,phone=1",
            },
            {
                "record_id": "b" * 64,
                "source": "demo",
                "creator": "Ben",
                "faces": 1,
                "face_action": "kept_model_release",
                "redacted": "",
            },
            {
                "record_id": "c" * 64,
                "source": "demo",
                "creator": "Ada",
                "faces": 0,
                "face_action": None,
                "redacted": "title:phone=1",
            },
        ]
    )
    rejects = pd.DataFrame({"reason": ["faces", "duplicate_near", "faces"]})
    counts = cards.privacy_counts(train, rejects)
    assert counts == {
        "records_with_faces": 2,
        "faces_detected": 3,
        "records_faces_blurred": 1,
        "faces_blurred": 2,
        "records_faces_kept_model_release": 1,
        "records_faces_kept_historical": 0,
        "records_faces_kept_by_policy": 0,
        "records_excluded_for_faces": 2,
        "records_redacted": 2,
        "redactions_per_kind": {"email": 1, "phone": 2},
        "redactions_per_field": {"caption": 2, "title": 1},
    }
    words = cards._privacy_words(counts, CleanParams(**P))
    assert "2 faces blurred in 1 training copies" in words and "excluded for showing faces: 2" in words
    assert "email: 1; phone: 2" in words and "never redacted" in words
    assert cards._privacy_words(counts, CleanParams(**P)) == words  # deterministic: no clock, no order dependence
