"""`atelier audit --dataset`: the training set's license audit, recomputed from the tables, not trusted from them."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from atelier import paths
from atelier.cards import privacy_counts
from atelier.config import load_params
from atelier.erasures import erased_digests, record_digest
from atelier.pii import find
from atelier.rawstore import encrypted_count
from atelier.rights import decide, identify, read_opt_outs


def audit_dataset() -> dict:
    """Check train.parquet/excluded.parquet against the policy and opt-outs in force; list every problem found."""
    policy = load_params().license.policy
    opt_outs = read_opt_outs(paths.OPT_OUT)
    train = pd.read_parquet(paths.TRAIN_RECORDS)
    excluded = pd.read_parquet(paths.EXCLUDED_RECORDS)
    attribution = paths.ATTRIBUTION.read_text(encoding="utf-8") if paths.ATTRIBUTION.exists() else ""
    problems: list[str] = []
    for r in train.to_dict("records"):
        now = decide(r, policy, opt_outs)
        if now["decision"] != "train":
            problems.append(
                f"record {r['record_id'][:12]} ({r['source_uri']}) is in the training set but the policy "
                f"in force says {now['reason']}"
            )
        if r["requires_attribution"]:
            missing = [k for k in ("creator", "title") if not str(r.get(k) or "").strip()]
            if missing:
                problems.append(f"record {r['record_id'][:12]} requires attribution but has no {', '.join(missing)}")
            elif str(r["creator"]).replace("|", "\\|") not in attribution:
                problems.append(
                    f"creator '{r['creator']}' of record {r['record_id'][:12]} is missing from ATTRIBUTION.md"
                )
    for r in train.to_dict("records"):  # privacy, recomputed: no personal data left in the text, faces dealt with
        left = sorted({f.kind for k in ("title", "caption", "creator") for f in find(str(r.get(k) or ""))})
        if left:
            problems.append(
                f"record {r['record_id'][:12]} ({r['source_uri']}) still has personal data in its text "
                f"({', '.join(left)}); re-run the clean stage"
            )
        if (r.get("faces") or 0) > 0 and not isinstance(r.get("face_action"), str):
            problems.append(
                f"record {r['record_id'][:12]} ({r['source_uri']}) shows {r['faces']} faces but no "
                "face action is recorded; re-run the clean stage"
            )
    encrypted, stored = encrypted_count()
    if load_params().ingest.encrypt_raw and encrypted < stored:
        problems.append(
            f"{stored - encrypted} raw records are stored in plaintext though ingest.encrypt_raw is on; "
            "run the ingest stage (it encrypts the store in place)"
        )
    erased = erased_digests()
    problems += [
        f"record {r[:12]} was erased (erasure {erased[record_digest(r)]}) but is in the training set; run `atelier run`"
        for r in train["record_id"]
        if record_digest(r) in erased
    ]
    rejects = pd.read_parquet(paths.CLEAN_REJECTS, columns=["reason"]) if paths.CLEAN_REJECTS.exists() else None
    opted_creators = {c for r in train.to_dict("records") if (c := identify(r, opt_outs)) is not None}
    noai_in_train = int(train["noai"].sum())
    return {
        "train_records": len(train),
        "excluded_records": len(excluded),
        "per_license_and_decision": {f"{lic} / train": n for lic, n in sorted(Counter(train["license_spdx"]).items())}
        | {
            f"{lic or 'none'} / exclude": n
            for lic, n in sorted(Counter(excluded["license_spdx"].fillna("none")).items())
        },
        "excluded_per_reason": dict(sorted(Counter(excluded["reason"]).items())),
        "attribution_required": int(train["requires_attribution"].sum()),
        "opt_outs_honoured": int(excluded["opted_out"].sum()),
        "opted_out_creators_in_training_set": sorted(opted_creators),
        "noai_records_in_training_set": noai_in_train,
        "policy": policy.model_dump(),
        "privacy": privacy_counts(train, rejects, (encrypted, stored), len(erased)),
        "problems": problems
        + [f"opted-out creator '{c}' has records in the training set" for c in opted_creators]
        + ([f"{noai_in_train} records flagged noai are in the training set"] if noai_in_train else []),
    }
