"""promote stage: judge the newest challenger once with the gate, move `champion` when it passes, and write
models/champion.json from the registry. The file follows the registry, never the reverse: a person who moved the
alias in the MLflow UI is honoured here."""

from __future__ import annotations

import json

from atelier import paths
from atelier.config import load_params
from atelier.gate import gate
from atelier.io import write_json

GATE_TAG = "gate.decision"
HEADLINE_KEYS = ("clip_score", "style_accuracy", "palette_accuracy", "replication_rate")


def metrics_from_tags(tags: dict[str, str]) -> dict[str, float]:
    """Headline evaluation metrics recorded as `eval.<key>` tags on a model version."""
    return {k: float(tags[f"eval.{k}"]) for k in HEADLINE_KEYS if f"eval.{k}" in tags}


def judge(model_name: str, version: str) -> dict:
    """Run the gate on `version` against the current champion; move the alias if it passes; record the decision."""
    from registry import tracking

    params = load_params().promote
    candidate = tracking.get_version(model_name, version)
    champion = tracking.version_by_alias(model_name, tracking.CHAMPION)
    if champion and champion["version"] == version:
        return {"candidate_version": version, "decision": "already champion", "reason": "no change"}
    # a champion marked by a takedown sets no bar: any candidate passing the thresholds replaces it
    bar = metrics_from_tags(champion["tags"]) if champion and not champion["tags"].get("takedown") else None
    result = gate(metrics_from_tags(candidate["tags"]), bar, params)
    if result.passed:
        tracking.set_alias(model_name, tracking.CHAMPION, version)
    decision = "promoted to champion" if result.passed else "stays challenger"
    tracking.tag_version(model_name, version, GATE_TAG, f"{decision}: {result.explain()}")
    return {"candidate_version": version, "decision": decision, "reason": result.explain(),
            "previous_champion": champion["version"] if champion else None}


def champion_record(model_name: str) -> dict:
    """What models/champion.json holds: the registry's current champion, or none."""
    from registry import tracking

    champion = tracking.version_by_alias(model_name, tracking.CHAMPION)
    if champion is None:
        return {"name": model_name, "version": None, "alias": tracking.CHAMPION,
                "note": "no version holds the champion alias yet"}
    tags = champion["tags"]
    return {"name": model_name, "version": champion["version"], "alias": tracking.CHAMPION,
            "run_id": champion["run_id"], "weights_sha256": tags.get("weights_sha256"),
            "dataset_md5": tags.get("dataset_md5"), "metrics": metrics_from_tags(tags)}


def main() -> dict:
    """Judge the challenger from reports/train.json (once per version), then sync models/champion.json."""
    from registry import tracking

    params = load_params()
    name = params.registry.model_name
    trained = json.loads(paths.TRAIN_SUMMARY.read_text())
    version = trained["version"]
    already = tracking.get_version(name, version)["tags"].get(GATE_TAG)
    if already:
        decision = {"candidate_version": version, "decision": "judged before", "reason": already}
    else:
        decision = judge(name, version)
    record = champion_record(name)
    write_json(paths.PROMOTION, decision)
    write_json(paths.CHAMPION, record)
    print(f"promote: version {version}: {decision['decision']} ({decision['reason']}); "
          f"champion is version {record['version']}")
    return decision


if __name__ == "__main__":
    main()
