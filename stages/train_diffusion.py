"""train_diffusion stage: the text-conditional UNet in the autoencoder's latent space, assembled with the VAE and the
CLIP text tower into one pipeline (models/diffusion, which also carries its evaluator CLIP as evaluator/), then
logged, registered and aliased `challenger` in MLflow."""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from typing import NamedTuple

import pandas as pd
from diffusers import AutoencoderKL, UNet2DConditionModel

from atelier import checkpoint, distributed, dvc, paths
from atelier.config import load_params
from atelier.dataset import load_images, split
from atelier.hashing import file_sha256, weights_digest
from atelier.io import atomic_dir, write_json
from atelier.models.clip import CONFIG_NAME, WEIGHTS_NAME, image_size, load_clip, refuse_other_resolution
from atelier.models.latent_diffusion import LatentDiffusionPipeline, build_scheduler, encode_latents, train_unet
from atelier.plots import plot_license_breakdown, plot_training_curves
from atelier.reports import read_curve, write_curve
from atelier.version import code_version


def main() -> dict:
    """Train the UNet, save the pipeline, register it; write reports/train.json with the registry coordinates.

    With train_diffusion.processes > 1 the stage re-launches itself under torchrun and waits: each process trains on
    its share of the global batch, and rank 0 alone writes the outputs and registers the model (atelier/distributed.py).
    """
    params = load_params()
    p = params.train_diffusion
    if p.backend == "lora_sd":  # LoRA on a local Stable Diffusion base: its own stage module, the same outputs
        from stages import train_lora

        return train_lora.main()
    if distributed.must_launch(p.processes):
        distributed.launch("stages.train_diffusion", p.processes, p.device)  # raises when a rank fails
        return json.loads(paths.TRAIN_SUMMARY.read_text())
    with distributed.process_group(p.device, p.processes) as group:
        trained = _train(params, group)
    return _save_and_register(params, trained) if trained is not None else {}  # the other ranks are done


class Trained(NamedTuple):
    """What rank 0 holds once the UNet is trained, for _save_and_register."""

    records: pd.DataFrame
    train: pd.DataFrame
    vae: AutoencoderKL
    unet: UNet2DConditionModel  # with the EMA weights
    clip: object
    tokenizer: object
    curves: dict[str, list[float]]
    seconds: float
    resumable: checkpoint.Checkpointer


def _train(params, group: distributed.Group) -> Trained | None:
    """Load the training latents and captions and train the UNet (this rank's share); None on ranks other than 0."""
    p = params.train_diffusion
    records = pd.read_parquet(paths.TRAIN_RECORDS)
    train, _ = split(records, params.train_clip.holdout_fraction)
    clip, tokenizer = load_clip(paths.CLIP_DIR)
    refuse_other_resolution(image_size(clip), params.clean.resolution,
                            f"vision_cfg.image_size in {paths.relative(paths.CLIP_DIR / CONFIG_NAME)}")
    vae = AutoencoderKL.from_pretrained(paths.AUTOENCODER_DIR, use_safetensors=True).eval()
    refuse_other_resolution(int(vae.config.sample_size), params.clean.resolution,
                            f"sample_size in {paths.relative(paths.AUTOENCODER_DIR / 'config.json')}")
    scale = float(vae.config.scaling_factor)
    images = load_images(train)
    latents = encode_latents(vae, images, scale)
    flipped = encode_latents(vae, images.flip(-1), scale)
    curves: dict[str, list[float]] = defaultdict(list)

    def on_step(step: int, metrics: dict) -> None:
        for key, value in metrics.items():
            curves[key].append(value)

    start = time.time()
    # a killed run resumes from its last checkpoint; rank 0 alone writes them
    resumable = checkpoint.for_stage("train_diffusion", label="train_unet", read_only=not group.is_main)
    unet = train_unet(latents, list(train["caption"]), clip, tokenizer, p, on_step=on_step, flipped_latents=flipped,
                      checkpoint=resumable, group=group)
    seconds = round(time.time() - start, 1)
    if unet is None:
        return None
    return Trained(records, train, vae, unet, clip, tokenizer, curves, seconds, resumable)


