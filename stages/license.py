"""license stage: normalise licenses, apply the policy and the opt-outs, write the training set and its paperwork.

Writes data/licensed/train.parquet, excluded.parquet (with reasons), ATTRIBUTION.md and summary.json.
Fail closed: a missing or unknown license is excluded.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pandas as pd

from atelier import paths
from atelier.config import PolicyParams, load_params
from atelier.io import write_json, write_parquet, write_text
from atelier.licenses import normalise

LICENSE_COLUMNS = ["license_spdx", "permits_training", "permits_commercial", "requires_attribution", "share_alike",
                   "no_derivatives", "opted_out", "decision", "reason"]


def normalise_name(name: str) -> str:
    """Case- and whitespace-insensitive form of a creator name, for matching opt-outs."""
    return " ".join(str(name).split()).casefold()


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet runs a cell starting with one of these


def csv_cell(text: str) -> str:
    """A value as written to a CSV people open in spreadsheets: a leading formula character gets a `'` prefix."""
    return "'" + text if text.startswith(FORMULA_START) else text


def from_csv_cell(text: str) -> str:
    """Inverse of csv_cell: the `'` that csv_cell added is dropped (a name that merely starts with `'` is kept)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text


def read_opt_outs(path: Path) -> dict[str, set[str]]:
    """Read the opt-out list (columns kind,value,reason,added): {'creator': {...}, 'record_id': {...}}."""
    out: dict[str, set[str]] = {"creator": set(), "record_id": set()}
    if not path.exists():
        return out
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            kind, value = (row.get("kind") or "").strip(), from_csv_cell((row.get("value") or "").strip())
            if kind not in out or not value:
                raise ValueError(f"{path}: line {n}: kind must be 'creator' or 'record_id' with a value, got {row}")
            out[kind].add(normalise_name(value) if kind == "creator" else value)
    return out


def decide(record: dict, policy: PolicyParams, opt_outs: dict[str, set[str]]) -> dict:
    """The license columns for one record: its normalised terms, and whether it may train (with the reason)."""
    spdx, terms, status = normalise(record.get("license_raw"), record.get("license_url"))
    out = {"license_spdx": spdx, "permits_training": False, "permits_commercial": False,
           "requires_attribution": True, "share_alike": False, "no_derivatives": False, "opted_out": False}
    if terms is not None:
        out.update(permits_training=terms.permits_training, permits_commercial=terms.permits_commercial,
                   requires_attribution=terms.requires_attribution, share_alike=terms.share_alike,
                   no_derivatives=terms.no_derivatives)
    reason = None
    if normalise_name(record.get("creator", "")) in opt_outs["creator"]:
        reason = "opted_out:creator"
    elif record["record_id"] in opt_outs["record_id"]:
        reason = "opted_out:record"
    elif bool(record.get("noai")):
        reason = "opted_out:noai_flag"
    elif status == "missing":
        reason = "license_missing"
    elif status == "unknown":
        reason = "license_unknown"
    elif status == "conflict":
        reason = "license_conflict"
    elif not out["permits_training"]:
        reason = "license_forbids:training"
    elif policy.commercial and not out["permits_commercial"]:
        reason = "license_forbids:non_commercial"
    elif out["no_derivatives"] and not policy.allow_no_derivatives:
        reason = "license_forbids:no_derivatives"
    elif out["share_alike"] and not policy.allow_share_alike:
        reason = "license_forbids:share_alike"
    out["opted_out"] = bool(reason and reason.startswith("opted_out"))
    out["decision"] = "exclude" if reason else "train"
    out["reason"] = reason or f"allowed:{spdx}"
    return out


def license_records(clean: pd.DataFrame, policy: PolicyParams, opt_outs: dict[str, set[str]]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split clean records into (train, excluded), adding the license columns to each."""
    rows = [{**r, **decide(r, policy, opt_outs)} for r in clean.to_dict("records")]
    frame = pd.DataFrame(rows, columns=[*clean.columns, *LICENSE_COLUMNS])
    # bool even when empty: an empty object column used as a mask selects columns, not rows (no record may train)
    frame = frame.astype({c: bool for c in ("permits_training", "permits_commercial", "requires_attribution",
                                            "share_alike", "no_derivatives", "opted_out")})
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
    for char, escaped in (("\\", "\\\\"), ("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("[", "\\["),
                          ("]", "\\]"), ("`", "\\`")):
        text = text.replace(char, escaped)
    return text


def attribution_markdown(train: pd.DataFrame) -> str:
    """ATTRIBUTION.md: every training work whose license requires attribution, grouped by creator."""
    lines = ["# Attribution", "",
             "Works used to train Atelier models whose licenses require attribution.", "",
             "| creator | title | source | license |", "|---|---|---|---|"]
    needed = train[train["requires_attribution"]].sort_values(["creator", "title", "record_id"])
    for r in needed.itertuples():
        lines.append(f"| {_md(r.creator or 'unknown creator')} | {_md(r.title)} | {_md(r.source_url or r.source_uri)} "
                     f"| {_md(r.license_spdx)} |")
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
        "policy": policy.model_dump(),
    }


def main() -> dict:
    """License data/clean into data/licensed; return the summary."""
    policy = load_params().license.policy
    clean = pd.read_parquet(paths.CLEAN_RECORDS)
    train, excluded = license_records(clean, policy, read_opt_outs(paths.OPT_OUT))
    summary = summarise(train, excluded, policy)
    write_parquet(paths.TRAIN_RECORDS, train)
    write_parquet(paths.EXCLUDED_RECORDS, excluded)
    write_text(paths.ATTRIBUTION, attribution_markdown(train))
    write_json(paths.LICENSE_SUMMARY, summary)
    print(f"license: {len(train)} allowed for training {summary['train_per_license']}; "
          f"{len(excluded)} excluded {summary['excluded_per_reason']}")
    return summary


if __name__ == "__main__":
    main()
