"""The promotion gate: a pure function of the candidate's metrics, the champion's metrics and the thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field

from atelier.config import PromoteParams


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # every threshold missed, in words

    def explain(self) -> str:
        return "passed every threshold" if self.passed else "; ".join(self.reasons)


def gate(candidate: dict[str, float], champion: dict[str, float] | None, t: PromoteParams) -> GateResult:
    """Check headline metrics (clip_score, style_accuracy, palette_accuracy, replication_rate) against thresholds,
    and against the champion's style accuracy plus the margin when there is a champion."""
    reasons = []

    def need(key: str) -> float:
        if key not in candidate or candidate[key] is None:
            raise KeyError(f"candidate metrics lack '{key}'; run the evaluate stage first")
        return float(candidate[key])

    checks = [
        ("clip_score", need("clip_score") >= t.min_clip_score, f">= min_clip_score {t.min_clip_score}"),
        ("style_accuracy", need("style_accuracy") >= t.min_style_accuracy,
         f">= min_style_accuracy {t.min_style_accuracy}"),
        ("palette_accuracy", need("palette_accuracy") >= t.min_palette_accuracy,
         f">= min_palette_accuracy {t.min_palette_accuracy}"),
        ("replication_rate", need("replication_rate") <= t.max_replication_rate,
         f"<= max_replication_rate {t.max_replication_rate}"),
    ]
    for key, ok, rule in checks:
        if not ok:
            reasons.append(f"{key} {candidate[key]:.3f} is not {rule}")
    if champion is not None and "style_accuracy" in champion:
        bar = float(champion["style_accuracy"]) + t.margin
        if need("style_accuracy") < bar:
            reasons.append(f"style_accuracy {candidate['style_accuracy']:.3f} does not beat the champion's "
                           f"{champion['style_accuracy']:.3f} by margin {t.margin}")
    return GateResult(passed=not reasons, reasons=reasons)