def _save_and_register(params, trained: Trained) -> dict:
    """Save the pipeline and the curves, register the model in MLflow, write reports/train.json (rank 0 only)."""
    p = params.train_diffusion
    records, train, vae, unet, clip, tokenizer, curves, seconds, resumable = trained
    scale = float(vae.config.scaling_factor)
    clip_cfg = json.loads((paths.CLIP_DIR / "open_clip_config.json").read_text())["model_cfg"]
    config = {"latent_scale": scale, "pooled_scale": p.pooled_scale, "resolution": params.clean.resolution,
              "clip_model_cfg": clip_cfg, "backend": "latent-diffusion"}
    pipeline = LatentDiffusionPipeline(vae, unet, build_scheduler(p), clip, tokenizer, config)
    with atomic_dir(paths.DIFFUSION_DIR) as tmp:
        weights = pipeline.save_pretrained(tmp)
        shutil.copytree(paths.EVALUATOR_DIR, tmp / "evaluator")  # the registered model carries its own judge
        weights[f"evaluator/{WEIGHTS_NAME}"] = file_sha256(tmp / "evaluator" / WEIGHTS_NAME)
    for key, values in curves.items():
        write_curve(paths.TRAIN_CURVES / f"{key}.csv", key, values)

    licensed = json.loads(paths.LICENSE_SUMMARY.read_text())
    clip_report = json.loads((paths.REPORTS / "clip.json").read_text())
    ae_report = json.loads((paths.REPORTS / "autoencoder.json").read_text())
    registered = register(
        params, records, train, licensed,
        logged_params={**{f"clip.{k}": v for k, v in params.train_clip.model_dump().items()},
                       **{f"autoencoder.{k}": v for k, v in params.train_autoencoder.model_dump().items()},
                       **{f"diffusion.{k}": v for k, v in p.model_dump().items()}},
        curves={"clip_loss": read_curve(paths.TRAIN_CURVES / "clip.csv"),
                "ae_l1": read_curve(paths.TRAIN_CURVES / "autoencoder.csv"), **curves},
        metrics={"clip_holdout_style_accuracy": clip_report.get("holdout_style_accuracy", 0.0),
                 "clip_holdout_palette_accuracy": clip_report.get("holdout_palette_accuracy", 0.0),
                 "ae_holdout_mse": ae_report["holdout_mse"],
                 "ae_recon_style_accuracy": ae_report.get("recon_style_accuracy", 0.0),
                 "ae_recon_palette_accuracy": ae_report.get("recon_palette_accuracy", 0.0),
                 "unet_seconds": seconds},
        tags={"backend": "latent-diffusion"})
    data_md5, weights_sha256 = registered["dataset_md5"], registered["weights_sha256"]
    # reports/train.json is tracked by DVC: no clock time and no random id (the run id is the registry's to give)
    summary = {"model_name": registered["model_name"], "version": registered["version"],
               "weights_sha256": weights_sha256, "weights": weights, "dataset_md5": data_md5,
               "train_records": len(records), "unet_steps": p.steps}
    write_json(paths.TRAIN_SUMMARY, summary)
    write_json(paths.TIMINGS / "train_diffusion.json", {"unet_seconds": seconds})  # not tracked
    resumable.clear()  # every output is written and the model registered: nothing left to resume
    print(f"train_diffusion: registered {registered['model_name']} version {registered['version']} "
          f"as challenger (run {registered['run_id']}), {p.steps} steps in {seconds} s")
    return summary


def register(params, records: pd.DataFrame, train: pd.DataFrame, licensed: dict, *, logged_params: dict,
             curves: dict[str, list[float]], metrics: dict, tags: dict) -> dict:
    """Log the training run of models/diffusion (either backend) and register it as challenger: its params, curves
    and metrics, the training records as its dataset, the licence summary, attribution and the loss and licence
    plots; `tags` add to the tags every run carries (dataset md5, record counts, licences, code, weights digest).
    Returns the registry coordinates with the dataset md5 and the weights digest."""
    from registry.tracking import TrainingRecord, log_training

    data_md5 = dvc.lock_md5(paths.TRAIN_RECORDS)
    weights_sha256 = weights_digest(paths.DIFFUSION_DIR)
    common = {
        "dataset_md5": data_md5, "train_records": str(len(records)), "train_split_records": str(len(train)),
        "license_summary": json.dumps(licensed["train_per_license"], sort_keys=True),
        "excluded_summary": json.dumps(licensed["excluded_per_reason"], sort_keys=True),
        "git_commit": code_version(), "weights_sha256": weights_sha256,
    }
    record = TrainingRecord(
        params=logged_params, curves=curves, metrics=metrics, tags=common | tags,
        dataset=records[["record_id", "source", "creator", "license_spdx", "caption"]],
        dataset_digest=data_md5,
        dataset_source=paths.relative(paths.TRAIN_RECORDS),
        pipeline_dir=paths.DIFFUSION_DIR,
        artifacts=[paths.LICENSE_SUMMARY, paths.ATTRIBUTION],
    )
    plot_training_curves(record.curves, paths.REPORTS / "training_loss.png")
    plot_license_breakdown(licensed["train_per_license"], licensed["excluded_per_reason"],
                           paths.REPORTS / "licenses.png")
    record.artifacts += [paths.REPORTS / "training_loss.png", paths.REPORTS / "licenses.png"]
    registered = log_training(record, params.registry.model_name, params.registry.experiment)
    return {**registered, "dataset_md5": data_md5, "weights_sha256": weights_sha256}


if __name__ == "__main__":
    main()
