import pytest

from atelier.config import PromoteParams
from atelier.gate import gate

T = PromoteParams(min_clip_score=0.5, min_style_accuracy=0.7, min_palette_accuracy=0.6, max_replication_rate=0.05,
                  margin=0.02)
GOOD = {"clip_score": 0.8, "style_accuracy": 0.8, "palette_accuracy": 0.7, "replication_rate": 0.0}


def test_passing_candidate_without_champion():
    result = gate(GOOD, None, T)
    assert result.passed and result.explain() == "passed every threshold"


@pytest.mark.parametrize("key,value,words", [
    ("clip_score", 0.4, "clip_score 0.400 is not >= min_clip_score 0.5"),
    ("style_accuracy", 0.5, "style_accuracy 0.500 is not >= min_style_accuracy 0.7"),
    ("palette_accuracy", 0.59, "palette_accuracy 0.590 is not >= min_palette_accuracy 0.6"),
    ("replication_rate", 0.1, "replication_rate 0.100 is not <= max_replication_rate 0.05"),
])
def test_each_threshold_is_named_when_missed(key, value, words):
    result = gate({**GOOD, key: value}, None, T)
    assert not result.passed and result.reasons == [words]


def test_margin_over_champion():
    assert not gate(GOOD, {"style_accuracy": 0.79}, T).passed
    assert "beat the champion" in gate(GOOD, {"style_accuracy": 0.79}, T).explain()
    assert gate(GOOD, {"style_accuracy": 0.78}, T).passed


def test_missing_metric_is_an_error():
    with pytest.raises(KeyError, match="palette_accuracy"):
        gate({"clip_score": 1, "style_accuracy": 1, "replication_rate": 0}, None, T)
