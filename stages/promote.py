"""promote stage: judge the newest challenger once with the gate, move `champion` when it passes, and write
models/champion.json from the registry. The file follows the registry, never the reverse: a person who moved the
alias in the MLflow UI is honoured here.

Reviewers' votes (the ledger's votes table, read-only) feed the gate's preference rule, give each version a
Bradley-Terry score (logged to MLflow, shown in the run summary), may name the champion's preferred guidance, and
their "looks like an existing work" flags are written to reports/review_flags.json, the takedown queue."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from atelier import paths, preference
from atelier.config import Params, load_params
from atelier.gate import OPTIONAL, REQUIRED, gate
from atelier.hashing import weights_digest
from atelier.io import write_json
from provenance.votes import read_votes

GATE_TAG = "gate.decision"
GUIDANCE_TAG = "preference.guidance"  # the champion's guidance setting reviewers clearly prefer, or "none"
HEADLINE_KEYS = REQUIRED + OPTIONAL
NO_VOTES = "not applied: no reviewers' votes in the ledger"


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
    from atelier.models.generator import load_generator
    from atelier.models.metrics import clip_score, paired_difference

    e = params.evaluate
    report = json.loads(paths.EVAL_REPORT.read_text(encoding="utf-8"))
    evaluated = (report.get("model") or {}).get("version")
    if evaluated != candidate["version"]:
        raise RuntimeError(
            f"{paths.relative(paths.EVAL_REPORT)} evaluates version {evaluated}, not the candidate "
            f"version {candidate['version']}; run `dvc repro evaluate` first"
        )
    prompts = [q for q in report["prompt_set"] for _ in range(e.per_prompt)]
    with tempfile.TemporaryDirectory(dir=paths.MODELS) as scratch:
        cand_dir = _pipeline_dir(model_name, candidate, Path(scratch))
        champ_dir = _pipeline_dir(model_name, champion, Path(scratch))
        evaluator, tokenizer = load_evaluator(cand_dir)[:2]
        text = encode_texts(evaluator, tokenizer, prompts)
        size = image_size(evaluator)
        scores = []
        for folder in (cand_dir, champ_dir):
            pipe = load_generator(folder)
            images = pipe.generate_tensor(
                prompts, seed=e.seed, steps=e.sampling_steps, guidance=e.headline_guidance, batch_size=24
            )
            if images.shape[-1] != size:  # a champion trained at another resolution: compare at the evaluator's
                images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
            scores.append(clip_score(encode_images(evaluator, images), text).tolist())
    result = paired_difference(scores[0], scores[1])
    return {
        **result,
        "champion": champion["version"],
        "guidance": e.headline_guidance,
        "figure": "CLIPScore (2.5 x max(cos, 0), 0-2.5) on the candidate's evaluator; candidate minus champion",
    }


def record_promotion(model_name: str, version: str, by: str, reason: str, previous: str | None) -> dict:
    """Record who made `version` champion (a person, or "gate"), when (now, UTC) and why: as `promotion.*` tags on
    the version in the registry and as a row of the ledger's `promotions` table (its log's head signed again). Returns
    what was recorded."""
    from provenance import ledger, publiclog
    from provenance.keys import ensure_signing_identity
    from registry import tracking

    at = datetime.now(UTC).isoformat(timespec="seconds")
    tracking.tag_promotion(model_name, version, by, at, reason, previous)
    conn = ledger.open_ledger()
    try:
        ledger.record_promotion(conn, model_name, version, by, at, reason, previous)
        publiclog.seal(conn, ensure_signing_identity())  # the log's new head, signed
    finally:
        conn.close()
    return {"version": str(version), "by": by, "at": at, "reason": reason, "previous_champion": previous}


class PromotionRefused(Exception):
    """A promotion by hand that cannot be made; the message says why and what to do."""


def promote_by_hand(version: str, by: str, reason: str) -> tuple[dict, dict]:
    """A person's decision: move `champion` to `version`, record who, when and why (registry tags and the ledger) and
    sync models/champion.json; return (what was recorded, the champion record). A version marked by a takedown is
    refused with PromotionRefused."""
    from registry import tracking

    name = load_params().registry.model_name
    info = tracking.get_version(name, version)
    if info["tags"].get("takedown"):
        raise PromotionRefused(
            f"{name} version {info['version']} is marked by a takedown ({info['tags']['takedown']}); "
            "it cannot be promoted. Run the pipeline to retrain without the work, then promote the "
            "new version"
        )
    previous = tracking.version_by_alias(name, tracking.CHAMPION)
    tracking.set_alias(name, tracking.CHAMPION, info["version"])
    recorded = record_promotion(name, info["version"], by, reason, previous["version"] if previous else None)
    record = champion_record(name)
    write_json(paths.CHAMPION, record)
    return recorded, record


def judge(model_name: str, version: str) -> dict:
    """Run the gate on `version` against the current champion; move the alias if it passes; record the decision."""
    from registry import tracking

    params = load_params()
    candidate = tracking.get_version(model_name, version)
    champion = tracking.version_by_alias(model_name, tracking.CHAMPION)
    if champion and champion["version"] == version:
        return {"candidate_version": version, "decision": "already champion", "reason": "no change"}
    # a champion marked by a takedown sets no bar: any candidate passing the rules replaces it
    paired = h2h = None
    votes = read_votes(paths.LEDGER)
    if champion and not champion["tags"].get("takedown"):
        paired = paired_comparison(model_name, candidate, champion, params)
        if votes:
            h2h = preference.head_to_head(votes, version, champion["version"], params.promote.preference_ridge)
    result = gate(metrics_from_tags(candidate["tags"]), paired, params.promote, h2h)
    marked = candidate["tags"].get("takedown")  # trained on a work taken down since: never champion
    if result.passed and not marked:
        tracking.set_alias(model_name, tracking.CHAMPION, version)
        record_promotion(
            model_name,
            version,
            "gate",
            f"passed the promotion gate: {result.explain()}",
            champion["version"] if champion else None,
        )
    decision = "promoted to champion" if result.passed and not marked else "stays challenger"
    explain = result.explain() + (f"; marked by a takedown ({marked}), so not promoted" if marked else "")
    tracking.tag_version(model_name, version, GATE_TAG, f"{decision}: {explain}")
    rule = result.preference or (NO_VOTES if not votes else "not applied: no champion to compare with")
    return {
        "candidate_version": version,
        "decision": decision,
        "reason": explain,
        "checks": [c.as_dict() for c in result.checks],
        "paired_with_champion": paired,
        "previous_champion": champion["version"] if champion else None,
        "preference": {"rule": rule, "head_to_head": h2h},
    }


def preference_scores(votes: list[dict], params: Params, champion: str | None) -> dict:
    """Every version's Bradley-Terry score from the votes between versions (items `v<version>`), and the champion's
    preferred guidance setting from the votes between its settings (None when there are none)."""
    p = params.promote
    between = preference.version_comparisons(votes)
    scores = {f"v{k}": s for k, s in preference.fit(between, p.preference_ridge).items()} if between else {}
    guidance = (
        preference.preferred_guidance(votes, champion, params.generate.guidance, p.preference_ridge)
        if champion
        else None
    )
    return {
        "votes": sum(v["choice"] in preference.CHOICES for v in votes),
        "flags": sum(v["choice"] == "flag" for v in votes),
        "reviewers": len({v["reviewer"] for v in votes}),
        "scores": scores,
        "model": "Bradley-Terry, ties half, ridge prior N(0, 1/preference_ridge), 95% Laplace intervals",
        "preferred_guidance": guidance,
    }


def plot_scores(scores: dict[str, dict], path: Path) -> None:
    """Each item's preference score with its 95% interval, best on top."""
    from atelier.plots import plt  # matplotlib, headless

    items = sorted(scores, key=lambda k: scores[k]["score"])
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(items) + 1.5), dpi=100)
    ax.errorbar(
        [scores[k]["score"] for k in items],
        range(len(items)),
        fmt="o",
        color="#c0392b",
        capsize=3,
        xerr=[
            [scores[k]["score"] - scores[k]["low"] for k in items],
            [scores[k]["high"] - scores[k]["score"] for k in items],
        ],
    )
    ax.axvline(0, color="#999999", linewidth=0.8)
    ax.set_yticks(range(len(items)), [f"{k} ({scores[k]['votes']} votes)" for k in items])
    ax.set_xlabel("preference score (Bradley-Terry log-strength, centred; 95% interval)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def log_preference(model_name: str, summary: dict, h2h: dict | None, candidate: str) -> None:
    """Log the scores and plot on each scored version's run and tags, unless its tagged vote count is current."""
    from registry import tracking

    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / "scores.png"
        plot_scores(summary["scores"], plot)
        for item in summary["scores"]:
            version = item[1:]
            if tracking.get_version(model_name, version)["tags"].get("preference.votes") == str(summary["votes"]):
                continue  # nothing new since the last promote run
            tracking.log_preference(
                model_name,
                version,
                summary["scores"],
                summary["votes"],
                plot,
                h2h if version == str(candidate) else None,
            )


def write_flags(votes: list[dict]) -> list[dict]:
    """reports/review_flags.json: artworks reviewers flagged as looking like an existing work, for takedown."""
    flags = preference.existing_work_flags(votes)
    write_json(
        paths.REVIEW_FLAGS,
        {
            "flags": flags,
            "reason": "existing_work: reviewers say the artwork looks like a specific existing work",
            "next_step": "check each artwork, then `atelier takedown --image artworks/<artwork>.png --reason "
            '"review flag: looks like an existing work"` finds the training works it may copy and opts '
            "them out",
        },
    )
    return flags


def champion_record(model_name: str, follow_guidance: bool = False) -> dict:
    """What models/champion.json holds: the registry's current champion, or none; with `follow_guidance`, the
    guidance setting reviewers clearly prefer for it (its `preference.guidance` tag), when there is one."""
    from registry import tracking

    champion = tracking.version_by_alias(model_name, tracking.CHAMPION)
    if champion is None:
        return {
            "name": model_name,
            "version": None,
            "alias": tracking.CHAMPION,
            "note": "no version holds the champion alias yet",
        }
    tags = champion["tags"]
    record = {
        "name": model_name,
        "version": champion["version"],
        "alias": tracking.CHAMPION,
        "run_id": champion["run_id"],
        "weights_sha256": tags.get("weights_sha256"),
        "dataset_md5": tags.get("dataset_md5"),
        "metrics": metrics_from_tags(tags),
        # the components verdict registered with the version (None: registered before it was recorded)
        "licensed_only": {"true": True, "false": False}.get(tags.get("licensed_only", "")),
        "licensed_only_reason": tags.get("licensed_only_reason"),
    }
    if follow_guidance and tags.get(GUIDANCE_TAG, "none") != "none":
        record["guidance"] = float(tags[GUIDANCE_TAG])  # promote.follow_preferred_guidance: generate uses it
    return record


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
    votes = read_votes(paths.LEDGER)
    decision["flags"] = write_flags(votes)
    if votes:
        champion = tracking.version_by_alias(name, tracking.CHAMPION)
        summary = preference_scores(votes, params, champion["version"] if champion else None)
        decision["preference"] = {**decision.get("preference", {}), **summary}
        if summary["scores"]:
            log_preference(name, summary, (decision.get("preference") or {}).get("head_to_head"), version)
        g = summary["preferred_guidance"]
        if g is not None:
            tracking.tag_version(
                name, champion["version"], GUIDANCE_TAG, f"{g['guidance']:g}" if g["clearly"] else "none"
            )
    else:
        decision.setdefault("preference", {"rule": NO_VOTES})
    record = champion_record(name, params.promote.follow_preferred_guidance)
    write_json(paths.PROMOTION, decision)
    write_json(paths.CHAMPION, record)
    print(
        f"promote: version {version}: {decision['decision']} ({decision['reason']}); "
        f"champion is version {record['version']}"
    )
    return decision


if __name__ == "__main__":
    main()
