"""`atelier takedown RECORD_ID_OR_CREATOR` or `--image FILE`: which model versions trained on a work and which
artworks they made, from the recorded lineage; then the work or creator joins the opt-out list and the affected
versions are marked. The next pipeline run excludes it (policy/opt_out.csv is a dependency of the license stage) and
retrains. By picture, every record whose image is the same bytes or within clean.near_duplicate_hamming bits of its
perceptual hash is found in every source, with the rest of its duplicate group. `--dry-run` answers the question
and writes nothing."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from atelier import paths
from atelier.config import load_params
from atelier.io import read_frame, write_text
from atelier.rights import creator_matches, csv_cell, normalise_name, read_opt_outs
from provenance.usage import used_by

MIN_SHORT_ID = 8  # the tools print record ids shortened to 12 or 16 characters; fewer than 8 is too ambiguous


def resolve_target(target: str, creator: bool = False) -> tuple[str, str]:
    """(kind, value) of a takedown or erasure target: ('record_id', the full sha256) for a record id or an unambiguous
    prefix of one (the short ids the tools print), ('creator', the name) for a creator the ingested records or the
    opt-out list know, or any name with `creator` (a creator not ingested yet). Anything else is refused with a
    ValueError saying what to do: a mistyped id must never become an opt-out of a creator of that name."""
    text = target.strip()
    if creator:
        if not text:
            raise ValueError("the creator name is empty")
        return "creator", text
    low = text.lower()
    if re.fullmatch(r"[0-9a-f]{64}", low):
        return "record_id", low
    raw = read_frame(paths.RAW_RECORDS, ["record_id", "creator"])
    if re.fullmatch(rf"[0-9a-f]{{{MIN_SHORT_ID},63}}", low):
        found = sorted({rid for rid in raw["record_id"] if rid.startswith(low)})
        if len(found) == 1:
            return "record_id", found[0]
        if len(found) > 1:
            raise ValueError(
                f"'{text}' is the start of {len(found)} record ids ({', '.join(f[:16] for f in found[:3])}, ...); "
                "give more of the id"
            )
    if any(creator_matches(raw.to_dict("records"), text, read_opt_outs(paths.OPT_OUT))) or (
        normalise_name(text) in read_opt_outs(paths.OPT_OUT).names
    ):
        return "creator", text
    raise ValueError(
        f"'{text}' is neither a record id (64 hex characters, or the start of one, at least {MIN_SHORT_ID}) nor a "
        "creator in the ingested records or the opt-out list; check it, or pass --creator to name a creator whose "
        "works are not ingested yet"
    )


def affected(target: str, creator: bool = False) -> dict:
    """Model versions whose recorded training data holds the work/creator, and the artworks those versions made."""
    kind, target = resolve_target(target, creator)
    listed = read_opt_outs(paths.OPT_OUT) if kind == "creator" else None  # any spelling, and the list's aliases

    def hits(records: pd.DataFrame) -> pd.Series:
        if kind == "record_id":
            return records["record_id"] == target.strip().lower()
        return pd.Series(creator_matches(records.to_dict("records"), target, listed), index=records.index, dtype=bool)

    return {"target": target, "kind": kind, **used_by(hits)}


def image_phash(data: bytes) -> str:
    """The picture's perceptual hash, computed as the clean stage computes a record's (any size is accepted)."""
    from atelier.images import Rejected, decode

    p = load_params().clean
    try:
        return decode(data, p.model_copy(update={"min_size": 1})).phash
    except Rejected as r:
        raise ValueError(
            f"the picture cannot be read as an image ({r.reason}: {r.detail}); send a PNG, JPEG, GIF, "
            "WebP, BMP or TIFF file"
        ) from None


def matching_records(data: bytes, hamming: int) -> pd.DataFrame:
    """Every raw record (all sources) whose image is `data`: the same bytes (record id = sha256), or a perceptual hash
    within `hamming` bits; then the rest of each match's duplicate group (records within `hamming` bits of a match,
    exact duplicates sharing its record id, and the near duplicates clean rejected as copies of it, or it of them).
    One row per raw record, with `match` saying how it was found."""
    sha, query = hashlib.sha256(data).hexdigest(), np.uint64(int(image_phash(data), 16))
    raw = read_frame(paths.RAW_RECORDS, ["record_id", "source", "source_uri", "title", "creator", "license_raw"])
    hashes = (
        pd.concat(
            [
                read_frame(paths.CLEAN_RECORDS, ["record_id", "phash"]),  # decoded: the rejected copies' hashes
                read_frame(paths.CLEAN_DECODED, ["record_id", "phash"]),
            ]
        )
        .dropna()
        .drop_duplicates("record_id")
    )
    ids = hashes["record_id"].to_numpy()
    bank = np.array([int(h, 16) for h in hashes["phash"]], dtype=np.uint64)
    how = {sha: "the same bytes"} if sha in set(raw["record_id"]) else {}
    distance = np.bitwise_count(bank ^ query)
    for rid, d in zip(ids[distance <= hamming], distance[distance <= hamming]):
        how.setdefault(rid, f"perceptual hash within {int(d)} bits")
    for h, seed in zip(bank[distance <= hamming], ids[distance <= hamming]):
        for rid in ids[np.bitwise_count(bank ^ h) <= hamming]:
            how.setdefault(rid, f"duplicate group of {seed[:16]} (perceptual hash)")
    rejects = read_frame(paths.CLEAN_REJECTS, ["record_id", "reason", "detail"])
    near = rejects[rejects["reason"] == "duplicate_near"]
    id_of_uri = dict(zip(raw["source_uri"], raw["record_id"]))
    for rid, detail in zip(near["record_id"], near["detail"]):  # "perceptual hash within N bits of <kept uri>"
        kept_uri = str(detail).rsplit(" of ", 1)[-1]
        kept = id_of_uri.get(kept_uri)
        if kept in how:
            how.setdefault(rid, f"rejected by clean as a near duplicate of {kept_uri}")
        elif rid in how and kept is not None:
            how.setdefault(kept, f"kept by clean; {rid[:16]} was rejected as its near duplicate")
    rows = raw[raw["record_id"].isin(list(how))].copy()
    rows["match"] = rows["record_id"].map(how)
    return rows.sort_values(["record_id", "source", "source_uri"]).reset_index(drop=True)


def affected_by_image(image: Path) -> dict:
    """Every record whose image matches the picture at `image`, and the versions and artworks that used any of them."""
    data = Path(image).read_bytes()
    hamming = load_params().clean.near_duplicate_hamming
    matches = matching_records(data, hamming)
    ids = set(matches["record_id"])
    report = used_by(lambda records: records["record_id"].isin(ids))
    return {
        "target": str(image),
        "kind": "image",
        "searched": f"every ingested record's sha256 and perceptual hash (within {hamming} bits), in every source",
        "sha256": hashlib.sha256(data).hexdigest(),
        "matches": [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in matches.to_dict("records")],
        "record_ids": sorted(ids),
        **report,
    }


def add_opt_out(kind: str, value: str, reason: str) -> bool:
    """Append to policy/opt_out.csv unless already listed; return whether it was added."""
    current = read_opt_outs(paths.OPT_OUT)
    if normalise_name(value) in current.names if kind == "creator" else value.strip().lower() in current.record_id:
        return False  # already listed (a creator under any spelling or alias)
    text = paths.OPT_OUT.read_text(encoding="utf-8") if paths.OPT_OUT.exists() else "kind,value,reason,added\n"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        [kind, csv_cell(value.strip()), csv_cell(reason), date.today().isoformat()]
    )
    write_text(paths.OPT_OUT, text.rstrip("\n") + "\n" + buf.getvalue())
    return True


def takedown(
    target: str | None = None,
    reason: str = "takedown request",
    image: Path | None = None,
    dry_run: bool = False,
    creator: bool = False,
) -> dict:
    """Answer the takedown question for a creator or record id (`target`; resolve_target's rules, `creator` for a
    name not ingested yet) or a picture (`image`); unless `dry_run`, record the opt-out (every matching record id,
    for a picture) and mark the affected model versions."""
    from registry import tracking

    if (target is None) == (image is None):
        raise ValueError("takedown needs a creator name or record id, or an image, not both")
    report = affected_by_image(image) if image is not None else affected(target, creator)
    target = report["target"]
    report["dry_run"] = dry_run
    if dry_run:
        report["opt_out_added"] = False
        return report
    if image is not None:
        added = [rid for rid in report["record_ids"] if add_opt_out("record_id", rid, f"{reason} (by picture)")]
        report["opt_out_added"] = added
    else:
        report["opt_out_added"] = add_opt_out(report["kind"], target, reason)
    what = (
        f"{len(report['record_ids'])} records matching a picture"
        if image is not None
        else f"{report['kind']} '{target}'"
    )
    note = f"{date.today().isoformat()}: trained on {what} ({reason}); retrain without it"
    for v in report["versions"]:
        tracking.tag_version(report["model"], v["version"], "takedown", note)
    return report


def format_report(r: dict) -> str:
    """Plain-text answer for the rights holder."""
    dry = r.get("dry_run")
    lines = [f"{'Dry run: takedown' if dry else 'Takedown'} of {r['kind']} '{r['target']}' for model '{r['model']}':"]
    if r["kind"] == "image" and not r["matches"]:
        lines.append(
            f"  no match found: searched {r['searched']}; a crop, a heavy edit or another photograph of the work "
            "may not match, so this is not proof that the work was not used"
        )
    elif r["kind"] == "image":
        lines.append(f"  records whose image matches it: {len(r['matches'])} rows, {len(r['record_ids'])} record ids")
        lines += [
            f"    {m['record_id'][:16]} {m['source']}: {m['source_uri']} "
            f"(creator {m['creator'] or 'not recorded'}; {m['match']})"
            for m in r["matches"]
        ]
    if r["versions"]:
        lines.append("  model versions trained on it" + (":" if dry else " (now marked in the registry):"))
        lines += [
            f"    version {v['version']} ({v['records']} records)"
            + (f" aliases: {', '.join(v['aliases'])}" if v["aliases"] else "")
            for v in r["versions"]
        ]
    elif r["kind"] != "image" or r["matches"]:
        lines.append("  no registered model version was trained on it")
    lines.append(f"  artworks those versions produced (each by a model that learnt from it): {len(r['artworks'])}")
    for key, what in (("citing", "published"), ("quarantined_citing", "quarantined")):
        if key in r:
            lines.append(f"  {what} artworks that cite it as a nearest training image: {len(r[key])}")
            lines += [f"    {a['id']} (version {a['model_version']}; {', '.join(a['records'])})" for a in r[key]]
    if r["versions_with_unknown_data"]:
        lines.append(f"  versions whose training data could not be found: {r['versions_with_unknown_data']}")
    if dry:
        lines.append("  dry run: nothing was opted out and no version was marked; run without --dry-run to do so")
        return "\n".join(lines)
    if r["kind"] == "image":
        lines.append(
            f"  added to policy/opt_out.csv: {len(r['opt_out_added'])} record ids"
            f" ({len(r['record_ids']) - len(r['opt_out_added'])} listed already)"
        )
    else:
        lines.append("  added to policy/opt_out.csv" if r["opt_out_added"] else "  already on policy/opt_out.csv")
    lines.append("  the next `atelier run` excludes it and retrains")
    return "\n".join(lines)
