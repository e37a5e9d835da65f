"""Which model versions trained on some records, and which artworks those versions made: the lineage that a
takedown, an erasure and a url source's re-check report, read from the registry's tags, the recorded training sets
(DVC) and the ledger. Read only: nothing is tagged or created."""

from __future__ import annotations

from atelier.config import load_params
from atelier.lineage import training_records
from provenance import ledger


def used_by(hits) -> dict:
    """Versions whose training records have rows where `hits(records)` (a boolean Series) holds, and their artworks
    (the ledger is read, never created)."""
    from registry import tracking

    name = load_params().registry.model_name
    versions, artworks, unknown, citing, quarantined = [], [], [], [], []
    conn = ledger.open_read_only()
    try:
        for v in tracking.all_versions(name):
            md5 = v["tags"].get("dataset_md5")
            try:
                records = training_records(md5)
            except (FileNotFoundError, TypeError):
                unknown.append(v["version"])
                continue
            mask = hits(records)
            found = int(mask.sum())
            if found:
                versions.append({"version": v["version"], "records": found, "aliases": v["aliases"]})
                made = ledger.by_model_version(conn, name, v["version"]) if conn else []
                artworks += [{"id": a["id"], "model_version": v["version"]} for a in made]
                ids = set(records.loc[mask, "record_id"])
                citing += [
                    {"id": a["id"], "model_version": v["version"], "records": cited}
                    for a in made
                    if (cited := _cited((a["manifest"].get("checks") or {}).get("nearest_training_images"), ids))
                ]
                quarantined += [
                    {"id": q["id"], "model_version": v["version"], "records": cited}
                    for q in (ledger.refusals(conn, name) if conn else [])
                    if q["model_version"] == v["version"] and (cited := _cited(q["nearest"], ids))
                ]
    finally:
        if conn:
            conn.close()
    return {
        "model": name,
        "versions": versions,
        "artworks": artworks,  # every artwork of those versions: the models that made them learnt from the work
        "citing": citing,  # the published artworks that name the work among their nearest training images
        "quarantined_citing": quarantined,  # the refused (quarantined) ones that do
        "versions_with_unknown_data": unknown,
    }


def _cited(nearest: list | None, ids: set[str]) -> list[str]:
    """The record ids of `ids` that a nearest-training-images list names."""
    return sorted({item.get("record_id") for item in nearest or [] if item.get("record_id") in ids})


def records_used_by(record_ids: list[str]) -> dict:
    """`used_by` for the training records whose id is one of `record_ids`."""
    wanted = set(record_ids)
    return used_by(lambda records: records["record_id"].isin(wanted))
