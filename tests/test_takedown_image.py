"""Takedown by picture, and a look before the takedown: a rights holder's copy of a work (here a resized JPEG
re-encode) finds every record of it in every source and its whole duplicate group, the model versions trained on
any of them and their artworks; `--dry-run` answers the same by picture, name or record id and writes nothing.

The workspace is built by code: raw, clean, reject and decode tables as the ingest and clean stages write them,
training data found by md5 in the DVC cache, a sqlite registry in a temporary folder, and a ledger."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from app import cli, takedown
from atelier import lineage, paths
from atelier.config import load_params
from atelier.images import decode
from provenance import ledger
from registry import tracking
from tests.test_ledger import manifest

NAME = load_params().registry.model_name
CLEAN = load_params().clean


def picture(seed: int) -> Image.Image:
    """A 256 px image of smooth random shapes, different for each seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((256, 256), Image.BICUBIC)


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def row(data: bytes, source: str, uri: str, creator: str) -> dict:
    return {
        "record_id": hashlib.sha256(data).hexdigest(),
        "source": source,
        "source_uri": uri,
        "title": uri,
        "creator": creator,
        "license_raw": "CC0-1.0",
    }


@pytest.fixture
def works(tmp_path, monkeypatch, empty_store) -> dict:
    """Ana's work from a museum, the same bytes again from a mirror and a JPEG copy from a scrape (both rejected by
    clean as duplicates), and Ben's work; version 1 trained on both kept works, version 2 on Ben's only."""
    for name in (
        "RAW_RECORDS",
        "CLEAN_RECORDS",
        "CLEAN_REJECTS",
        "CLEAN_DECODED",
        "TRAIN_RECORDS",
        "OPT_OUT",
        "LEDGER",
        "ROOT",
    ):  # ROOT last: the DVC cache (lineage.cache_path) follows it
        monkeypatch.setattr(paths, name, tmp_path / getattr(paths, name).relative_to(paths.ROOT))
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    ana_png = encoded(picture(1), "PNG")
    ana_jpeg = encoded(picture(1), "JPEG", quality=92)
    ben_png = encoded(picture(2), "PNG")
    ana, mirror, scrape, ben = (
        row(ana_png, "museum", "museum/ana.png", "Ana Ruiz"),
        row(ana_png, "mirror", "mirror/ana.png", "A. Ruiz"),
        row(ana_jpeg, "scrape", "scrape/ana.jpg", None),
        row(ben_png, "museum", "museum/ben.png", "Ben Ode"),
    )
    hashes = {r["record_id"]: decode(d, CLEAN).phash for r, d in ((ana, ana_png), (scrape, ana_jpeg), (ben, ben_png))}
    for p in (paths.RAW_RECORDS, paths.CLEAN_RECORDS):
        p.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([ana, mirror, scrape, ben]).to_parquet(paths.RAW_RECORDS)
    clean = pd.DataFrame([ana, ben]).assign(phash=lambda t: t["record_id"].map(hashes))
    clean.to_parquet(paths.CLEAN_RECORDS)
    pd.DataFrame(
        [
            {**mirror, "reason": "duplicate_exact", "detail": "same bytes as museum/ana.png"},
            {**scrape, "reason": "duplicate_near", "detail": "perceptual hash within 1 bits of museum/ana.png"},
        ]
    ).to_parquet(paths.CLEAN_REJECTS)
    pd.DataFrame([{"record_id": k, "phash": v} for k, v in hashes.items()]).to_parquet(paths.CLEAN_DECODED)

    c = tracking.client()
    c.create_registered_model(NAME)
    run = c.create_run(c.create_experiment("takedown-test", artifact_location=(tmp_path / "art").as_uri()))
    conn = ledger.open_ledger(paths.LEDGER)
    for version, trained in (("1", clean), ("2", clean[clean["creator"] == "Ben Ode"])):
        md5 = hashlib.md5(version.encode()).hexdigest()
        lineage.cache_path(md5).parent.mkdir(parents=True, exist_ok=True)
        trained.to_parquet(lineage.cache_path(md5))
        c.create_model_version(NAME, (tmp_path / "art").as_uri(), run_id=run.info.run_id)
        c.set_model_version_tag(NAME, version, "dataset_md5", md5)
        ledger.record(
            conn, manifest(f"art{version}", version=version) | {"model": {"name": NAME, "version": version}}, None
        )
    c.set_registered_model_alias(NAME, "champion", "1")
    cites = {"ana": ana["record_id"], "ben": ben["record_id"]}
    for artwork_id, who in (("art1-ana", "ana"), ("art1-ben", "ben")):  # version 1 artworks naming a nearest work
        made = manifest(artwork_id, version="1") | {"model": {"name": NAME, "version": "1"}}
        nearest = [{"record_id": cites[who], "similarity": 0.9}]  # where a manifest keeps them: under checks
        ledger.record(conn, made | {"checks": made.get("checks", {}) | {"nearest_training_images": nearest}}, None)
    ledger.record_refusal(
        conn,
        {
            "id": "q1".ljust(16, "0"),
            "sha256_pixels": "q1".ljust(64, "0"),
            "phash": "0" * 16,
            "prompt": "a copy",
            "seed": 1,
            "model": {"name": NAME, "version": "1"},
            "reason": "possible replication",
            "nearest_training_images": [{"record_id": ana["record_id"], "similarity": 0.99}],
            "created_at": "2026-12-01T00:00:00+00:00",
        },
    )
    conn.close()
    rights_holder_copy = tmp_path / "my-painting.jpg"  # smaller, re-encoded: not our bytes, nor the scrape's
    rights_holder_copy.write_bytes(encoded(picture(1).resize((180, 180), Image.LANCZOS), "JPEG", quality=80))
    return {
        "ana": ana["record_id"],
        "scrape": scrape["record_id"],
        "ben": ben["record_id"],
        "copy": rights_holder_copy,
        "ana_png": ana_png,
    }


