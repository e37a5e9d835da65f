"""The promotion gate: a pure function of the candidate's metrics, its paired comparison with the champion, and the
pre-registered rules in params.yaml (`promote`).

Every threshold is relative to a figure measured in the same run (the held-out real images, the real-vs-real CMMD
baseline, chance), so a collection of any kind can pass on merit. Each check records its value, its bar and, when it
misses, by how much.

Reviewers' votes (the head-to-head summary from atelier/preference.py) add one pre-registered rule once there are at
least `preference_min_votes` of them: a challenger whose win-rate interval lies below `preference_refuse_below` is
refused; one whose interval lies above 0.5 has a CLIP-based figure that misses its bar by less than
`preference_allow_margin` (a fraction of the bar) waived. With fewer votes, or none, the decisions are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from atelier.config import PromoteParams

# the evaluation figures the gate reads (tagged `eval.<key>` on each model version by the evaluate stage)
REQUIRED = (
    "clip_score",
    "real_clip_score",
    "retrieval_top1",
    "real_retrieval_top1",
    "chance_top1",
    "cmmd",
    "cmmd_baseline",
    "replication_rate",
)
OPTIONAL = ("style_accuracy", "palette_accuracy", "real_images")
EVALUATOR_FIGURE = "the evaluator's retrieval of the real images' own captions (95% interval low end)"


@dataclass(frozen=True)
class Check:
    figure: str
    value: float
    bar: float
    rule: str  # the rule in words, with its parameter
    passed: bool
    waived: str = ""  # why a miss was forgiven (reviewers' preference, within the margin); empty when not

    def missed_by(self) -> float:
        return abs(self.value - self.bar) if not self.passed or self.waived else 0.0

    def as_dict(self) -> dict:
        out = {
            "figure": self.figure,
            "value": round(self.value, 4),
            "bar": round(self.bar, 4),
            "rule": self.rule,
            "passed": self.passed,
            "missed_by": round(self.missed_by(), 4),
        }
        return {**out, "waived": self.waived} if self.waived else out


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: list[Check] = field(default_factory=list)
    preference: str = ""  # what the reviewers' votes did, in words (empty when there were none)

    @property
    def reasons(self) -> list[str]:
        """Every rule missed, in words, with the figure, the bar and the shortfall."""
        return [
            f"{c.figure} {c.value:.3f} is not {c.rule} = {c.bar:.3f} (missed by {c.missed_by():.3f})"
            for c in self.checks
            if not c.passed
        ]

    def explain(self) -> str:
        waived = [
            f"{c.figure} {c.value:.3f} missed {c.rule} = {c.bar:.3f} by {c.missed_by():.3f}, waived: {c.waived}"
            for c in self.checks
            if c.waived
        ]
        text = "passed every rule" if self.passed else "; ".join(self.reasons)
        return "; ".join([text, *waived] + ([self.preference] if self.preference else []))


# the checks on a CLIP-based figure that reviewers' clear preference may waive within the margin (by figure name)
CLIP_FIGURES = (
    "retrieval_top1",
    "clip_score",
    "cmmd",
    "paired clip_score difference to the champion (95% interval high end)",
)
PREFERENCE_FIGURE = "reviewers' win rate against the champion (95% interval high end)"


def gate(
    candidate: dict[str, float], paired: dict | None, t: PromoteParams, preference: dict | None = None
) -> GateResult:
    """Judge a candidate: prompt retrieval and CLIPScore as fractions of the real images', CMMD as a multiple of the
    real-vs-real baseline, replication rate, the demo's style/palette accuracy where measured, (when there is a
    champion to compare with) the paired CLIPScore difference on the same prompts and seeds, and (with enough votes
    in `preference`, atelier.preference.head_to_head) the reviewers' preference rule."""
    missing = [k for k in REQUIRED if candidate.get(k) is None]
    if missing:
        raise KeyError(f"candidate metrics lack {missing}; run the evaluate stage first (`dvc repro evaluate`)")
    m = {k: float(v) for k, v in candidate.items() if v is not None}
    checks = [
        Check(
            "retrieval_top1",
            m["retrieval_top1"],
            t.min_retrieval_fraction * m["real_retrieval_top1"],
            f">= min_retrieval_fraction {t.min_retrieval_fraction} x the real images' {m['real_retrieval_top1']:.3f}",
            m["retrieval_top1"] >= t.min_retrieval_fraction * m["real_retrieval_top1"],
        ),
        Check(
            "retrieval_top1 over chance",
            m["retrieval_top1"],
            m["chance_top1"],
            "> chance" if t.min_retrieval_fraction else "> chance (not applied: min_retrieval_fraction is 0)",
            m["retrieval_top1"] > m["chance_top1"] or t.min_retrieval_fraction == 0,
        ),  # 0 turns retrieval off
        Check(
            "clip_score",
            m["clip_score"],
            t.min_clip_score_fraction * m["real_clip_score"],
            f">= min_clip_score_fraction {t.min_clip_score_fraction} x the real images' {m['real_clip_score']:.3f}",
            m["clip_score"] >= t.min_clip_score_fraction * m["real_clip_score"],
        ),
        Check(
            "cmmd",
            m["cmmd"],
            t.max_cmmd_multiple * m["cmmd_baseline"],
            f"<= max_cmmd_multiple {t.max_cmmd_multiple} x the real-vs-real baseline {m['cmmd_baseline']:.3f}",
            m["cmmd"] <= t.max_cmmd_multiple * m["cmmd_baseline"],
        ),
        Check(
            "replication_rate",
            m["replication_rate"],
            t.max_replication_rate,
            f"<= max_replication_rate {t.max_replication_rate}",
            m["replication_rate"] <= t.max_replication_rate,
        ),
    ]
    for key, bar in (("style_accuracy", t.min_style_accuracy), ("palette_accuracy", t.min_palette_accuracy)):
        if bar is not None and key in m:  # the demo's extras: only where the captions name a style and palette
            checks.append(Check(key, m[key], bar, f">= min_{key} {bar}", m[key] >= bar))
    if paired is not None:
        checks.append(
            Check(
                "paired clip_score difference to the champion (95% interval high end)",
                paired["ci_high"],
                -t.champion_max_drop,
                f">= -champion_max_drop {t.champion_max_drop} (champion version {paired.get('champion')}, "
                f"{paired['pairs']} pairs, mean {paired['mean_difference']:+.3f}, "
                f"win rate {paired['win_rate']:.2f})",
                paired["ci_high"] >= -t.champion_max_drop,
            )
        )
    judge = evaluator_check(m, t)
    if judge is not None:
        checks.insert(0, judge)
    checks, said = preference_rule(checks, preference, t)
    if judge is not None and not judge.passed:
        checks = _judged_by_people(checks, preference, t)
    return GateResult(passed=all(c.passed for c in checks), checks=checks, preference=said)


