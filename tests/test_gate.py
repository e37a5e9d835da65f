"""The promotion gate: relative rules, each named with its shortfall when missed; the paired champion rule."""

import pytest

from atelier.gate import gate
from tests.toy import GATE, PASSING

T = GATE
GOOD = PASSING


def test_passing_candidate_without_champion():
    result = gate(GOOD, None, T)
    assert result.passed and result.explain() == "passed every rule"
    assert all(c.passed for c in result.checks)


@pytest.mark.parametrize(
    "change,figure,missed_by",
    [
        ({"retrieval_top1": 0.2}, "retrieval_top1", 0.1),  # bar 0.5 x 0.6 = 0.3
        ({"clip_score": 0.42}, "clip_score", 0.07),  # bar 0.7 x 0.7 = 0.49
        ({"cmmd": 0.5}, "cmmd", 0.1),  # bar 4 x 0.1 = 0.4
        ({"replication_rate": 0.1}, "replication_rate", 0.05),
    ],
)
def test_each_rule_is_named_with_its_shortfall(change, figure, missed_by):
    result = gate({**GOOD, **change}, None, T)
    assert not result.passed
    [missed] = [c for c in result.checks if not c.passed]
    assert missed.figure == figure and missed.missed_by() == pytest.approx(missed_by)
    assert result.reasons[0].startswith(f"{figure} ") and f"missed by {missed_by:.3f}" in result.reasons[0]


def test_thresholds_follow_the_real_images_so_a_hard_collection_can_pass():
    hard = {**GOOD, "real_retrieval_top1": 0.2, "retrieval_top1": 0.11, "chance_top1": 1 / 48}
    assert gate(hard, None, T).passed
    assert not gate({**hard, "real_retrieval_top1": 0.6}, None, T).passed


def test_retrieval_at_chance_never_passes():
    result = gate({**GOOD, "retrieval_top1": 0.05, "real_retrieval_top1": 0.06}, None, T)
    assert [c.figure for c in result.checks if not c.passed] == ["retrieval_top1 over chance"]


def test_demo_extras_apply_only_where_measured():
    t = T.model_copy(update={"min_style_accuracy": 0.7, "min_palette_accuracy": 0.6})
    assert gate(GOOD, None, t).passed  # free-text captions: no style figure, no rule
    assert not gate({**GOOD, "style_accuracy": 0.5, "palette_accuracy": 0.9}, None, t).passed
    assert gate({**GOOD, "style_accuracy": 0.8, "palette_accuracy": 0.9}, None, t).passed


def test_paired_comparison_with_the_champion():
    worse = {"pairs": 96, "mean_difference": -0.2, "ci_low": -0.25, "ci_high": -0.15, "win_rate": 0.2, "champion": "1"}
    level = {"pairs": 96, "mean_difference": -0.02, "ci_low": -0.08, "ci_high": 0.04, "win_rate": 0.45, "champion": "1"}
    result = gate(GOOD, worse, T)
    assert not result.passed and "champion version 1" in result.explain()
    assert gate(GOOD, level, T).passed


def test_missing_metric_is_an_error():
    with pytest.raises(KeyError, match="real_clip_score"):
        gate({k: v for k, v in GOOD.items() if k != "real_clip_score"}, None, T)