def written(tmp_path: Path) -> dict:
    """What a takedown could change: the opt-out list, the registry's tags, the ledger's bytes."""
    return {
        "opt_out": paths.OPT_OUT.read_text() if paths.OPT_OUT.exists() else None,
        "tags": [tracking.get_version(NAME, v)["tags"] for v in ("1", "2")],
        "ledger": paths.LEDGER.read_bytes(),
    }


def test_a_resized_jpeg_of_a_work_finds_every_copy_and_the_versions_that_used_it(works, tmp_path, capsys):
    before = written(tmp_path)
    assert cli.main(["takedown", "--image", str(works["copy"]), "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert written(tmp_path) == before  # a look: nothing opted out, nothing tagged
    assert report["dry_run"] and report["kind"] == "image"
    assert sorted(report["record_ids"]) == sorted([works["ana"], works["scrape"]])
    assert {(m["source"], m["source_uri"]) for m in report["matches"]} == {
        ("museum", "museum/ana.png"),
        ("mirror", "mirror/ana.png"),
        ("scrape", "scrape/ana.jpg"),
    }
    assert [(v["version"], v["aliases"]) for v in report["versions"]] == [("1", ["champion"])]  # which is champion
    assert sorted(a["id"] for a in report["artworks"]) == ["art1", "art1-ana", "art1-ben"]  # all of version 1's
    assert [(a["id"], a["records"]) for a in report["citing"]] == [("art1-ana", [works["ana"]])]  # the ones citing it
    assert [a["id"] for a in report["quarantined_citing"]] == ["q1".ljust(16, "0")]  # quarantined ones too

    assert cli.main(["takedown", "--image", str(works["copy"]), "--reason", "request from Ana Ruiz"]) == 0
    out = capsys.readouterr().out
    assert "version 1" in out and "art1" in out and "2 record ids" in out
    opted = pd.read_csv(paths.OPT_OUT)
    assert set(opted.loc[opted["kind"] == "record_id", "value"]) == {works["ana"], works["scrape"]}
    assert "takedown" in tracking.get_version(NAME, "1")["tags"]
    assert "takedown" not in tracking.get_version(NAME, "2")["tags"]


def test_the_exact_bytes_match_and_an_unrelated_picture_matches_nothing(works, tmp_path):
    exact = tmp_path / "exact.png"
    exact.write_bytes(works["ana_png"])
    found = takedown.affected_by_image(exact)
    assert {m["match"] for m in found["matches"] if m["source"] == "museum"} == {"the same bytes"}
    other = tmp_path / "other.png"
    other.write_bytes(encoded(picture(7), "PNG"))
    nothing = takedown.takedown(image=other, dry_run=True)
    assert nothing["matches"] == [] and nothing["versions"] == [] and nothing["artworks"] == []
    said = takedown.format_report(nothing)  # a missed match is not stated as a fact about the models
    assert "no match found: searched every ingested record's sha256 and perceptual hash" in said
    assert "not proof that the work was not used" in said and "no registered model version was trained" not in said


def test_a_dry_run_by_name_or_record_id_writes_nothing(works, tmp_path, capsys):
    before = written(tmp_path)
    assert cli.main(["takedown", "ben ode", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Dry run" in out and "version 1" in out and "version 2" in out and "nothing was opted out" in out
    by_id = takedown.takedown(works["ben"], dry_run=True)
    assert [v["version"] for v in by_id["versions"]] == ["1", "2"] and by_id["opt_out_added"] is False
    assert written(tmp_path) == before


def test_takedown_needs_exactly_one_of_a_name_and_a_picture(works, capsys):
    assert cli.main(["takedown"]) == 2
    assert cli.main(["takedown", "Ana Ruiz", "--image", str(works["copy"])]) == 2
    assert cli.main(["takedown", "--image", str(works["copy"].with_name("missing.jpg"))]) == 2
    assert "one of them" in capsys.readouterr().err


def test_the_light_registry_read_equals_mlflows(works):
    """registry/lookup.py reads a version from the embedded store without MLflow: the same answer as MLflow's client
    (tags, aliases, run), and a LookupError for a version that does not exist."""
    from registry import lookup

    for version in ("1", "2"):
        assert lookup.get_version(NAME, version) == tracking.get_version(NAME, version)
    assert lookup.get_version(NAME, "1")["aliases"] == ["champion"]
    with pytest.raises(LookupError, match="no version 9"):
        lookup.get_version(NAME, "9")


def test_a_short_record_id_is_a_record_and_an_unknown_word_is_refused(works, tmp_path, capsys):
    """The short ids the tools print are record ids, never creator names; an argument that is neither a known record
    nor a known creator is refused (exit 2, nothing written) unless --creator says it is a name."""
    before = written(tmp_path)
    short = works["ana"][:12]
    assert cli.main(["takedown", short, "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "record_id" and report["target"] == works["ana"]
    assert [v["version"] for v in report["versions"]] == ["1"]
    for unknown in ("74b789d23d6d", "Nobody We Know"):
        assert cli.main(["takedown", unknown, "--reason", "a typo"]) == 2
        assert "neither a record id" in capsys.readouterr().err
    assert written(tmp_path) == before
    assert cli.main(["takedown", "Nobody We Know", "--creator", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "creator"
    assert cli.main(["takedown", "ben ode", "--dry-run", "--json"]) == 0  # a known creator, any spelling
    assert [v["version"] for v in json.loads(capsys.readouterr().out)["versions"]] == ["1", "2"]
