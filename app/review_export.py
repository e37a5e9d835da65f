"""Reviewers' votes as data: read them from the ledger (read-only) and export them as a Croissant-described dataset,
so the team's own preference data can be audited like its training data (`atelier review export FOLDER`).

The export is pseudonymous: reviewers appear by the pseudonym they chose; their consent is recorded as the sha256 of
the consent statement they accepted (with its version) and its time. Nothing else personal is stored in the ledger,
so nothing else is exported. The card is deterministic (no clock, no path): the same votes give the same bytes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd

from atelier import paths
from atelier.cards import CONTEXT, CROISSANT, CROISSANT_RAI, card_text, croissant_field
from atelier.io import write_parquet, write_text
from provenance.votes import read_reviewers, read_votes

DATASET_NAME = "atelier-review-votes"
RECORD_SET = "votes"
# votes.parquet's columns: column -> (Croissant data type, description)
FIELDS = {
    "vote_id": ("sc:Integer", "the vote's number in the ledger's votes table"),
    "reviewer": ("sc:Text", "the pseudonym the reviewer chose (no name, e-mail or address is collected)"),
    "consent": ("sc:Text", "the consent statement the reviewer accepted: its version and 'sha256:' its text's hash"),
    "consented_at": ("sc:Text", "when the reviewer consented (ISO 8601, UTC)"),
    "prompt": ("sc:Text", "the prompt both artworks were made from"),
    "seed": ("sc:Integer", "the seed both artworks were made with"),
    "left_artwork": ("sc:Text", "id of the artwork shown on the left"),
    "right_artwork": ("sc:Text", "id of the artwork shown on the right"),
    "left_version": ("sc:Text", "model version of the left artwork"),
    "right_version": ("sc:Text", "model version of the right artwork"),
    "left_guidance": ("sc:Float", "guidance scale of the left artwork"),
    "right_guidance": ("sc:Float", "guidance scale of the right artwork"),
    "choice": ("sc:Text", "left, right, tie, or flag"),
    "flag_reason": ("sc:Text", "for a flag: existing_work, offensive or broken; empty otherwise"),
    "flagged": ("sc:Text", "for a flag: the artwork id it is about; empty otherwise"),
    "created_at": ("sc:Text", "when the vote was cast (ISO 8601, UTC)"),
}


def consent_reference(consent: str) -> str:
    """The consent as exported: kept when the ledger already stores a statement reference ("<version> sha256:<hex>"),
    else the sha256 of the statement's text."""
    if re.fullmatch(r"\S+ sha256:[0-9a-f]{64}", consent):
        return consent
    return "sha256:" + hashlib.sha256(consent.encode("utf-8")).hexdigest()


def votes_table(votes: list[dict], reviewers: dict[str, dict]) -> pd.DataFrame:
    """The exported table: one row per vote, the reviewer's consent as a statement hash and time."""
    missing = sorted({v["reviewer"] for v in votes} - set(reviewers))
    if missing:
        raise ValueError(
            f"votes by {missing} have no consent in the ledger's reviewers table; they cannot be "
            "exported (a vote is stored only after consent: the ledger was changed by hand?)"
        )
    rows = [
        {
            "vote_id": int(v["id"]),
            "reviewer": v["reviewer"],
            "consent": consent_reference(reviewers[v["reviewer"]]["consent"]),
            "consented_at": reviewers[v["reviewer"]]["consented_at"],
            "prompt": v["prompt"],
            "seed": int(v["seed"]),
            "left_artwork": v["left_artwork"],
            "right_artwork": v["right_artwork"],
            "left_version": str(v["left_version"]),
            "right_version": str(v["right_version"]),
            "left_guidance": float(v["left_guidance"]),
            "right_guidance": float(v["right_guidance"]),
            "choice": v["choice"],
            "flag_reason": v["flag_reason"] or "",
            "flagged": v["flagged"] or "",
            "created_at": v["created_at"],
        }
        for v in votes
    ]
    frame = pd.DataFrame(rows, columns=list(FIELDS))
    return frame.astype({"vote_id": "int64", "seed": "int64", "left_guidance": "float64", "right_guidance": "float64"})


