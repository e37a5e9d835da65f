"""The registry's side of the end-to-end pipeline (tests/e2e.py), in a build of its own so that it runs beside
tests/test_end_to_end.py: a version the gate refuses, a champion moved by hand and back in the registry, and a
takedown whose next run retrains without the creator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from atelier import dvc
from tests.e2e import atelier, build, in_workspace
from tests.workspace import edit_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("e2e-versions"))


def test_failing_version_is_not_promoted_and_champion_moves_by_hand(built):
    edit_params(built, promote={"min_clip_score_fraction": 10.0}, train_diffusion={"seed": 1})
    dvc.repro(root=built)
    promotion = json.loads((built / "reports/promotion.json").read_text())
    assert promotion["candidate_version"] == "2" and promotion["decision"] == "stays challenger"
    assert "min_clip_score_fraction 10.0" in promotion["reason"]
    missed = [c for c in promotion["checks"] if not c["passed"]]
    assert [c["figure"] for c in missed] == ["clip_score"] and missed[0]["missed_by"] > 0
    assert promotion["paired_with_champion"]["champion"] == "1"  # judged against the champion on the same seeds
    assert json.loads((built / "models/champion.json").read_text())["version"] == "1"

    moved = atelier(built, "promote", "--version", "2", "--reason", "reviewed the samples by hand", "--by", "ci")
    assert moved.returncode == 0, moved.stderr
    made = atelier(built, "generate", "a green spiral composition", "--seed", "4", "--steps", "2")
    assert made.returncode == 0, made.stderr
    sidecar = Path(made.stdout.split()[0]).with_suffix(".provenance.json")
    assert json.loads(sidecar.read_text())["model"]["version"] == "2"

    # a person moves the alias back in the registry (as in the MLflow UI): the next run follows the registry
    in_workspace(
        built, "from registry.tracking import set_alias; set_alias('atelier-latent-diffusion', 'champion', '1')"
    )
    dvc.repro(root=built)
    assert json.loads((built / "models/champion.json").read_text())["version"] == "1"


def test_takedown_of_a_creator_lists_lineage_and_the_next_run_excludes_them(built):
    import pandas as pd

    counts = pd.read_parquet(built / "data/licensed/train.parquet")["creator"].value_counts()
    creator, works = counts.index[0], int(counts.iloc[0])
    made_before = {
        json.loads(p.read_text())["id"]
        for p in (built / "artworks").glob("*.provenance.json")
        if json.loads(p.read_text())["model"]["version"] == "1"
    }
    result = atelier(built, "takedown", creator, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {v["version"] for v in report["versions"]} == {"1", "2"}
    assert {a["id"] for a in report["artworks"] if a["model_version"] == "1"} == made_before
    assert creator in (built / "policy/opt_out.csv").read_text()

    # until a clean version is promoted there is no champion to generate from: the stage says so and succeeds
    stage = subprocess.run(
        [sys.executable, "-m", "stages.generate"], cwd=built, capture_output=True, text=True, timeout=600
    )
    assert stage.returncode == 0, stage.stderr[-3000:]
    assert "marked by a takedown" in stage.stdout and "no artworks made" in stage.stdout
    assert "Traceback" not in stage.stderr

    edit_params(built, promote={"min_clip_score_fraction": 0.0})
    dvc.repro(root=built)
    train = pd.read_parquet(built / "data/licensed/train.parquet")
    assert creator not in set(train["creator"])
    champion = json.loads((built / "models/champion.json").read_text())
    assert champion["version"] == "3"
    newest = [json.loads(p.read_text()) for p in (built / "artworks").glob("*.provenance.json")]
    newest = [m for m in newest if m["model"]["version"] == "3"]
    assert newest and newest[0]["data"]["excluded_per_reason"]["opted_out:creator"] >= works
