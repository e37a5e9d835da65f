"""Reviewers' preference: the Bradley-Terry fit against hand-computed cases, the gate's pre-registered preference rule
(pure, and through the promote stage with votes seeded in a temporary ledger and a temporary MLflow registry), the
existing-work flags, and the votes exported as a Croissant dataset that mlcroissant validates offline."""

from __future__ import annotations

import json
import math
import socket
import sqlite3
from pathlib import Path

import mlcroissant as mlc
import pandas as pd
import pytest

from atelier import paths, preference
from atelier.config import load_params
from atelier.gate import gate
from tests.toy import GATE, PASSING, STRONG

LOG4 = math.log(4)
T = GATE
GOOD = PASSING
MARGINAL = {**GOOD, "clip_score": 0.48}  # bar 0.7 x 0.7 = 0.49: missed by 0.01 < 0.05 x 0.49


def pairs(a: str, b: str, wins: int, losses: int, ties: int = 0) -> list[tuple[str, str, float]]:
    return [(a, b, 1.0)] * wins + [(a, b, 0.0)] * losses + [(a, b, 0.5)] * ties


# --- the fit, by hand ---------------------------------------------------------------------------------------------


def test_eight_two_between_two_items():
    """Without a prior the MLE is P = 8/10 exactly: s_a - s_b = log 4; the difference's variance is
    1 / (n p (1 - p)) = 1 / 1.6, and each centred score's a quarter of it."""
    scores = preference.fit(pairs("a", "b", 8, 2), ridge=0)
    assert scores["a"]["score"] == pytest.approx(LOG4 / 2) and scores["b"]["score"] == pytest.approx(-LOG4 / 2)
    half = 1.959964 * math.sqrt(0.625 / 4)
    assert (scores["a"]["low"], scores["a"]["high"]) == pytest.approx((LOG4 / 2 - half, LOG4 / 2 + half))
    assert (scores["a"]["wins"], scores["a"]["losses"], scores["a"]["votes"]) == (8, 2, 10)
    p = preference.win_probability(pairs("a", "b", 8, 2), "a", "b", ridge=0)
    sd = math.sqrt(0.625)
    assert p["probability"] == pytest.approx(0.8)
    assert (p["low"], p["high"]) == pytest.approx(
        (1 / (1 + math.exp(-(LOG4 - 1.959964 * sd))), 1 / (1 + math.exp(-(LOG4 + 1.959964 * sd))))
    )


def test_the_ridge_prior_shrinks_towards_even_and_is_the_root_of_its_score_equation():
    from scipy.optimize import brentq

    ridge = 0.1  # s_a = t = -s_b solves 8 - 10 sigmoid(2t) - ridge t = 0
    t = brentq(lambda t: 8 - 10 / (1 + math.exp(-2 * t)) - ridge * t, 0, 5)
    scores = preference.fit(pairs("a", "b", 8, 2), ridge=ridge)
    assert scores["a"]["score"] == pytest.approx(t, abs=1e-9) and sum(
        s["score"] for s in scores.values()
    ) == pytest.approx(0, abs=1e-12)
    assert 0.5 < preference.win_probability(pairs("a", "b", 8, 2), "a", "b", ridge)["probability"] < 0.8
    unbeaten = preference.fit(pairs("a", "b", 5, 0), ridge=ridge)  # defined with a prior, not without one
    assert math.isfinite(unbeaten["a"]["score"]) and unbeaten["a"]["score"] > 0
    with pytest.raises(ValueError, match="has no maximum"):
        preference.fit(pairs("a", "b", 5, 0), ridge=0)