def evaluator_check(m: dict[str, float], t: PromoteParams) -> Check | None:
    """Whether the evaluator can judge prompt-following on this collection: the low end of the 95% Wilson interval
    of its top-1 retrieval on the held-out real images must lie above chance. None when the check is off or the
    number of real images was not recorded (a version evaluated before the check existed)."""
    from atelier.preference import wilson

    n = int(m.get("real_images") or 0)
    if not t.judge_evaluator or n == 0:
        return None
    low, high = wilson(m["real_retrieval_top1"] * n, n)
    rule = (
        f"> chance {m['chance_top1']:.3f} (real images' retrieval {m['real_retrieval_top1']:.3f}, 95% interval "
        f"[{low:.3f}, {high:.3f}] over {n} images): otherwise the evaluator cannot judge prompt-following on this "
        "collection, every relative rule is met by any model, and the gate promotes nothing by itself; ask "
        "reviewers to vote (atelier review prepare; atelier review), whose clear preference then decides, or "
        "promote by hand (atelier promote --version N --reason ...)"
    )
    return Check(EVALUATOR_FIGURE, low, m["chance_top1"], rule, low > m["chance_top1"])


def _judged_by_people(checks: list[Check], h2h: dict | None, t: PromoteParams) -> list[Check]:
    """With a blind evaluator, only reviewers' clear preference (enough votes, interval above 0.5) promotes: it
    waives the evaluator check; nothing else does."""
    clear = bool(h2h) and h2h.get("votes", 0) >= t.preference_min_votes and h2h.get("low", 0) > 0.5
    if not clear:
        return checks
    reason = f"reviewers clearly prefer the challenger (win rate interval [{h2h['low']:.2f}, {h2h['high']:.2f}])"
    return [
        Check(c.figure, c.value, c.bar, c.rule, True, reason) if c.figure == EVALUATOR_FIGURE else c for c in checks
    ]


def preference_rule(checks: list[Check], h2h: dict | None, t: PromoteParams) -> tuple[list[Check], str]:
    """Apply the reviewers' rule to the checks: refuse when the win rate's interval lies below
    preference_refuse_below; when it lies above 0.5, waive CLIP-figure misses smaller than preference_allow_margin
    of their bar. Returns the checks and what the votes did, in words."""
    if not h2h or not h2h.get("votes"):
        return checks, (
            "preference rule not applied: no reviewers' votes compare it with the champion" if h2h is not None else ""
        )
    n = h2h["votes"]
    votes = (
        f"{n} votes by {h2h['reviewers']} reviewers against champion version {h2h['champion']}, win rate "
        f"{h2h['win_rate']:.2f} [{h2h['low']:.2f}, {h2h['high']:.2f}]"
    )
    if n < t.preference_min_votes:
        return checks, f"preference rule not applied: {votes}, fewer than preference_min_votes {t.preference_min_votes}"
    checks = checks + [
        Check(
            PREFERENCE_FIGURE,
            h2h["high"],
            t.preference_refuse_below,
            f">= preference_refuse_below {t.preference_refuse_below} ({votes})",
            h2h["high"] >= t.preference_refuse_below,
        )
    ]
    if h2h["low"] <= 0.5:
        return checks, f"preference rule applied: {votes}; no clear preference for the challenger, nothing waived"
    reason = (
        f"reviewers clearly prefer the challenger ({votes}), within preference_allow_margin {t.preference_allow_margin}"
    )
    out = []
    for c in checks:
        near = (
            c.figure in CLIP_FIGURES
            and not c.passed
            and c.bar != 0
            and c.missed_by() < t.preference_allow_margin * abs(c.bar)
        )
        out.append(Check(c.figure, c.value, c.bar, c.rule, True, reason) if near else c)
    return out, f"preference rule applied: {votes}"
