"""Everything MLflow: tracking setup, runs, datasets, the model registry and its aliases. Nothing else imports
mlflow."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from atelier import components, paths
from atelier.cards import card_sha256, model_card
from atelier.config import load_params
from registry.store import tracking_uri

CHALLENGER, CHAMPION = "challenger", "champion"
PIP_REQUIREMENTS = ["torch", "diffusers", "open-clip-torch", "safetensors", "pandas", "pillow", "transformers", "peft"]


def client() -> MlflowClient:
    """A client bound to the project's tracking and registry store."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(name: str) -> str:
    """The experiment's id, creating it: with artifacts under the project's mlartifacts/ folder on the embedded
    store; on a tracking server (team mode), where the server puts them (its proxied artifact store)."""
    c = client()
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if tracking_uri().startswith(("http://", "https://")):
        try:
            return c.create_experiment(name)
        except MlflowException:  # another machine created it meanwhile
            return c.get_experiment_by_name(name).experiment_id
    location = paths.MLARTIFACTS.resolve().as_uri()
    return c.create_experiment(name, artifact_location=location)


@dataclass
class TrainingRecord:
    """What a training run hands to the registry."""

    params: dict
    curves: dict[str, list[float]]  # name -> values per step
    metrics: dict[str, float]
    tags: dict[str, str]
    dataset: pd.DataFrame
    dataset_digest: str  # the DVC md5 of the training data
    dataset_source: str
    pipeline_dir: Path
    artifacts: list[Path]
    dataset_card: Path = paths.DATASET_CARD  # logged as cards/croissant.json; its sha256 tags the version
    datasheet: Path = paths.DATASHEET  # logged as cards/DATASHEET.md


def log_training(record: TrainingRecord, model_name: str, experiment: str) -> dict:
    """Log a run (params, curves, metrics, dataset input, tags, artifacts, the dataset card and datasheet under
    cards/), register the model, alias it challenger, and write its model card (not evaluated yet)."""
    for card in (record.dataset_card, record.datasheet):
        if not Path(card).is_file():
            raise FileNotFoundError(
                f"{paths.relative(card)}: the training set's card is missing; run the license "
                "stage first (dvc repro license)"
            )
    dataset_card_sha256 = card_sha256(record.dataset_card)
    resolution = _resolution(record.pipeline_dir)
    tags = {**record.tags, **component_tags(record.pipeline_dir, dataset_card_sha256)}
    c = client()
    with mlflow.start_run(experiment_id=experiment_id(experiment)) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in record.params.items()})
        for name, values in record.curves.items():
            for step, value in enumerate(values):
                c.log_metric(run.info.run_id, name, float(value), step=step)
        mlflow.log_metrics({k: float(v) for k, v in record.metrics.items()})
        dataset = mlflow.data.from_pandas(
            record.dataset, source=record.dataset_source, name="licensed-train", digest=record.dataset_digest
        )
        mlflow.log_input(dataset, context="training")
        mlflow.set_tags(tags)
        for artifact in record.artifacts:
            mlflow.log_artifact(str(artifact))
        mlflow.log_artifact(str(record.dataset_card), artifact_path="cards")
        mlflow.log_artifact(str(record.datasheet), artifact_path="cards")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"pipeline": str(record.pipeline_dir)},
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=model_name,
        )
    version = str(info.registered_model_version)
    for key, value in tags.items():
        c.set_model_version_tag(model_name, version, key, value)
    c.set_model_version_tag(model_name, version, "dataset_digest", record.dataset_digest)
    c.set_model_version_tag(model_name, version, "dataset_card_sha256", dataset_card_sha256)
    c.set_model_version_tag(model_name, version, "resolution", str(resolution))
    c.set_registered_model_alias(model_name, CHALLENGER, version)
    write_model_card(model_name, version)
    return {"run_id": run.info.run_id, "model_name": model_name, "version": version, "model_uri": info.model_uri}


def log_evaluation(
    run_id: str, model_name: str, version: str, metrics: dict[str, float], artifacts: list[Path]
) -> None:
    """Attach evaluation metrics (as `eval_<key>`) and plots to the training run, and the metrics as `eval.<key>`
    tags on the model version."""
    c = client()
    for key, value in metrics.items():
        c.log_metric(run_id, f"eval_{key}", float(value))
        c.set_model_version_tag(model_name, version, f"eval.{key}", f"{value:.6g}")
    for artifact in artifacts:
        c.log_artifact(run_id, str(artifact), artifact_path="evaluation")
    if "dataset_card_sha256" in (c.get_model_version(model_name, version).tags or {}):
        write_model_card(model_name, version, evaluation=metrics)
    else:
        print(
            f"evaluate: note: {model_name} version {version} was registered without a dataset card, so its model "
            "card is not written; re-run train_diffusion (dvc repro train_diffusion) to register one with it",
            file=sys.stderr,
        )