def test_three_items_transitive():
    """A beats B 8-2 and B beats C 8-2, A and C never met: the scores are log 4 apart, so P(A over C) = 16/17."""
    comparisons = pairs("a", "b", 8, 2) + pairs("b", "c", 8, 2)
    scores = preference.fit(comparisons, ridge=0)
    assert [scores[k]["score"] for k in "abc"] == pytest.approx([LOG4, 0, -LOG4], abs=1e-9)
    assert preference.win_probability(comparisons, "a", "c", ridge=0)["probability"] == pytest.approx(16 / 17)
    shrunk = preference.fit(comparisons, ridge=0.1)
    assert shrunk["a"]["score"] > shrunk["b"]["score"] > shrunk["c"]["score"]


def test_all_ties_are_even():
    comparisons = pairs("a", "b", 0, 0, 6) + pairs("b", "c", 0, 0, 4)
    scores = preference.fit(comparisons)
    assert all(s["score"] == pytest.approx(0, abs=1e-12) and s["low"] < 0 < s["high"] for s in scores.values())
    assert preference.win_probability(comparisons, "a", "c")["probability"] == pytest.approx(0.5)
    low, high = preference.wilson(3, 6)  # six ties: three wins' worth
    assert (low + high) / 2 == pytest.approx(0.5)


def test_wilson_interval_by_hand():
    assert preference.wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert preference.wilson(0, 0) == (0.0, 1.0)


def vote(
    i: int, left: str, right: str, choice: str, reviewer: str = "owl", lg: float = 3.0, rg: float = 3.0, **kw
) -> dict:
    return {
        "id": i,
        "reviewer": reviewer,
        "prompt": "a red grid composition",
        "seed": i,
        "left_artwork": f"a{i}l",
        "right_artwork": f"a{i}r",
        "left_version": left,
        "right_version": right,
        "left_guidance": lg,
        "right_guidance": rg,
        "choice": choice,
        "flag_reason": None,
        "flagged": None,
        "created_at": f"2026-12-01T00:{i // 60:02d}:{i % 60:02d}+00:00",
        **kw,
    }


def test_head_to_head_counts_both_sides_and_leaves_flags_and_other_pairs_out():
    votes = [
        vote(1, "2", "1", "left"),
        vote(2, "1", "2", "right", reviewer="fox"),
        vote(3, "1", "2", "left"),
        vote(4, "2", "1", "tie"),
        vote(5, "1", "2", "flag", flag_reason="broken", flagged="a5l"),
        vote(6, "2", "3", "left"),
    ]
    h = preference.head_to_head(votes, "2", "1")
    assert (h["votes"], h["wins"], h["losses"], h["ties"], h["reviewers"]) == (4, 2, 1, 1, 2)
    assert h["win_rate"] == pytest.approx(2.5 / 4) and h["vote_ids"]["ids"] == [1, 2, 3, 4]
    assert (h["low"], h["high"]) == pytest.approx(preference.wilson(2.5, 4))
    with pytest.raises(ValueError, match="not a preference"):
        preference.outcome(votes[4])


def test_existing_work_flags_name_the_artwork_its_version_and_reviewers():
    votes = [
        vote(1, "1", "2", "flag", flag_reason="existing_work", flagged="a1r"),
        vote(
            2,
            "1",
            "2",
            "flag",
            reviewer="fox",
            flag_reason="existing_work",
            flagged="a1r",
            left_artwork="a1l",
            right_artwork="a1r",
        ),
        vote(3, "1", "2", "flag", flag_reason="offensive", flagged="a3l"),
    ]
    [flag] = preference.existing_work_flags(votes)
    assert (flag["artwork"], flag["version"], flag["reviewers"], flag["vote_ids"]) == ("a1r", "2", 2, [1, 2])
    with pytest.raises(ValueError, match="neither side"):
        preference.existing_work_flags([vote(9, "1", "2", "flag", flag_reason="existing_work", flagged="zz")])


# --- the gate rule, pure --------------------------------------------------------------------------------------------


def h2h(wins: int, losses: int) -> dict:
    votes = [vote(i, "2", "1", "left" if i < wins else "right", reviewer=f"r{i % 3}") for i in range(wins + losses)]
    return preference.head_to_head(votes, "2", "1")


