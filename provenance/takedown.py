"""`atelier takedown RECORD_ID_OR_CREATOR`: which model versions trained on a work and which artworks they made,
from the recorded lineage; then the work or creator joins the opt-out list and the affected versions are marked.
The next pipeline run excludes it (policy/opt_out.csv is a dependency of the license stage) and retrains."""

from __future__ import annotations

import csv
import io
import re
from datetime import date

from atelier import paths
from atelier.config import load_params
from atelier.io import write_text
from atelier.lineage import training_records
from provenance import ledger
from stages.license import csv_cell, normalise_name, read_opt_outs


def target_kind(target: str) -> str:
    """'record_id' for a 64-hex sha256, else 'creator'."""
    return "record_id" if re.fullmatch(r"[0-9a-f]{64}", target.strip().lower()) else "creator"


def affected(target: str) -> dict:
    """Model versions whose recorded training data holds the work/creator, and the artworks those versions made."""
    from registry import tracking

    kind = target_kind(target)
    name = load_params().registry.model_name
    versions, artworks, unknown = [], [], []
    conn = ledger.open_ledger(paths.LEDGER)
    try:
        for v in tracking.all_versions(name):
            md5 = v["tags"].get("dataset_md5")
            try:
                records = training_records(md5)
            except (FileNotFoundError, TypeError):
                unknown.append(v["version"])
                continue
            if kind == "record_id":
                hits = records[records["record_id"] == target.strip().lower()]
            else:
                hits = records[records["creator"].map(normalise_name) == normalise_name(target)]
            if len(hits):
                versions.append({"version": v["version"], "records": len(hits), "aliases": v["aliases"]})
                artworks += [{"id": a["id"], "model_version": v["version"]}
                             for a in ledger.by_model_version(conn, name, v["version"])]
    finally:
        conn.close()
    return {"target": target, "kind": kind, "model": name, "versions": versions, "artworks": artworks,
            "versions_with_unknown_data": unknown}


def add_opt_out(kind: str, value: str, reason: str) -> bool:
    """Append to policy/opt_out.csv unless already listed; return whether it was added."""
    current = read_opt_outs(paths.OPT_OUT)
    key = normalise_name(value) if kind == "creator" else value.strip().lower()
    if key in current[kind]:
        return False
    text = paths.OPT_OUT.read_text(encoding="utf-8") if paths.OPT_OUT.exists() else "kind,value,reason,added\n"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([kind, csv_cell(value.strip()), csv_cell(reason),
                                                    date.today().isoformat()])
    write_text(paths.OPT_OUT, text.rstrip("\n") + "\n" + buf.getvalue())
    return True


def takedown(target: str, reason: str = "takedown request") -> dict:
    """Answer the takedown question, record the opt-out, and mark the affected model versions in the registry."""
    from registry import tracking

    report = affected(target)
    report["opt_out_added"] = add_opt_out(report["kind"], target, reason)
    note = f"{date.today().isoformat()}: trained on {report['kind']} '{target}' ({reason}); retrain without it"
    for v in report["versions"]:
        tracking.tag_version(report["model"], v["version"], "takedown", note)
    return report


def format_report(r: dict) -> str:
    """Plain-text answer for the rights holder."""
    lines = [f"Takedown of {r['kind']} '{r['target']}' for model '{r['model']}':"]
    if r["versions"]:
        lines.append("  model versions trained on it (now marked in the registry):")
        lines += [f"    version {v['version']} ({v['records']} records){' aliases: ' + ', '.join(v['aliases']) if v['aliases'] else ''}"
                  for v in r["versions"]]
    else:
        lines.append("  no registered model version was trained on it")
    lines.append(f"  artworks those versions produced: {len(r['artworks'])}")
    lines += [f"    {a['id']} (version {a['model_version']})" for a in r["artworks"]]
    if r["versions_with_unknown_data"]:
        lines.append(f"  versions whose training data could not be found: {r['versions_with_unknown_data']}")
    lines.append("  added to policy/opt_out.csv" if r["opt_out_added"] else "  already on policy/opt_out.csv")
    lines.append("  the next `atelier run` excludes it and retrains")
    return "\n".join(lines)
