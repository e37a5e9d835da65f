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
    for key, path in (("evaluation", paths.EVAL_REPORT), ("champion", paths.CHAMPION),
                      ("promotion", paths.PROMOTION)):
        value = _json(path)
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


def format_summary(s: dict) -> str:
    """Plain-text rendering of pipeline_summary() for the terminal."""
    lines: list[str] = ["", "Atelier run summary", "==================="]
    if "records_per_source" in s:
        lines += _table("Records ingested per source:", s["records_per_source"])
    if "rejects_per_reason" in s:
        lines += _table(f"Rejected by clean ({sum(s['rejects_per_reason'].values())}; kept {s['clean_records']}):",
                        s["rejects_per_reason"])
    if "exclusions_per_reason" in s:
        lines += _table(f"Excluded by license ({sum(s['exclusions_per_reason'].values())}):",
                        s["exclusions_per_reason"])
        lines += _table(f"Allowed for training per license ({s['train_records']}):", s["train_per_license"])
    if "evaluation" in s:
        head = s["evaluation"].get("headline", {})
        lines += _table("Evaluation (headline guidance):", head)
    if "promotion" in s:
        p = s["promotion"]
        lines.append(f"Promotion: version {p.get('candidate_version')} -> {p.get('decision')}: {p.get('reason')}")
    if "champion" in s:
        c = s["champion"]
        lines.append(f"Champion: {c.get('name')} version {c.get('version')} (run {c.get('run_id')})")
    if "artworks" in s:
        lines.append(f"Artworks with provenance: {s['artworks']} in {paths.ARTWORKS} (gallery: {paths.GALLERY})")
    return "\n".join(lines)