def component_tags(pipeline_dir: Path, dataset_card_sha256: str) -> dict[str, str]:
    """Tags `components` (every part of the model as JSON: atelier/components.py), `licensed_only` (true/false) and
    `licensed_only_reason`, from params.yaml and the weights on disk; refused when the pretrained CLIP changed since
    the train_clip stage recorded its digest (reports/clip.json)."""
    clip_report = paths.REPORTS / "clip.json"
    recorded = (
        json.loads(clip_report.read_text(encoding="utf-8")).get("pretrained_weights_sha256")
        if clip_report.exists()
        else None
    )
    parts = components.for_run(load_params(), dataset_card_sha256, pipeline_dir, recorded)
    verdict, reason = components.licensed_only(parts)
    return {
        "components": components.as_tag(parts),
        "licensed_only": str(verdict).lower(),
        "licensed_only_reason": reason[: components.TAG_LIMIT],
    }


MODEL_CARD_TAGS = (
    "weights_sha256",
    "backend",
    "resolution",
    "dataset_digest",
    "dataset_card_sha256",
    "train_records",
    "license_summary",
)


def _resolution(pipeline_dir: Path) -> int:
    """The training resolution recorded in the pipeline's atelier_config.json."""
    config = Path(pipeline_dir) / "atelier_config.json"
    try:
        return int(json.loads(config.read_text(encoding="utf-8"))["resolution"])
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise ValueError(
            f"{paths.relative(config)}: no training resolution ({exc!r}); the pipeline folder must be "
            "written by LatentDiffusionPipeline.save_pretrained"
        ) from None


def write_model_card(model_name: str, version: str, evaluation: dict[str, float] | None = None) -> str:
    """Build the version's model card from its tags, its run's dataset card and `evaluation` (eval.json's headline
    figures, None before evaluation); log it as cards/MODEL_CARD.md on the run and set it as the version's
    description. Return the card."""
    c = client()
    mv = c.get_model_version(model_name, str(version))
    tags = dict(mv.tags or {})
    missing = [key for key in MODEL_CARD_TAGS if key not in tags]
    if missing:
        raise LookupError(
            f"model '{model_name}' version {version} lacks the tags {missing} that its model card "
            "states; register it through stages/train_diffusion.py"
        )
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path="cards/croissant.json", dst_path=tmp
        )
        if card_sha256(Path(local)) != tags["dataset_card_sha256"]:
            raise ValueError(
                f"run {mv.run_id}: cards/croissant.json does not match the sha256 tagged on {model_name} "
                f"version {version} (dataset_card_sha256); the run's artifacts were changed"
            )
        dataset_card = json.loads(Path(local).read_text(encoding="utf-8"))
    model = {
        "name": model_name,
        "version": str(version),
        "run_id": mv.run_id,
        "weights_sha256": tags["weights_sha256"],
        "backend": tags["backend"],
        "resolution": tags["resolution"],
        "git_commit": tags.get("git_commit", "unknown"),
    }
    dataset = {
        "name": dataset_card["name"],
        "card_sha256": tags["dataset_card_sha256"],
        "dvc_md5": tags["dataset_digest"],
        "records": tags["train_records"],
        "per_license": json.loads(tags["license_summary"]),
    }
    parts = components.from_tag(tags["components"]) if "components" in tags else None
    text = model_card(model, dataset, evaluation, parts, tags.get("licensed_only_reason"))
    c.log_text(mv.run_id, text, "cards/MODEL_CARD.md")
    c.update_model_version(model_name, str(version), description=text)
    return text


def version_by_alias(model_name: str, alias: str) -> dict | None:
    """The version holding `alias` as a dict (version, run_id, tags), or None when no version holds it."""
    try:
        mv = client().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    return _describe(mv, alias)


def get_version(model_name: str, version: str) -> dict:
    """One registered version as a dict; raise LookupError with a clear message if it does not exist."""
    try:
        mv = client().get_model_version(model_name, str(version))
    except MlflowException:
        raise LookupError(f"model '{model_name}' has no version {version} in {tracking_uri()}") from None
    return _describe(mv, None)


def _describe(mv, alias: str | None) -> dict:
    return {
        "name": mv.name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "alias": alias,
        "aliases": list(getattr(mv, "aliases", []) or []),
        "tags": dict(mv.tags or {}),
        "source": mv.source,
    }


def set_alias(model_name: str, alias: str, version: str) -> None:
    """Point `alias` at `version` (this is what a person does in the MLflow UI)."""
    get_version(model_name, version)
    client().set_registered_model_alias(model_name, alias, str(version))


def tag_version(model_name: str, version: str, key: str, value: str) -> None:
    """Set one tag on a model version."""
    client().set_model_version_tag(model_name, str(version), key, value)