def test_a_clearly_preferred_challenger_has_a_marginal_clip_miss_waived():
    assert not gate(MARGINAL, None, T).passed
    result = gate(MARGINAL, None, T, h2h(20, 4))
    assert result.passed
    [waived] = [c for c in result.checks if c.waived]
    assert waived.figure == "clip_score" and "reviewers clearly prefer" in waived.waived
    assert "24 votes by 3 reviewers" in result.explain()
    assert not gate({**GOOD, "clip_score": 0.40}, None, T, h2h(20, 4)).passed  # far below: never waived
    assert not gate({**MARGINAL, "replication_rate": 0.051}, None, T, h2h(20, 4)).passed  # replication: never


def test_a_clearly_dispreferred_challenger_is_refused_and_too_few_votes_change_nothing():
    refused = gate(GOOD, None, T, h2h(4, 20))
    assert not refused.passed and refused.reasons[0].startswith("reviewers' win rate against the champion")
    few = gate(GOOD, None, T, h2h(2, 8))  # 10 < preference_min_votes 20
    assert few.passed and "fewer than preference_min_votes 20" in few.explain()
    assert [c.as_dict() for c in few.checks] == [c.as_dict() for c in gate(GOOD, None, T).checks]
    even = gate(MARGINAL, None, T, h2h(12, 12))  # no clear preference: nothing waived, nothing refused
    assert not even.passed and not any(c.waived for c in even.checks)


# --- through the promote stage ---------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviewers (pseudonym TEXT PRIMARY KEY, consent TEXT NOT NULL, consented_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS votes (id INTEGER PRIMARY KEY AUTOINCREMENT, form_id TEXT UNIQUE, reviewer TEXT NOT NULL,
  prompt TEXT NOT NULL, seed INTEGER NOT NULL, left_artwork TEXT NOT NULL, right_artwork TEXT NOT NULL,
  left_version TEXT NOT NULL, right_version TEXT NOT NULL, left_guidance REAL NOT NULL, right_guidance REAL NOT NULL,
  choice TEXT NOT NULL, flag_reason TEXT NULL, flagged TEXT NULL, created_at TEXT NOT NULL);
