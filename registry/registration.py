"""Registering a trained diffusion model (either backend): the MLflow run with its params, curves, metrics, dataset
and plots, the model version aliased `challenger`, and the tags every version carries (dataset md5, record counts,
licences, code version, weights digest)."""

from __future__ import annotations

import json

import pandas as pd

from atelier import dvc, paths
from atelier.hashing import weights_digest
from atelier.plots import plot_license_breakdown, plot_training_curves
from atelier.version import code_version
from registry.tracking import TrainingRecord, log_training


def register_diffusion(
    params,
    records: pd.DataFrame,
    train: pd.DataFrame,
    licensed: dict,
    *,
    logged_params: dict,
    curves: dict[str, list[float]],
    metrics: dict,
    tags: dict,
) -> dict:
    """Log the training run of models/diffusion (either backend) and register it as challenger: its params, curves
    and metrics, the training records as its dataset, the licence summary, attribution and the loss and licence
    plots; `tags` add to the tags every run carries (dataset md5, record counts, licences, code, weights digest).
    Returns the registry coordinates with the dataset md5 and the weights digest."""
    data_md5 = dvc.lock_md5(paths.TRAIN_RECORDS)
    weights_sha256 = weights_digest(paths.DIFFUSION_DIR)
    common = {
        "dataset_md5": data_md5,
        "train_records": str(len(records)),
        "train_split_records": str(len(train)),
        "license_summary": json.dumps(licensed["train_per_license"], sort_keys=True),
        "excluded_summary": json.dumps(licensed["excluded_per_reason"], sort_keys=True),
        "git_commit": code_version(),
        "weights_sha256": weights_sha256,
    }
    record = TrainingRecord(
        params=logged_params,
        curves=curves,
        metrics=metrics,
        tags=common | tags,
        dataset=records[["record_id", "source", "creator", "license_spdx", "caption"]],
        dataset_digest=data_md5,
        dataset_source=paths.relative(paths.TRAIN_RECORDS),
        pipeline_dir=paths.DIFFUSION_DIR,
        artifacts=[paths.LICENSE_SUMMARY, paths.ATTRIBUTION],
    )
    plot_training_curves(record.curves, paths.REPORTS / "training_loss.png")
    plot_license_breakdown(
        licensed["train_per_license"], licensed["excluded_per_reason"], paths.REPORTS / "licenses.png"
    )
    record.artifacts += [paths.REPORTS / "training_loss.png", paths.REPORTS / "licenses.png"]
    registered = log_training(record, params.registry.model_name, params.registry.experiment)
    return {**registered, "dataset_md5": data_md5, "weights_sha256": weights_sha256}
