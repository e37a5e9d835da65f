"""promote stage: judge the newest challenger once with the gate, move `champion` when it passes, and write
models/champion.json from the registry. The file follows the registry, never the reverse: a person who moved the
alias in the MLflow UI is honoured here."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from atelier import paths
from atelier.config import Params, load_params
from atelier.gate import OPTIONAL, REQUIRED, gate
from atelier.hashing import weights_digest
from atelier.io import write_json

GATE_TAG = "gate.decision"
HEADLINE_KEYS = REQUIRED + OPTIONAL


def metrics_from_tags(tags: dict[str, str]) -> dict[str, float]:
    """Headline evaluation metrics recorded as `eval.<key>` tags on a model version."""
    return {k: float(tags[f"eval.{k}"]) for k in HEADLINE_KEYS if f"eval.{k}" in tags}


def _pipeline_dir(model_name: str, info: dict, scratch: Path) -> Path:
    """A version's pipeline folder: models/diffusion when it holds that version's weights, else downloaded."""
    from registry import tracking

    if paths.DIFFUSION_DIR.exists() and weights_digest(paths.DIFFUSION_DIR) == info["tags"].get("weights_sha256"):
        return paths.DIFFUSION_DIR
    return tracking.download_pipeline(model_name, info["version"], scratch / f"v{info['version']}")


def paired_comparison(model_name: str, candidate: dict, champion: dict, params: Params) -> dict:
    """The candidate and the champion on the same prompts and seeds (the candidate's evaluation prompt set, the
    headline guidance), each image scored by the candidate's evaluator: CLIPScore differences, paired."""
    import torch.nn.functional as F

    from atelier.models.clip import encode_images, encode_texts, image_size, load_evaluator
    from atelier.models.latent_diffusion import LatentDiffusionPipeline
    from atelier.models.metrics import clip_score, paired_difference

    e = params.evaluate
    report = json.loads(paths.EVAL_REPORT.read_text(encoding="utf-8"))
    evaluated = (report.get("model") or {}).get("version")
    if evaluated != candidate["version"]:
        raise RuntimeError(f"{paths.relative(paths.EVAL_REPORT)} evaluates version {evaluated}, not the candidate "
                           f"version {candidate['version']}; run `dvc repro evaluate` first")
    prompts = [q for q in report["prompt_set"] for _ in range(e.per_prompt)]
    with tempfile.TemporaryDirectory(dir=paths.MODELS) as scratch:
        cand_dir = _pipeline_dir(model_name, candidate, Path(scratch))
        champ_dir = _pipeline_dir(model_name, champion, Path(scratch))
        evaluator, tokenizer = load_evaluator(cand_dir)[:2]
        text = encode_texts(evaluator, tokenizer, prompts)
        size = image_size(evaluator)
        scores = []
        for folder in (cand_dir, champ_dir):
            pipe = LatentDiffusionPipeline.from_pretrained(folder)
            images = pipe.generate_tensor(prompts, seed=e.seed, steps=e.sampling_steps, guidance=e.headline_guidance,
                                          batch_size=24)
            if images.shape[-1] != size:  # a champion trained at another resolution: compare at the evaluator's
                images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
            scores.append(clip_score(encode_images(evaluator, images), text).tolist())
    result = paired_difference(scores[0], scores[1])
    return {**result, "champion": champion["version"], "guidance": e.headline_guidance,
            "figure": "CLIPScore (2.5 x max(cos, 0), 0-2.5) on the candidate's evaluator; candidate minus champion"}


def record_promotion(model_name: str, version: str, by: str, reason: str, previous: str | None) -> dict:
    """Record who made `version` champion (a person, or "gate"), when (now, UTC) and why: as `promotion.*` tags on
    the version in the registry and as a row of the ledger's `promotions` table (its log's head signed again). Returns
    what was recorded."""
    from provenance import ledger, publiclog
    from provenance.keys import ensure_signing_identity
    from registry import tracking

    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tracking.tag_promotion(model_name, version, by, at, reason, previous)
    conn = ledger.open_ledger(paths.LEDGER)
    try:
        ledger.record_promotion(conn, model_name, version, by, at, reason, previous)
        publiclog.seal(conn, ensure_signing_identity())  # the log's new head, signed
    finally:
        conn.close()
    return {"version": str(version), "by": by, "at": at, "reason": reason, "previous_champion": previous}


def judge(model_name: str, version: str) -> dict:
    """Run the gate on `version` against the current champion; move the alias if it passes; record the decision."""
    from registry import tracking

    params = load_params()
    candidate = tracking.get_version(model_name, version)
    champion = tracking.version_by_alias(model_name, tracking.CHAMPION)
    if champion and champion["version"] == version:
        return {"candidate_version": version, "decision": "already champion", "reason": "no change"}
    # a champion marked by a takedown sets no bar: any candidate passing the rules replaces it
    paired = None
    if champion and not champion["tags"].get("takedown"):
        paired = paired_comparison(model_name, candidate, champion, params)
    result = gate(metrics_from_tags(candidate["tags"]), paired, params.promote)
    marked = candidate["tags"].get("takedown")  # trained on a work taken down since: never champion
    if result.passed and not marked:
        tracking.set_alias(model_name, tracking.CHAMPION, version)
        record_promotion(model_name, version, "gate", f"passed the promotion gate: {result.explain()}",
                         champion["version"] if champion else None)
    decision = "promoted to champion" if result.passed and not marked else "stays challenger"
    explain = result.explain() + (f"; marked by a takedown ({marked}), so not promoted" if marked else "")
    tracking.tag_version(model_name, version, GATE_TAG, f"{decision}: {explain}")
    return {"candidate_version": version, "decision": decision, "reason": explain,
            "checks": [c.as_dict() for c in result.checks], "paired_with_champion": paired,
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
