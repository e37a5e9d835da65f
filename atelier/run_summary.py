"""The run summary people read at the end of a run: counts per stage, reasons, licenses, metrics."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd

from atelier import paths


def _json(path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def pipeline_summary() -> dict:
    """Collect the facts the stages recorded into one dict (missing stages are left out)."""
    out: dict = {}
    if paths.RAW_RECORDS.exists():
        raw = pd.read_parquet(paths.RAW_RECORDS, columns=["source"])
        out["records_per_source"] = dict(Counter(raw["source"]))
    if paths.CLEAN_REJECTS.exists():
        rejects = pd.read_parquet(paths.CLEAN_REJECTS, columns=["reason"])
        out["clean_records"] = len(pd.read_parquet(paths.CLEAN_RECORDS, columns=["record_id"]))
        out["rejects_per_reason"] = dict(sorted(Counter(rejects["reason"]).items()))
    licensed = _json(paths.LICENSE_SUMMARY)
    if licensed:
        out["exclusions_per_reason"] = licensed["excluded_per_reason"]
        out["train_per_license"] = licensed["train_per_license"]
        out["train_records"] = licensed["train_records"]
    for key, path in (
        ("evaluation", paths.EVAL_REPORT),
        ("champion", paths.CHAMPION),
        ("promotion", paths.PROMOTION),
        ("generation", paths.REPORTS / "generate.json"),
    ):
        value = _json(path)
        if value and key == "evaluation":  # what a person reads; the full report stays in reports/eval.json
            value = {k: value[k] for k in ("evaluator", "prompts", "headline", "warnings") if k in value}
        if value:
            out[key] = value
    if paths.ARTWORKS.exists():
        out["artworks"] = len(list(paths.ARTWORKS.glob("*.provenance.json")))
    return out


def _table(title: str, counts: dict) -> list[str]:
    lines = [title]
    width = max((len(str(k)) for k in counts), default=0)
    lines += [f"  {str(k).ljust(width)}  {f'{v:.4g}' if isinstance(v, float) else v}" for k, v in counts.items()]
    lines = lines if counts else lines + ["  (none)"]
    return lines


FIGURES = [  # (label, generated key, real key, chance key, scale)
    ("prompt retrieval top-1", "retrieval_top1", "real_retrieval_top1", "chance_top1", "fraction, 0-1"),
    ("prompt retrieval top-5", "retrieval_top5", "real_retrieval_top5", "chance_top5", "fraction, 0-1"),
    ("CLIPScore", "clip_score", "real_clip_score", None, "2.5 x cosine, 0-2.5"),
    ("CMMD", "cmmd", "cmmd_baseline", None, "1000 x MMD^2, lower is closer; real column: real-vs-real baseline"),
    ("diversity", "diversity", "real_diversity", None, "1 - mean pairwise cosine"),
    ("style accuracy (demo)", "style_accuracy", "real_style_accuracy", None, "fraction; chance 1/6"),
    ("palette accuracy (demo)", "palette_accuracy", "real_palette_accuracy", None, "fraction; chance 1/6"),
    (
        "colour agreement",
        "colour_agreement",
        "real_colour_agreement",
        None,
        "fraction of colour-naming prompts whose colour dominates the image (no learned model)",
    ),
]


def evaluation_lines(report: dict) -> list[str]:
    """The evaluation's headline figures, each beside the held-out real images' and chance, with its scale."""
    head = report.get("headline", {})
    lines = [
        f"Evaluation at guidance {head.get('guidance')} on {report.get('prompts')} held-out prompts "
        f"({report.get('evaluator', 'evaluator CLIP')}):",
        f"  {'figure':<24} {'generated':>9} {'real':>7} {'chance':>7}  scale",
    ]

    def fmt(value) -> str:
        return f"{value:.3f}" if isinstance(value, (int, float)) else "-"

    for label, gen, real, chance, scale in FIGURES:
        if head.get(gen) is None:
            continue
        lines.append(
            f"  {label:<24} {fmt(head.get(gen)):>9} {fmt(head.get(real)):>7} "
            f"{fmt(head.get(chance)) if chance else '-':>7}  {scale}"
        )
    lines.append(
        f"  {'replication rate':<24} {fmt(head.get('replication_rate')):>9} {'-':>7} {'-':>7}  "
        "fraction of generations flagged as a possible copy of a training image"
    )
    lines += [f"  warning: {w}" for w in report.get("warnings", [])]
    return lines


def preference_lines(promotion: dict) -> list[str]:
    """Reviewers' preference from reports/promotion.json: the gate rule, each version's Bradley-Terry score with its
    95% interval, the preferred guidance and the existing-work flags."""
    pref = promotion.get("preference") or {}
    rule = pref.get("rule", "")
    lines = [f"  {rule if rule.startswith('preference rule') else 'preference rule ' + rule}"] if rule else []
    if pref.get("scores"):
        lines.append(
            f"Reviewers' preference ({pref['votes']} votes by {pref['reviewers']} reviewers; "
            f"{pref.get('model', 'Bradley-Terry')}):"
        )
        for item, s in sorted(pref["scores"].items(), key=lambda kv: -kv[1]["score"]):
            lines.append(
                f"  {item:<8} score {s['score']:+.2f} [{s['low']:+.2f}, {s['high']:+.2f}]  "
                f"{s['wins']} won, {s['losses']} lost, {s['ties']} tied"
            )
    g = pref.get("preferred_guidance")
    if g:
        verdict = "clearly preferred" if g["clearly"] else "not clearly preferred"
        lines.append(
            f"  preferred guidance of version {g['version']}: {g['guidance']:g} (score {g['score']:+.2f} "
            f"[{g['low']:+.2f}, {g['high']:+.2f}], {g['votes']} votes; {verdict} to {g['current']:g})"
        )
    if promotion.get("flags"):
        lines.append(
            f"Flagged by reviewers as looking like an existing work: {len(promotion['flags'])} artworks "
            "(reports/review_flags.json; follow up with `atelier takedown --image`)"
        )
    return lines


def licensed_only_text(champion: dict) -> str:
    """The champion's `licensed_only` verdict and its reason (atelier/components.py), as models/champion.json holds
    them from the registry."""
    verdict = champion.get("licensed_only")
    if verdict is None:
        return "not recorded (a version registered before its components were)"
    return f"{'yes' if verdict else 'NO'}: {champion.get('licensed_only_reason') or 'no reason recorded'}"


def format_summary(s: dict) -> str:
    """Plain-text rendering of pipeline_summary() for the terminal."""
    lines: list[str] = ["", "Atelier run summary", "==================="]
    if "records_per_source" in s:
        lines += _table("Records ingested per source:", s["records_per_source"])
    if "rejects_per_reason" in s:
        lines += _table(
            f"Rejected by clean ({sum(s['rejects_per_reason'].values())}; kept {s['clean_records']}):",
            s["rejects_per_reason"],
        )
    if "exclusions_per_reason" in s:
        lines += _table(
            f"Excluded by license ({sum(s['exclusions_per_reason'].values())}):", s["exclusions_per_reason"]
        )
        lines += _table(f"Allowed for training per license ({s['train_records']}):", s["train_per_license"])
    if "evaluation" in s:
        lines += evaluation_lines(s["evaluation"])
    if "promotion" in s:
        p = s["promotion"]
        lines.append(f"Promotion: version {p.get('candidate_version')} -> {p.get('decision')}")
        for check in p.get("checks") or []:
            mark = "ok  " if check["passed"] else "MISS"
            by = "" if check["passed"] else f" (missed by {check['missed_by']:.3f})"
            lines.append(f"  {mark} {check['figure']} {check['value']:.3f}, rule {check['rule']}{by}")
        if not p.get("checks"):
            lines.append(f"  {p.get('reason')}")
        lines += preference_lines(p)
    if "generation" in s and s["generation"].get("no_champion"):
        lines.append(f"Generation: {s['generation']['no_champion']}; no artworks made this run")
    if s.get("generation", {}).get("quarantined"):
        lines.append(
            f"Quarantined as possible replication, not published: {s['generation']['quarantined']} in "
            f"{paths.ARTWORKS / 'quarantine'} (reports/generate.json lists each with its reason)"
        )
    if "champion" in s:
        c = s["champion"]
        lines.append(f"Champion: {c.get('name')} version {c.get('version')} (run {c.get('run_id')})")
        if c.get("version") is not None:
            lines.append(f"  licensed only: {licensed_only_text(c)}")
    if "artworks" in s:
        lines.append(f"Artworks with provenance: {s['artworks']} in {paths.ARTWORKS} (gallery: {paths.GALLERY})")
    return "\n".join(lines)
