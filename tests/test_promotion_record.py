"""Accountable promotion: `atelier promote --version N --reason TEXT [--by NAME]` records who, when and why as registry
tags and a ledger row; a version marked by a takedown is refused, and so is a promotion by hand without a reason. The
gate's own promotion is recorded as by "gate". A sqlite registry in a temporary folder, versions without weights."""

from __future__ import annotations

import getpass
import json
import shutil
from datetime import datetime
from pathlib import Path

from app import cli
from atelier import paths
from atelier.config import load_params
from atelier.gate import REQUIRED
from provenance import ledger
from registry import tracking
from stages import promote
from tests.toy import STRONG

NAME = load_params().registry.model_name
PASSING = STRONG


def make_registry(tmp_path, monkeypatch, store: Path, versions: int, tags: dict[str, str] | None = None) -> None:
    """A registry with `versions` versions of the project's model (no weights), and the ledger and champion file in
    `tmp_path`."""
    shutil.copy(store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(paths, "LEDGER", tmp_path / "ledger" / "ledger.sqlite")
    monkeypatch.setattr(paths, "CHAMPION", tmp_path / "champion.json")
    c = tracking.client()
    c.create_registered_model(NAME)
    run = c.create_run(c.create_experiment("promotion-test", artifact_location=(tmp_path / "art").as_uri()))
    for _ in range(versions):
        mv = c.create_model_version(NAME, (tmp_path / "art").as_uri(), run_id=run.info.run_id)
        for key, value in (tags or {}).items():
            c.set_model_version_tag(NAME, mv.version, key, value)


def promotions() -> list[dict]:
    conn = ledger.open_ledger(paths.LEDGER)
    try:
        return ledger.promotions(conn, NAME)
    finally:
        conn.close()


def test_promotion_by_hand_records_who_when_and_why(tmp_path, monkeypatch, capsys, empty_store):
    make_registry(tmp_path, monkeypatch, empty_store, 2)
    assert cli.main(["promote", "--version", "1", "--reason", "the curator prefers its colours", "--by", "Ines"]) == 0
    assert cli.main(["promote", "--version", "2", "--reason", "sharper at 25 steps"]) == 0

    v1, v2 = tracking.get_version(NAME, "1")["tags"], tracking.get_version(NAME, "2")["tags"]
    assert (v1["promotion.by"], v1["promotion.reason"], v1["promotion.previous_champion"]) == (
        "Ines",
        "the curator prefers its colours",
        "none",
    )
    assert (v2["promotion.by"], v2["promotion.previous_champion"]) == (getpass.getuser(), "1")
    assert datetime.fromisoformat(v2["promotion.at"]).utcoffset().total_seconds() == 0  # UTC
    rows = promotions()
    assert [(r["version"], r["by"], r["reason"], r["previous_champion"]) for r in rows] == [
        ("1", "Ines", "the curator prefers its colours", None),
        ("2", getpass.getuser(), "sharper at 25 steps", "1"),
    ]
    assert rows[1]["at"] == v2["promotion.at"]
    assert tracking.version_by_alias(NAME, tracking.CHAMPION)["version"] == "2"
    assert json.loads(paths.CHAMPION.read_text())["version"] == "2"
    assert "promoted by Ines" in capsys.readouterr().out


def test_promotion_by_hand_without_a_reason_is_a_usage_error(tmp_path, monkeypatch, capsys, empty_store):
    make_registry(tmp_path, monkeypatch, empty_store, 1)
    assert cli.main(["promote", "--version", "1"]) == 2
    assert cli.main(["promote", "--version", "1", "--reason", "   "]) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert tracking.version_by_alias(NAME, tracking.CHAMPION) is None and not paths.CHAMPION.exists()


def test_a_version_marked_by_a_takedown_cannot_be_promoted(tmp_path, monkeypatch, capsys, empty_store):
    make_registry(tmp_path, monkeypatch, empty_store, 2)
    assert cli.main(["promote", "--version", "1", "--reason", "clean version", "--by", "Ines"]) == 0
    tracking.tag_version(NAME, "2", "takedown", "2026-12-01: trained on creator 'Zoë Müller'")
    assert cli.main(["promote", "--version", "2", "--reason", "looks better", "--by", "Ines"]) == 1
    err = capsys.readouterr().err
    assert "marked by a takedown" in err and "Zoë Müller" in err
    assert tracking.version_by_alias(NAME, tracking.CHAMPION)["version"] == "1"
    assert [r["version"] for r in promotions()] == ["1"]
    assert "promotion.by" not in tracking.get_version(NAME, "2")["tags"]


def test_the_gate_records_its_promotion_and_never_promotes_a_taken_down_version(tmp_path, monkeypatch, empty_store):
    assert set(PASSING) == set(REQUIRED)
    make_registry(tmp_path, monkeypatch, empty_store, 2, {f"eval.{k}": str(v) for k, v in PASSING.items()})
    tracking.tag_version(NAME, "2", "takedown", "2026-12-01: trained on record 'abc'")
    refused = promote.judge(NAME, "2")
    assert refused["decision"] == "stays challenger" and "marked by a takedown" in refused["reason"]
    assert tracking.version_by_alias(NAME, tracking.CHAMPION) is None

    decided = promote.judge(NAME, "1")  # no champion yet: no paired comparison, nothing to download
    assert decided["decision"] == "promoted to champion"
    tags = tracking.get_version(NAME, "1")["tags"]
    assert tags["promotion.by"] == "gate" and tags["promotion.reason"].startswith("passed the promotion gate")
    assert [(r["version"], r["by"]) for r in promotions()] == [("1", "gate")]