def download_pipeline(model_name: str, version: str, dest: Path) -> Path:
    """Download the pipeline folder of `models:/<name>/<version>` into `dest`; return its path."""
    client()
    dest.mkdir(parents=True, exist_ok=True)
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}", dst_path=str(dest))
    )
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    return local / mlmodel["flavors"]["python_function"]["artifacts"]["pipeline"]["path"]


def download_run_file(run_id: str, artifact_path: str, dest: Path) -> Path:
    """Download one artifact file logged on a run to `dest`/`artifact_path` (its folders kept: MLflow alone would
    put `evaluation/eval.json` at `dest`/eval.json); return its local path."""
    client()
    folder = dest / Path(artifact_path).parent
    folder.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(folder)))


def load_pyfunc(model_name: str, alias: str):
    """Load `models:/<name>@<alias>` as an MLflow pyfunc."""
    client()
    return mlflow.pyfunc.load_model(f"models:/{model_name}@{alias}")


def all_versions(model_name: str) -> list[dict]:
    """Every registered version of a model, oldest first, each with the aliases it holds (a version search returns
    none: they are read from the registered model)."""
    c = client()
    found = c.search_model_versions(f"name = '{model_name}'")
    try:
        held = dict(c.get_registered_model(model_name).aliases or {})
    except MlflowException:
        held = {}
    return sorted(
        (
            _describe(mv, None) | {"aliases": sorted(a for a, v in held.items() if str(v) == str(mv.version))}
            for mv in found
        ),
        key=lambda v: int(v["version"]),
    )


def tag_promotion(model_name: str, version: str, by: str, at: str, reason: str, previous: str | None) -> None:
    """Record on the version who made it champion (`promotion.by`), when (`promotion.at`, UTC ISO), why
    (`promotion.reason`) and which version it replaced (`promotion.previous_champion`)."""
    c = client()
    for key, value in (("by", by), ("at", at), ("reason", reason), ("previous_champion", previous or "none")):
        c.set_model_version_tag(model_name, str(version), f"promotion.{key}", str(value)[:5000])


def log_quarantine(model_name: str, version: str, quarantined: int, made: int) -> None:
    """Count artworks refused as possible replications on the version's training run (metrics `generate_quarantined`
    and `generate_published`, one step per generate call) and on the version (tag `generate.quarantined`, a running
    total)."""
    c = client()
    mv = c.get_model_version(model_name, str(version))
    history = c.get_metric_history(mv.run_id, "generate_quarantined")
    c.log_metric(mv.run_id, "generate_quarantined", float(quarantined), step=len(history))
    c.log_metric(mv.run_id, "generate_published", float(made - quarantined), step=len(history))
    total = int((mv.tags or {}).get("generate.quarantined", 0)) + quarantined
    c.set_model_version_tag(model_name, str(version), "generate.quarantined", str(total))


def log_run_file(run_id: str, path: Path, artifact_path: str) -> None:
    """Log one file on a run under `artifact_path` (e.g. a version's signed model credential)."""
    client().log_artifact(run_id, str(path), artifact_path=artifact_path)


def log_preference(
    model_name: str, version: str, scores: dict[str, dict], votes: int, plot: Path, head_to_head: dict | None = None
) -> None:
    """Log reviewers' preference on the version's training run (metrics `pref_score_<item>` for every scored item,
    `pref_votes` and, against the champion, `pref_win_rate_vs_champion`, one step per call; the plot as
    preference/scores.png) and as `preference.*` tags on the version (its own score and interval, the vote count, the
    win rate against the champion with its interval)."""
    c = client()
    mv = c.get_model_version(model_name, str(version))
    step = len(c.get_metric_history(mv.run_id, "pref_votes"))
    for item, s in scores.items():
        c.log_metric(mv.run_id, f"pref_score_{item}", float(s["score"]), step=step)
    c.log_metric(mv.run_id, "pref_votes", float(votes), step=step)
    tags = {"preference.votes": str(votes)}
    own = scores.get(f"v{version}")
    if own:
        tags["preference.score"] = f"{own['score']:.4f} [{own['low']:.4f}, {own['high']:.4f}] (95%, Bradley-Terry)"
    if head_to_head and head_to_head.get("votes"):
        c.log_metric(mv.run_id, "pref_win_rate_vs_champion", float(head_to_head["win_rate"]), step=step)
        tags["preference.win_rate_vs_champion"] = (
            f"{head_to_head['win_rate']:.4f} [{head_to_head['low']:.4f}, {head_to_head['high']:.4f}] (95% Wilson, "
            f"{head_to_head['votes']} votes against version {head_to_head['champion']})"
        )
    for key, value in tags.items():
        c.set_model_version_tag(model_name, str(version), key, value)
    c.log_artifact(mv.run_id, str(plot), artifact_path="preference")
