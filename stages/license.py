"""license stage: normalise licenses, apply the policy and the opt-outs, write the training set and its paperwork.

The policy itself (creator identity, opt-outs, the decision for one record) is atelier/rights.py. Copies share a
fate: a kept record is decided with the exact and near duplicates clean rejected (data/clean/rejects.parquet), and
trains only if every copy may; its excluded row names the copy that stopped it (`excluded_because`).

Writes data/licensed/train.parquet, excluded.parquet (with reasons), ATTRIBUTION.md, summary.json, and the training
set's card (atelier/cards.py): croissant.json (Croissant 1.1 with the RAI fields) and DATASHEET.md.
Fail closed: a missing or unknown license is excluded.
"""

from __future__ import annotations

import re
from collections import Counter

import pandas as pd

from atelier import paths
from atelier.cards import card_text, dataset_card, datasheet_markdown
from atelier.config import PolicyParams, load_params
from atelier.erasures import erasure_count
from atelier.hashing import file_sha256
from atelier.io import write_json, write_parquet, write_text
from atelier.rawstore import encrypted_count
from atelier.rights import LICENSE_COLUMNS as DECISION_COLUMNS
from atelier.rights import LICENSE_FLAGS, OptOuts, attributable, decide, read_opt_outs

# the decision, then the duplicate group: its size, every known creator, and the member that excluded it
LICENSE_COLUMNS = [*DECISION_COLUMNS, "group_size", "credited", "excluded_because"]
DUPLICATE_REASONS = ["duplicate_exact", "duplicate_near"]  # stages/clean.py's Reducer.decide writes these details:
_KEPT_URI = re.compile(r"^(?:same bytes as|perceptual hash within \d+ bits of) (.+)$")


def duplicate_groups(clean: pd.DataFrame, rejects: pd.DataFrame) -> dict[str, list[dict]]:
    """Kept record id -> the rows clean rejected as its exact or near duplicates (read from their reason/detail)."""
    kept_ids, by_uri = set(clean["record_id"]), dict(zip(clean["source_uri"], clean["record_id"]))
    groups: dict[str, list[dict]] = {}
    for r in rejects[rejects["reason"].isin(DUPLICATE_REASONS)].to_dict("records"):
        m = _KEPT_URI.match(str(r.get("detail") or ""))
        kept = (
            r["record_id"]
            if r["reason"] == "duplicate_exact" and r["record_id"] in kept_ids
            else (by_uri.get(m.group(1)) if m else None)
        )
        if kept is None:
            raise ValueError(
                f"{paths.relative(paths.CLEAN_REJECTS)}: duplicate {r['source_uri']} ({r.get('detail')}) "
                "names no record of data/clean/records.parquet; re-run the clean stage"
            )
        groups.setdefault(kept, []).append(r)
    return groups


def _blocks(verdict: dict, group_attributable: bool) -> bool:
    """A member's verdict that keeps its whole group from training (a missing creator does not, when another
    member of the group can be credited)."""
    return verdict["decision"] == "exclude" and not (
        verdict["reason"] == "attribution_impossible" and group_attributable
    )


def decide_group(kept: dict, members: list[dict], policy: PolicyParams, opt_outs: OptOuts) -> dict:
    """The license columns of a kept record given its duplicates: it trains only if every copy may (any opt-out,
    any refused or conflicting licence of any copy wins), under the strictest terms of them all."""
    group = [kept, *members]
    verdicts = [decide(m, policy, opt_outs) for m in group]
    can_credit = any(attributable(m) for m in group)
    creators = list(
        dict.fromkeys(str(m.get("creator") or "").strip() for m in group if str(m.get("creator") or "").strip())
    )
    out = {**verdicts[0], "group_size": len(group), "credited": "; ".join(creators), "excluded_because": None}
    if _blocks(verdicts[0], can_credit):
        return out
    blockers = sorted(
        (i for i in range(1, len(group)) if _blocks(verdicts[i], can_credit)),
        key=lambda i: not verdicts[i]["opted_out"],
    )  # an opt-out is named first
    if blockers:
        m, v = group[blockers[0]], verdicts[blockers[0]]
        return {
            **out,
            "decision": "exclude",
            "reason": f"group:{v['reason']}",
            "opted_out": v["opted_out"],
            "excluded_because": f"{m['source_uri']} (record {m['record_id'][:12]})",
        }
    spdx = " AND ".join(dict.fromkeys(v["license_spdx"] for v in verdicts))
    return {
        **out,
        "license_spdx": spdx,
        "decision": "train",
        "reason": f"allowed:{spdx}",
        "permits_training": all(v["permits_training"] for v in verdicts),
        "permits_commercial": all(v["permits_commercial"] for v in verdicts),
        "requires_attribution": any(v["requires_attribution"] for v in verdicts),
        "share_alike": any(v["share_alike"] for v in verdicts),
        "no_derivatives": any(v["no_derivatives"] for v in verdicts),
    }


