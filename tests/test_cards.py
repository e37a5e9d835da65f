"""The training set's card (Croissant 1.1 + RAI, validated by mlcroissant offline), its datasheet, and the model card
(Hugging Face front matter) logged to a real MLflow sqlite store: built from a toy licence stage run in tmp_path."""

from __future__ import annotations

import copy
import getpass
import json
import re
import shutil
import socket
from pathlib import Path

import mlcroissant as mlc
import pandas as pd
import pytest

from atelier import cards, paths
from atelier.io import write_parquet

OUTPUTS = ("TRAIN_RECORDS", "EXCLUDED_RECORDS", "ATTRIBUTION", "LICENSE_SUMMARY", "DATASET_CARD", "DATASHEET")
HEADLINE = {
    "guidance": 3.0,
    "retrieval_top1": 0.41,
    "real_retrieval_top1": 0.62,
    "chance_top1": 0.125,
    "retrieval_top5": 0.8,
    "real_retrieval_top5": 0.9,
    "chance_top5": 0.625,
    "clip_score": 0.71,
    "real_clip_score": 0.83,
    "clip_score_ratio": 0.855,
    "cmmd": 1.9,
    "cmmd_baseline": 0.7,
    "diversity": 0.3,
    "real_diversity": 0.35,
    "replication_rate": 0.0,
    "figures_beating_real": 0.0,
}


def _work(i: int, **kw) -> dict:
    return {
        "record_id": f"{i:064x}",
        "source": "demo",
        "source_uri": f"art_{i}.png",
        "row": i,
        "title": f"Work {i}",
        "creator": f"Creator {i % 3}",
        "caption": "a red grid composition",
        "license_raw": "CC-BY-4.0",
        "license_url": "",
        "source_url": f"https://example.invalid/{i}.png",
        "noai": False,
        "bytes": 100,
        "ingest_error": None,
        "width": 64,
        "height": 64,
        "format": "PNG",
        "phash": f"{i:016x}",
        "clean_path": "data/clean/packs/x.parquet",
        **kw,
    }


def run_license_stage(folder: Path, monkeypatch) -> Path:
    """Run stages.license.main on six toy works (one non-commercial, one opted out by its noai flag) with every
    input and output in `folder`; return the folder of its outputs."""
    from stages import license as stage

    folder.mkdir(parents=True, exist_ok=True)
    clean = pd.DataFrame(
        [
            _work(1),
            _work(2, license_raw="CC0-1.0"),
            _work(3, license_raw="CC-BY-SA-4.0"),
            _work(4, license_raw="Public Domain Mark 1.0"),
            _work(5, license_raw="CC-BY-NC-4.0"),
            _work(6, noai=True),
        ]
    )
    write_parquet(folder / "records.parquet", clean)
    write_parquet(
        folder / "rejects.parquet",
        pd.DataFrame({**{c: [] for c in clean.columns}, "reason": [], "detail": []}).astype(str),
    )
    monkeypatch.setattr(paths, "CLEAN_RECORDS", folder / "records.parquet")
    monkeypatch.setattr(paths, "CLEAN_REJECTS", folder / "rejects.parquet")
    monkeypatch.setattr(paths, "OPT_OUT", folder / "no-opt-outs.csv")
    out = folder / "licensed"
    for name in OUTPUTS:
        monkeypatch.setattr(paths, name, out / getattr(paths, name).name)
    stage.main()
    return out


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network used during validation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_the_license_stage_writes_a_card_that_mlcroissant_validates_offline(tmp_path, monkeypatch, offline):
    out = run_license_stage(tmp_path, monkeypatch)
    dataset = mlc.Dataset(jsonld=out / "croissant.json")
    card = json.loads((out / "croissant.json").read_text())
    assert card["conformsTo"] == [cards.CROISSANT, cards.CROISSANT_RAI]
    assert sorted(card["license"]) == sorted(
        [
            "https://spdx.org/licenses/CC-BY-4.0.html",
            "https://spdx.org/licenses/CC-BY-SA-4.0.html",
            "https://spdx.org/licenses/CC0-1.0.html",
            "https://creativecommons.org/publicdomain/mark/1.0/",
        ]
    )
    for key in (
        "rai:dataCollection",
        "rai:dataCollectionType",
        "rai:dataPreprocessingProtocol",
        "rai:personalSensitiveInformation",
        "rai:dataBiases",
        "rai:dataLimitations",
        "rai:dataUseCases",
        "rai:dataSocialImpact",
        "rai:dataReleaseMaintenancePlan",
        "prov:wasDerivedFrom",
        "prov:wasGeneratedBy",
        "prov:wasAttributedTo",
    ):
        assert card[key], key
    assert [s["name"] for s in card["prov:wasDerivedFrom"]] == ["demo"]
    generated = {p["name"]: p["value"] for p in card["prov:wasGeneratedBy"]["additionalProperty"]}
    assert generated["excluded.license_forbids:non_commercial"] == 1 and generated["opt_outs_honoured"] == 1
    assert generated["policy.commercial"] is True and generated["train_records"] == 4
    shas = {d["name"]: d["sha256"] for d in card["distribution"]}
    assert shas["train.parquet"] == cards.card_sha256(out / "train.parquet")
    assert shas["ATTRIBUTION.md"] == cards.card_sha256(out / "ATTRIBUTION.md")
    # the record set reads train.parquet: each work's creator and licence are in the card's records
    records = list(dataset.records(cards.RECORD_SET))
    by_id = {r["records/record_id"].decode(): r for r in records}
    assert len(records) == 4 and by_id[f"{3:064x}"]["records/license_spdx"] == b"CC-BY-SA-4.0"
    assert by_id[f"{3:064x}"]["records/creator"] == b"Creator 0"
    datasheet = (out / "DATASHEET.md").read_text()
    for section in (
        "## Motivation",
        "## Composition",
        "## Collection process",
        "## Preprocessing",
        "## Uses",
        "## Distribution",
        "## Maintenance",
        "opted_out:noai_flag | 1",
    ):
        assert section in datasheet


