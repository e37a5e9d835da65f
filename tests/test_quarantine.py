"""No published replica: an artwork whose replication check flags it is quarantined, never signed or published. The
training image is fed in as the generation (the champion's training set holds the very image its pipeline makes
for the prompt and seed), through the real make_artwork on a toy pipeline; the other direction publishes and signs.
The registry records the count on the version's run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from atelier import paths
from atelier.config import load_params
from atelier.gallery import write_gallery
from atelier.hashing import file_sha256, phash
from atelier.models.clip import encode_images
from atelier.models.latent_diffusion import to_pil
from provenance import credentials, ledger, signed_json
from provenance.keys import ensure_signing_identity
from registry import tracking
from stages import generate
from tests.test_models import clip_bundle, data, pipeline  # noqa: F401 (the toy CLIP and pipeline fixtures)

PROMPT_SEED = 3
NAME = load_params().registry.model_name


def record(i: int, image) -> dict:
    return {
        "record_id": f"{i:064x}",
        "title": f"work {i}",
        "source_uri": f"museum/{i}.png",
        "creator": f"Painter {i}",
        "license_spdx": "CC-BY-4.0",
        "source_url": None,
        "caption": "a work",
        "phash": phash(image),
    }


def champion(pipe, clip_model, images: list, tmp_path: Path, tags: dict | None = None) -> generate.Champion:
    """The champion make_artwork sees, holding `images` as its training set (the toy CLIP as its evaluator)."""
    train = pd.DataFrame([record(i, im) for i, im in enumerate(images)])
    tensors = torch.stack(
        [torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1) for im in images]
    )
    attribution = tmp_path / "ATTRIBUTION.md"
    attribution.write_text("# Attribution\n\n| work | creator |\n|---|---|\n| work 0 | Painter 0 |\n")
    summary = {
        "train_per_license": {"CC-BY-4.0": len(images)},
        "excluded_per_reason": {},
        "opt_outs_honoured": 0,
        "attribution_required": len(images),
        "attribution_creators": len(images),
    }
    info = {
        "name": NAME,
        "version": "7",
        "run_id": "0" * 32,
        "tags": {"dataset_md5": "0" * 32, "train_records": str(len(images)), **(tags or {})},
    }
    info["tags"].setdefault("weights_sha256", "f" * 64)
    credential = signed_json.sign(
        credentials.payload(info, summary, file_sha256(attribution), "test"), ensure_signing_identity()
    )
    champ = generate.Champion(
        pipe,
        info,
        tmp_path,
        "f" * 64,
        summary,
        attribution,
        train,
        encode_images(pipe.clip_model, tensors),
        clip_model,
        pipe.tokenizer,
        [],
        credential=credential,
    )
    champ.embedded = generate.ingredients(champ)
    return champ


def made_for(pipe, prompt: str):
    """The image the pipeline makes for `prompt` at PROMPT_SEED, as make_artwork asks for it."""
    return pipe([prompt], seed=PROMPT_SEED, steps=2, guidance=2.0, negative_prompt="")[0]


def test_a_training_image_as_the_generation_is_quarantined_not_published(pipeline, clip_bundle, data, tmp_path):
    images, captions = data
    copy = made_for(pipeline, captions[0])
    champ = champion(pipeline, clip_bundle[0], [copy, to_pil(images[1:2])[0]], tmp_path)
    out = tmp_path / "artworks"
    conn = ledger.open_ledger(tmp_path / "ledger.sqlite")
    held = generate.make_artwork(champ, captions[0], PROMPT_SEED, 2, 2.0, "", out, params=load_params(), conn=conn)

    assert held["quarantined"] and held["reason"].startswith("not published: possible replication")
    assert not list(out.glob("*.png")) and not list(out.glob("*.provenance.json"))  # nothing published
    sidecar = json.loads((out / "quarantine" / f"{held['id']}.quarantine.json").read_text())
    assert (out / held["file"]).is_file() and held["file"] == f"quarantine/{held['id']}.png"
    assert (sidecar["prompt"], sidecar["seed"], sidecar["model"]["version"]) == (captions[0], PROMPT_SEED, "7")
    assert sidecar["replication"]["flagged"] and sidecar["replication"]["phash_distance"] == 0
    first = sidecar["nearest_training_images"][0]
    assert (first["record_id"], first["creator"], first["license"], first["phash_distance"]) == (
        f"{0:064x}",
        "Painter 0",
        "CC-BY-4.0",
        0,
    ) and first["similarity"] > 0.99
    png = (out / held["file"]).read_bytes()
    assert b"c2pa" not in png and b"atelier.provenance" not in png  # unsigned, no manifest

    rows = ledger.refusals(conn, NAME)
    assert [(r["id"], r["prompt"], r["seed"], r["model_version"]) for r in rows] == [
        (held["id"], captions[0], PROMPT_SEED, "7")
    ]
    assert rows[0]["reason"] == held["reason"] and rows[0]["nearest"][0]["record_id"] == f"{0:064x}"
    assert ledger.by_model_version(conn, NAME) == []  # no artwork row: it was never published

    page = write_gallery(out, []).read_text()
    assert held["id"] not in page
    assert generate.summarise(held)["checks"]["replication"]["flagged"]


def test_an_artwork_unlike_its_training_images_is_signed_and_published(
    pipeline, clip_bundle, data, tmp_path, monkeypatch
):
    monkeypatch.setattr(paths, "LEDGER", tmp_path / "ledger.sqlite")
    images, captions = data
    others = to_pil(images[4:8])
    champ = champion(pipeline, clip_bundle[0], others, tmp_path, {"eval.replication_similarity_floor": "1.01"})
    out = tmp_path / "artworks"
    made = generate.make_artwork(champ, captions[0], PROMPT_SEED, 2, 2.0, "", out, params=load_params())
    assert not made["checks"]["replication"]["flagged"]
    assert (out / f"{made['id']}.png").is_file() and (out / f"{made['id']}.provenance.json").is_file()
    assert not (out / "quarantine").exists()
    conn = ledger.open_ledger(paths.LEDGER)
    assert ledger.get(conn, made["id"]) is not None and ledger.refusals(conn) == []


def test_an_old_ledger_gains_the_refusals_and_promotions_tables(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "ledger.sqlite")
    old.executescript(ledger.SCHEMA.split("CREATE TABLE IF NOT EXISTS refusals")[0] + "PRAGMA user_version = 1;")
    old.close()
    conn = ledger.open_ledger(tmp_path / "ledger.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == ledger.SCHEMA_VERSION
    assert ledger.refusals(conn) == [] and ledger.promotions(conn) == []


def test_quarantines_are_counted_on_the_versions_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    c = tracking.client()
    c.create_registered_model(NAME)
    run = c.create_run(c.create_experiment("quarantine-test", artifact_location=(tmp_path / "art").as_uri()))
    c.create_model_version(NAME, (tmp_path / "art").as_uri(), run_id=run.info.run_id)
    tracking.log_quarantine(NAME, "1", 2, 5)
    tracking.log_quarantine(NAME, "1", 1, 1)
    assert [m.value for m in c.get_metric_history(run.info.run_id, "generate_quarantined")] == [2.0, 1.0]
    assert [m.value for m in c.get_metric_history(run.info.run_id, "generate_published")] == [3.0, 0.0]
    assert tracking.get_version(NAME, "1")["tags"]["generate.quarantined"] == "3"