def license_records(
    clean: pd.DataFrame, policy: PolicyParams, opt_outs: OptOuts, rejects: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split clean records into (train, excluded), adding the license columns to each; each record is decided
    with its duplicates among `rejects` (clean's rejects.parquet)."""
    groups = duplicate_groups(clean, rejects) if rejects is not None else {}
    rows = [
        {**r, **decide_group(r, groups.get(r["record_id"], []), policy, opt_outs)} for r in clean.to_dict("records")
    ]
    frame = pd.DataFrame(rows, columns=[*clean.columns, *LICENSE_COLUMNS])
    # bool even when empty: an empty object column used as a mask selects columns, not rows (no record may train)
    frame = frame.astype({c: bool for c in LICENSE_FLAGS})
    frame = frame.astype({"group_size": "int64", "credited": str, "excluded_because": object})
    train = frame[frame["decision"] == "train"].reset_index(drop=True)
    excluded = frame[frame["decision"] == "exclude"].reset_index(drop=True)
    return train, excluded


_INVISIBLE = dict.fromkeys([*range(0x00, 0x20), 0x7F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])  # controls, bidi


def _md(text: str) -> str:
    """Escape text from metadata for a Markdown table cell: no HTML, links, images, line breaks or bidi tricks; a
    leading = + - @ (a formula once the table is pasted into a spreadsheet) is neutralised with an apostrophe."""
    text = " ".join(str(text).split()).translate(_INVISIBLE)
    if text[:1] in ("=", "+", "-", "@"):
        text = "'" + text
    for char, escaped in (
        ("\\", "\\\\"),
        ("&", "&amp;"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ("|", "\\|"),
        ("[", "\\["),
        ("]", "\\]"),
        ("`", "\\`"),
    ):
        text = text.replace(char, escaped)
    return text


def attribution_markdown(train: pd.DataFrame) -> str:
    """ATTRIBUTION.md: every training work whose license requires attribution, grouped by creator."""
    lines = [
        "# Attribution",
        "",
        "Works used to train Atelier models whose licenses require attribution.",
        "",
        "| creator | title | source | license |",
        "|---|---|---|---|",
    ]
    needed = train[train["requires_attribution"]].sort_values(["creator", "title", "record_id"])
    for r in needed.itertuples():
        credited = getattr(r, "credited", "") or r.creator  # every known creator of the work's copies
        lines.append(
            f"| {_md(credited or 'creator not recorded')} | {_md(r.title)} | {_md(r.source_url or r.source_uri)} "
            f"| {_md(r.license_spdx)} |"
        )
    lines += ["", f"{len(needed)} works by {needed['creator'].nunique()} creators.", ""]
    return "\n".join(lines)


def summarise(train: pd.DataFrame, excluded: pd.DataFrame, policy: PolicyParams) -> dict:
    """summary.json: counts per license, exclusions per reason, opt-outs honoured, policy in force."""
    return {
        "train_records": len(train),
        "excluded_records": len(excluded),
        "train_per_license": dict(sorted(Counter(train["license_spdx"]).items())),
        "excluded_per_reason": dict(sorted(Counter(excluded["reason"]).items())),
        "opt_outs_honoured": int(excluded["opted_out"].sum()),
        "attribution_required": int(train["requires_attribution"].sum()),
        "attribution_creators": int(train.loc[train["requires_attribution"], "creator"].nunique()),
        "share_alike": int(train["share_alike"].sum()),
        "non_commercial": int((~train["permits_commercial"]).sum()),
        "duplicate_groups": int((train["group_size"] > 1).sum() + (excluded["group_size"] > 1).sum()),
        "excluded_by_a_duplicate": int(excluded["reason"].str.startswith("group:").sum()),
        "policy": policy.model_dump(),
    }


def main() -> dict:
    """License data/clean into data/licensed; return the summary."""
    params = load_params()
    policy = params.license.policy
    clean = pd.read_parquet(paths.CLEAN_RECORDS)
    rejects = pd.read_parquet(paths.CLEAN_REJECTS, filters=[("reason", "in", DUPLICATE_REASONS)])
    train, excluded = license_records(clean, policy, read_opt_outs(paths.OPT_OUT), rejects)
    summary = summarise(train, excluded, policy)
    write_parquet(paths.TRAIN_RECORDS, train)
    write_parquet(paths.EXCLUDED_RECORDS, excluded)
    write_text(paths.ATTRIBUTION, attribution_markdown(train))
    write_json(paths.LICENSE_SUMMARY, summary)
    files = {path.name: file_sha256(path) for path in (paths.TRAIN_RECORDS, paths.ATTRIBUTION)}
    card = dataset_card(
        train,
        summary,
        files,
        [(s.name, s.kind) for s in params.ingest.sources],
        params.clean,
        rejects=pd.read_parquet(paths.CLEAN_REJECTS, columns=["reason"]),
        storage=encrypted_count(),
        erased=erasure_count(),
    )
    write_text(paths.DATASET_CARD, card_text(card))
    write_text(paths.DATASHEET, datasheet_markdown(card, summary))
    print(
        f"license: {len(train)} allowed for training {summary['train_per_license']}; "
        f"{len(excluded)} excluded {summary['excluded_per_reason']}"
    )
    return summary


if __name__ == "__main__":
    main()