@pytest.mark.parametrize("break_it", ["no sha256 on train.parquet", "a field without a data type"])
def test_a_broken_card_is_rejected_by_mlcroissant(tmp_path, monkeypatch, offline, break_it):
    out = run_license_stage(tmp_path, monkeypatch)
    card = json.loads((out / "croissant.json").read_text())
    broken = copy.deepcopy(card)
    if break_it == "no sha256 on train.parquet":
        del broken["distribution"][0]["sha256"]
    else:
        del broken["recordSet"][0]["field"][0]["dataType"]
    (out / "broken.json").write_text(cards.card_text(broken))
    with pytest.raises(mlc.ValidationError):
        mlc.Dataset(jsonld=out / "broken.json")
    mlc.Dataset(jsonld=out / "croissant.json")  # the unbroken card still passes


def test_the_card_is_byte_identical_for_the_same_inputs_and_names_no_local_path(tmp_path, monkeypatch):
    first = run_license_stage(tmp_path / "one", monkeypatch)
    second = run_license_stage(tmp_path / "two", monkeypatch)
    for name in ("croissant.json", "DATASHEET.md"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
        text = (first / name).read_text()
        assert str(tmp_path) not in text and str(paths.ROOT) not in text and "/home/" not in text
        assert not re.search(r"(?<![\w/])/(tmp|root|Users|work)/", text), name
        for private in {socket.gethostname(), getpass.getuser()} - {"", "root"}:
            assert not re.search(rf"\b{re.escape(private)}\b", text), (name, private)
    assert cards.card_sha256(first / "croissant.json") == cards.card_sha256(second / "croissant.json")


def _model_facts(per_license: dict[str, int]) -> tuple[dict, dict]:
    model = {
        "name": "atelier-latent-diffusion",
        "version": "3",
        "run_id": "abc123",
        "weights_sha256": "f" * 64,
        "backend": "latent-diffusion",
        "resolution": 32,
        "git_commit": "0123abc",
    }
    dataset = {
        "name": cards.DATASET_NAME,
        "card_sha256": "c" * 64,
        "dvc_md5": "d" * 32,
        "records": sum(per_license.values()),
        "per_license": per_license,
    }
    return model, dataset


def test_the_model_card_front_matter_parses_with_licence_datasets_and_tags():
    model, dataset = _model_facts({"CC-BY-4.0": 3, "CC0-1.0": 2, "LicenseRef-PDM-1.0": 1})
    text = cards.model_card(model, dataset)
    front = cards.model_card_front_matter(text)
    assert front["license"] == "other" and front["license_link"] == "ATTRIBUTION.md"
    assert front["datasets"] == [cards.DATASET_NAME] and front["dataset_card_sha256"] == "c" * 64
    assert {"text-to-image", "latent-diffusion", "atelier"} <= set(front["tags"])
    assert front["library_name"] == "diffusers" and "base_model" not in front
    assert "Not evaluated yet" in text and "Attribution: credit the creators" in text and "f" * 64 in text
    single = cards.model_card_front_matter(cards.model_card(*_model_facts({"CC-BY-SA-4.0": 5})))
    assert single["license"] == "cc-by-sa-4.0" and "license_name" not in single
    evaluated = cards.model_card(model, dataset, HEADLINE)
    assert "| prompt retrieval top-1 | 0.410 | 0.620 | 0.125 |" in evaluated
    assert "| CMMD (lower is closer) | 1.900 | - | 0.700 |" in evaluated and "Not evaluated yet" not in evaluated


def test_the_model_card_names_a_declared_base_model_and_the_licensed_only_verdict():
    model, dataset = _model_facts({"CC0-1.0": 2})
    parts = [
        {
            "name": "atelier-lora",
            "role": "lora_adapters",
            "trained_here": True,
            "weights_sha256": "a" * 64,
            "license": None,
            "training_data": "the licensed set",
            "training_data_licensed": True,
        },
        {
            "name": "tiny-sd",
            "role": "base_model",
            "trained_here": False,
            "weights_sha256": "b" * 64,
            "license": "CreativeML-OpenRAIL-M",
            "training_data": "LAION-5B subset",
            "training_data_licensed": None,
        },
    ]
    text = cards.model_card(model, dataset, None, parts, "not licensed-only: base_model 'tiny-sd' ...")
    assert cards.model_card_front_matter(text)["base_model"] == "tiny-sd"
    assert "Licensed only: **no**. not licensed-only: base_model 'tiny-sd'" in text
    assert (
        f"| tiny-sd | base_model | outside | `{'b' * 64}` | CreativeML-OpenRAIL-M | LAION-5B subset | unknown |" in text
    )
    assert "Base model: none" not in text and "trained from scratch" not in text
    default = cards.model_card(model, dataset, None, parts[:1], "every part was trained here on the licensed set")
    assert "base_model" not in cards.model_card_front_matter(default) and "Licensed only: **yes**" in default
    assert "judge is a CLIP trained on the same collection" in default
    clip = dict(parts[1], name="tiny-clip", role="clip")
    with_clip = cards.model_card(model, dataset, None, [parts[0], clip], "not licensed-only: clip 'tiny-clip' ...")
    assert "judge is the pretrained CLIP that is also the text encoder" in with_clip
    assert "base_model" not in cards.model_card_front_matter(with_clip)


def test_the_registered_version_carries_its_cards_in_mlflow(tmp_path, monkeypatch, empty_store):
    from registry import tracking

    out = run_license_stage(tmp_path / "data", monkeypatch)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(paths, "MLARTIFACTS", tmp_path / "mlartifacts")
    pipeline = tmp_path / "pipeline"
    pipeline.mkdir()
    (pipeline / "atelier_config.json").write_text(json.dumps({"resolution": 32, "backend": "latent-diffusion"}))
    summary = json.loads((out / "summary.json").read_text())
    train = pd.read_parquet(out / "train.parquet")
    record = tracking.TrainingRecord(
        params={"diffusion.steps": 1},
        curves={"unet_loss": [1.0, 0.5]},
        metrics={"unet_seconds": 1.0},
        tags={
            "dataset_md5": "d" * 32,
            "train_records": str(len(train)),
            "weights_sha256": "f" * 64,
            "license_summary": json.dumps(summary["train_per_license"], sort_keys=True),
            "backend": "latent-diffusion",
            "git_commit": "0123abc",
        },
        dataset=train[["record_id", "source", "creator", "license_spdx", "caption"]],
        dataset_digest="d" * 32,
        dataset_source="data/licensed/train.parquet",
        pipeline_dir=pipeline,
        artifacts=[out / "ATTRIBUTION.md"],
        dataset_card=out / "croissant.json",
        datasheet=out / "DATASHEET.md",
    )
    registered = tracking.log_training(record, "cards-test", "cards-test")

    c = tracking.client()
    logged = {a.path for a in c.list_artifacts(registered["run_id"], "cards")}
    assert logged == {"cards/croissant.json", "cards/DATASHEET.md", "cards/MODEL_CARD.md"}
    copy_of_card = tracking.download_run_file(registered["run_id"], "cards/croissant.json", tmp_path / "dl")
    assert copy_of_card.read_bytes() == (out / "croissant.json").read_bytes()
    version = c.get_model_version("cards-test", registered["version"])
    assert version.tags["dataset_card_sha256"] == cards.card_sha256(out / "croissant.json")
    card = tracking.download_run_file(registered["run_id"], "cards/MODEL_CARD.md", tmp_path / "dl").read_text()
    assert version.description == card and "Not evaluated yet" in card
    front = cards.model_card_front_matter(card)
    assert front["dataset_card_sha256"] == version.tags["dataset_card_sha256"] and front["license"] == "other"
    assert str(tmp_path) not in card and str(paths.ROOT) not in card
    assert version.tags["licensed_only"] == "true" and "Licensed only: **yes**" in card  # every part trained here
    assert [p["name"] for p in json.loads(version.tags["components"])] == [
        "atelier-autoencoder",
        "atelier-unet",
        "atelier-clip",
        "atelier-evaluator",
    ]

    tracking.log_evaluation(registered["run_id"], "cards-test", registered["version"], HEADLINE, [])
    evaluated = c.get_model_version("cards-test", registered["version"]).description
    assert "Not evaluated yet" not in evaluated and "| prompt retrieval top-1 | 0.410 | 0.620 | 0.125 |" in evaluated
    assert (
        evaluated
        == tracking.download_run_file(registered["run_id"], "cards/MODEL_CARD.md", tmp_path / "dl2").read_text()
    )