def review_card(table: pd.DataFrame, votes_sha256: str) -> dict:
    """The Croissant 1.1 card (with RAI fields) of votes.parquet, whose sha256 is `votes_sha256`."""
    choices = table["choice"].value_counts().to_dict()
    counts = ", ".join(f"{k} {choices[k]}" for k in sorted(choices)) or "none"
    reviewers = int(table["reviewer"].nunique())
    dated = {"datePublished": str(table["created_at"].max())} if len(table) else {}  # the newest vote, not a clock
    return {
        **dated,
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": [CROISSANT, CROISSANT_RAI],
        "name": DATASET_NAME,
        "version": "1.0.0",
        "description": (
            f"Atelier's reviewers' pairwise preferences between artworks: {len(table)} votes by "
            f"{reviewers} pseudonymous reviewers ({counts}). Each vote compares two artworks made from "
            "the same prompt and seed by two model versions or guidance settings."
        ),
        "citeAs": f"Atelier, {DATASET_NAME}: reviewers' votes, votes.parquet sha256 {votes_sha256}",
        "keywords": ["human preference", "pairwise comparison", "text-to-image", "atelier"],
        "license": "https://creativecommons.org/publicdomain/zero/1.0/",
        "distribution": [
            {
                "@type": "cr:FileObject",
                "@id": "votes.parquet",
                "name": "votes.parquet",
                "contentUrl": "votes.parquet",
                "sha256": votes_sha256,
                "encodingFormat": "application/x-parquet",
                "description": "the votes, one row per vote",
            }
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": RECORD_SET,
                "name": RECORD_SET,
                "description": "one record per vote: the pair shown, the choice, the reviewer's pseudonym",
                "key": {"@id": f"{RECORD_SET}/vote_id"},
                "field": [croissant_field(RECORD_SET, "votes.parquet", column, *FIELDS[column]) for column in FIELDS],
            }
        ],
        "prov:wasGeneratedBy": {
            "@type": "prov:Activity",
            "name": "atelier review",
            "description": "the review page served by `atelier review`; votes kept in the ledger "
            "database, exported by `atelier review export`",
        },
        "rai:dataCollection": (
            "Pairwise comparisons by consenting reviewers on Atelier's review page: two artworks for the same prompt "
            "and seed, from different model versions or guidance settings, sides randomised; the reviewer chooses "
            "left, right or tie, or flags an artwork (looks like a specific existing work, offensive, broken)."
        ),
        "rai:dataCollectionType": ["Direct Collection"],
        "rai:personalSensitiveInformation": (
            "Pseudonyms only: each reviewer chooses a pseudonym and consents once before voting; the consent is "
            "recorded (the sha256 of the statement accepted, and the time). No name, e-mail, IP address or other "
            "personal data is collected or exported."
        ),
        "rai:dataUseCases": (
            "Auditing and reproducing Atelier's preference scores (a Bradley-Terry fit) and the promotion gate's "
            "preference rule; studying which model versions and guidance settings reviewers prefer. Not for "
            "identifying or profiling reviewers."
        ),
        "rai:dataLimitations": (
            f"Few reviewers ({reviewers}) from one team: their taste is not a population's. Ties count half a win "
            "to each side; flags are not preferences."
        ),
        "rai:dataBiases": (
            "Reviewers are the operator's own team, who may recognise the models' styles; the sides "
            "are randomised to reduce position bias."
        ),
    }


def export(folder: Path, ledger: Path = paths.LEDGER) -> dict:
    """Write `folder`/votes.parquet and `folder`/croissant.json from the ledger's votes; return a summary."""
    folder = Path(folder)
    table = votes_table(read_votes(ledger), read_reviewers(ledger))
    write_parquet(folder / "votes.parquet", table)
    digest = hashlib.sha256((folder / "votes.parquet").read_bytes()).hexdigest()
    write_text(folder / "croissant.json", card_text(review_card(table, digest)))
    return {
        "folder": str(folder),
        "votes": len(table),
        "reviewers": int(table["reviewer"].nunique()),
        "votes_sha256": digest,
    }