"""
CONSENT = "review-consent/1 sha256:" + "ab" * 32


def seed_votes(ledger: Path, votes: list[dict]) -> None:
    """The votes as rows of the ledger's votes table (provenance/votes.py's schema), their reviewers consenting."""
    try:
        from provenance.votes import open_votes

        conn = open_votes(ledger)
    except ImportError:  # the review server's module not there yet: the same tables, by hand
        ledger.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(ledger)
        conn.executescript(SCHEMA)
    for name in sorted({v["reviewer"] for v in votes}):
        conn.execute("INSERT OR IGNORE INTO reviewers VALUES (?, ?, ?)", (name, CONSENT, "2026-12-01T00:00:00+00:00"))
    for v in votes:
        conn.execute(
            "INSERT INTO votes (form_id, reviewer, prompt, seed, left_artwork, right_artwork, left_version, "
            "right_version, left_guidance, right_guidance, choice, flag_reason, flagged, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                f"form-{v['id']}",
                v["reviewer"],
                v["prompt"],
                v["seed"],
                v["left_artwork"],
                v["right_artwork"],
                v["left_version"],
                v["right_version"],
                v["left_guidance"],
                v["right_guidance"],
                v["choice"],
                v["flag_reason"],
                v["flagged"],
                v["created_at"],
            ),
        )
    conn.commit()
    conn.close()


def head_to_head_votes(challenger_wins: int, champion_wins: int) -> list[dict]:
    """Challenger (version 2) against champion (version 1), sides alternating, three reviewers."""
    out = []
    for i in range(challenger_wins + champion_wins):
        challenger_won = i < challenger_wins
        left, right = ("2", "1") if i % 2 else ("1", "2")
        choice = "left" if (left == "2") == challenger_won else "right"
        out.append(vote(i + 1, left, right, choice, reviewer=("owl", "fox", "elk")[i % 3]))
    return out


@pytest.fixture
def stage(tmp_path, monkeypatch, empty_store):
    """A registry with version 1 (champion) and version 2 (the challenger from reports/train.json), both evaluated,
    every output of the promote stage and the ledger in tmp_path. The paired CLIPScore comparison (which needs the
    weights) is level."""
    import shutil

    from registry import tracking
    from stages import promote

    name = load_params().registry.model_name
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for key, file in (
        ("LEDGER", "ledger/ledger.sqlite"),
        ("CHAMPION", "champion.json"),
        ("PROMOTION", "promotion.json"),
        ("TRAIN_SUMMARY", "train.json"),
        ("REVIEW_FLAGS", "review_flags.json"),
    ):
        monkeypatch.setattr(paths, key, tmp_path / file)
    monkeypatch.setattr(
        promote,
        "paired_comparison",
        lambda *a: {
            "pairs": 96,
            "mean_difference": -0.01,
            "ci_low": -0.04,
            "ci_high": 0.02,
            "win_rate": 0.48,
            "champion": "1",
        },
    )
    c = tracking.client()
    c.create_registered_model(name)
    run_ids = []
    for _ in range(2):
        run = c.create_run(c.create_experiment(f"pref-{len(run_ids)}", artifact_location=(tmp_path / "art").as_uri()))
        mv = c.create_model_version(name, (tmp_path / "art").as_uri(), run_id=run.info.run_id)
        run_ids.append(run.info.run_id)
        for key, value in STRONG.items():
            c.set_model_version_tag(name, mv.version, f"eval.{key}", str(value))
    tracking.set_alias(name, tracking.CHAMPION, "1")
    (tmp_path / "train.json").write_text(json.dumps({"version": "2"}))
    return {"name": name, "promote": promote, "tracking": tracking, "runs": run_ids, "tmp": tmp_path}


def test_no_votes_leave_the_gate_as_it_was(stage):
    s = stage
    decision = s["promote"].main()
    assert decision["decision"] == "promoted to champion" and decision["reason"] == "passed every rule"
    assert decision["preference"]["rule"] == "not applied: no reviewers' votes in the ledger"
    assert decision["flags"] == [] and json.loads((s["tmp"] / "review_flags.json").read_text())["flags"] == []
    assert "pref_votes" not in s["tracking"].client().get_run(s["runs"][1]).data.metrics


def test_a_clearly_preferred_challenger_is_promoted_despite_a_marginal_clip_miss(stage):
    s = stage
    s["tracking"].tag_version(s["name"], "2", "eval.clip_score", "0.68")  # bar 0.7 x 1.0: missed by 0.02 < 0.035
    votes = head_to_head_votes(20, 4)
    votes.append(vote(25, "1", "2", "flag", reviewer="owl", flag_reason="existing_work", flagged="a25r"))
    seed_votes(paths.LEDGER, votes)
    decision = s["promote"].main()
    assert decision["decision"] == "promoted to champion"
    assert "waived: reviewers clearly prefer the challenger" in decision["reason"]
    used = decision["preference"]["head_to_head"]
    assert (used["votes"], used["wins"], used["reviewers"]) == (24, 20, 3)
    assert used["vote_ids"]["ids"] == list(range(1, 25)) and used["low"] > 0.5
    assert json.loads(paths.PROMOTION.read_text())["preference"]["head_to_head"]["votes"] == 24
    [flag] = decision["flags"]
    assert (flag["artwork"], flag["version"], flag["vote_ids"]) == ("a25r", "2", [25])
    assert json.loads((s["tmp"] / "review_flags.json").read_text())["flags"] == [flag]
    assert s["tracking"].version_by_alias(s["name"], "champion")["version"] == "2"
    # the scores reach MLflow: metrics on the version's run, tags on the version, the plot as an artifact
    c = s["tracking"].client()
    metrics = c.get_run(s["runs"][1]).data.metrics
    assert metrics["pref_votes"] == 24 and metrics["pref_win_rate_vs_champion"] == pytest.approx(20 / 24)
    assert metrics["pref_score_v2"] > 0 > metrics["pref_score_v1"]
    assert "preference/scores.png" in [f.path for f in c.list_artifacts(s["runs"][1], "preference")]
    assert s["tracking"].get_version(s["name"], "2")["tags"]["preference.votes"] == "24"
    from atelier.run_summary import format_summary  # the run summary shows the scores

    text = format_summary({"promotion": decision})
    assert "Reviewers' preference (24 votes by 3 reviewers" in text and "  v2       score +" in text
    assert "preference rule applied: 24 votes by 3 reviewers" in text and "1 artworks" in text


def test_a_clearly_dispreferred_challenger_is_refused_and_the_preferred_guidance_is_named(stage):
    s = stage
    votes = head_to_head_votes(4, 20)
    votes += [vote(100 + i, "1", "1", "left" if i else "right", lg=2.0, rg=3.0) for i in range(16)]  # 2.0: 15-1
    seed_votes(paths.LEDGER, votes)
    decision = s["promote"].main()
    assert decision["decision"] == "stays challenger"
    assert "reviewers' win rate against the champion" in decision["reason"] and "24 votes" in decision["reason"]
    assert decision["preference"]["head_to_head"]["high"] < 0.5
    g = decision["preference"]["preferred_guidance"]
    assert (g["version"], g["guidance"], g["current"], g["clearly"]) == ("1", 2.0, 3.0, True)
    assert "guidance" not in json.loads(paths.CHAMPION.read_text())  # follow_preferred_guidance: false
    assert s["promote"].champion_record(s["name"], follow_guidance=True)["guidance"] == 2.0


# --- the votes as a dataset ------------------------------------------------------------------------------------------


def test_the_export_is_pseudonymous_and_validates_with_mlcroissant(tmp_path, monkeypatch):
    from app.review_export import export

    ledger = tmp_path / "ledger.sqlite"
    seed_votes(
        ledger, head_to_head_votes(3, 2) + [vote(9, "1", "2", "flag", flag_reason="existing_work", flagged="a9l")]
    )
    monkeypatch.setattr(socket.socket, "connect", lambda *a: (_ for _ in ()).throw(AssertionError("network used")))
    summary = export(tmp_path / "out", ledger)
    assert (summary["votes"], summary["reviewers"]) == (6, 3)
    table = pd.read_parquet(tmp_path / "out" / "votes.parquet")
    assert set(table["reviewer"]) == {"owl", "fox", "elk"} and set(table["consent"]) == {CONSENT}
    assert table.loc[table["choice"] == "flag", "flagged"].tolist() == ["a9l"]
    dataset = mlc.Dataset(jsonld=tmp_path / "out" / "croissant.json")
    records = list(dataset.records("votes"))
    assert len(records) == 6 and {r["votes/reviewer"] for r in records} == {b"owl", b"fox", b"elk"}
    card = json.loads((tmp_path / "out" / "croissant.json").read_text())
    for key in ("rai:dataCollection", "rai:personalSensitiveInformation", "rai:dataUseCases"):
        assert card[key], key
    assert "Pseudonyms only" in card["rai:personalSensitiveInformation"] and str(tmp_path) not in json.dumps(card)
    again = export(tmp_path / "again", ledger)  # the same votes, the same bytes
    assert again["votes_sha256"] == summary["votes_sha256"]
    assert (tmp_path / "again" / "croissant.json").read_bytes() == (tmp_path / "out" / "croissant.json").read_bytes()


def test_no_ledger_or_no_votes_table_means_no_votes(tmp_path):
    from provenance.votes import read_votes

    assert read_votes(tmp_path / "missing.sqlite") == []
    sqlite3.connect(tmp_path / "empty.sqlite").execute("CREATE TABLE other (x)").connection.commit()
    assert read_votes(tmp_path / "empty.sqlite") == []
