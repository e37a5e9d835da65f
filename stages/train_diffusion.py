"""train_diffusion stage: the text-conditional UNet in the autoencoder's latent space, assembled with the VAE and the
CLIP text tower into one pipeline (models/diffusion, which also carries its evaluator CLIP as evaluator/), then
logged, registered and aliased `challenger` in MLflow (registry/registration.py).

Backend lora_sd (train_diffusion.backend): LoRA adapters (peft) on the declared local Stable Diffusion base, trained
on the same records, split and captions, saved to models/diffusion with the replication CLIP and the evaluator, and
registered the same way with the base model recorded (name, path, licence, weights digest). The base is not copied
into the registry: loading the model checks its digest (atelier/models/lora_sd.py LoraGenerator)."""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from typing import NamedTuple

import pandas as pd
from diffusers import AutoencoderKL, UNet2DConditionModel

from atelier import checkpoint, components, distributed, paths
from atelier.config import Params, load_params
from atelier.dataset import load_images, split
from atelier.figures import read_curve, write_curve
from atelier.hashing import file_sha256
from atelier.io import atomic_dir, write_json
from atelier.models.clip import CONFIG_NAME, WEIGHTS_NAME, image_size, load_clip, refuse_other_resolution
from atelier.models.latent_diffusion import CONFIG_NAME as PIPELINE_CONFIG
from atelier.models.latent_diffusion import LatentDiffusionPipeline, build_scheduler, encode_latents, train_unet
from atelier.models.lora_sd import BACKEND, LORA_DIR, LORA_WEIGHTS, LoraParams, base_resolution, save_lora, train_lora
from registry.registration import register_diffusion


def main() -> dict:
    """Train the UNet, save the pipeline, register it; write reports/train.json with the registry coordinates.

    With train_diffusion.processes > 1 the stage re-launches itself under torchrun and waits: each process trains on
    its share of the global batch, and rank 0 alone writes the outputs and registers the model (atelier/distributed.py).
    """
    params = load_params()
    p = params.train_diffusion
    if distributed.must_launch(p.processes):
        distributed.launch("stages.train_diffusion", p.processes, p.device)  # raises when a rank fails
        return json.loads(paths.TRAIN_SUMMARY.read_text())
    if p.backend == "lora_sd":  # LoRA on a local Stable Diffusion base: the same outputs
        return _main_lora(params)
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
    refuse_other_resolution(
        image_size(clip),
        params.clean.resolution,
        f"vision_cfg.image_size in {paths.relative(paths.CLIP_DIR / CONFIG_NAME)}",
    )
    vae = AutoencoderKL.from_pretrained(paths.AUTOENCODER_DIR, use_safetensors=True).eval()
    refuse_other_resolution(
        int(vae.config.sample_size),
        params.clean.resolution,
        f"sample_size in {paths.relative(paths.AUTOENCODER_DIR / 'config.json')}",
    )
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
    unet = train_unet(
        latents,
        list(train["caption"]),
        clip,
        tokenizer,
        p,
        on_step=on_step,
        flipped_latents=flipped,
        checkpoint=resumable,
        group=group,
    )
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
    config = {
        "latent_scale": scale,
        "pooled_scale": p.pooled_scale,
        "resolution": params.clean.resolution,
        "clip_model_cfg": clip_cfg,
        "backend": "latent-diffusion",
    }
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
    registered = register_diffusion(
        params,
        records,
        train,
        licensed,
        logged_params={
            **{f"clip.{k}": v for k, v in params.train_clip.model_dump().items()},
            **{f"autoencoder.{k}": v for k, v in params.train_autoencoder.model_dump().items()},
            **{f"diffusion.{k}": v for k, v in p.model_dump().items()},
        },
        curves={
            "clip_loss": read_curve(paths.TRAIN_CURVES / "clip.csv"),
            "ae_l1": read_curve(paths.TRAIN_CURVES / "autoencoder.csv"),
            **curves,
        },
        metrics={
            "clip_holdout_style_accuracy": clip_report.get("holdout_style_accuracy", 0.0),
            "clip_holdout_palette_accuracy": clip_report.get("holdout_palette_accuracy", 0.0),
            "ae_holdout_mse": ae_report["holdout_mse"],
            "ae_recon_style_accuracy": ae_report.get("recon_style_accuracy", 0.0),
            "ae_recon_palette_accuracy": ae_report.get("recon_palette_accuracy", 0.0),
            "unet_seconds": seconds,
        },
        tags={"backend": "latent-diffusion"},
    )
    summary = _finish(registered, weights, records, resumable, {"unet_steps": p.steps}, {"unet_seconds": seconds})
    print(
        f"train_diffusion: registered {registered['model_name']} version {registered['version']} "
        f"as challenger (run {registered['run_id']}), {p.steps} steps in {seconds} s"
    )
    return summary


def _finish(
    registered: dict,
    weights: dict,
    records: pd.DataFrame,
    resumable: checkpoint.Checkpointer,
    extra: dict,
    timings: dict,
) -> dict:
    """Write reports/train.json (tracked by DVC: no clock time and no random id; the run id is the registry's to give)
    and the untracked timings, clear the checkpoints (every output is written and the model registered); return the
    summary."""
    summary = {
        "model_name": registered["model_name"],
        "version": registered["version"],
        "weights_sha256": registered["weights_sha256"],
        "weights": weights,
        "dataset_md5": registered["dataset_md5"],
        "train_records": len(records),
        **extra,
    }
    write_json(paths.TRAIN_SUMMARY, summary)
    write_json(paths.TIMINGS / "train_diffusion.json", timings)
    resumable.clear()
    return summary


def lora_params(params: Params, group: distributed.Group) -> LoraParams:
    """The LoRA loop's tunables from train_diffusion (lr, steps, batch, caption dropout shared with the latent
    backend; lora_rank) on the group's device (device auto -> cuda when present)."""
    p = params.train_diffusion
    return LoraParams(
        seed=p.seed,
        steps=p.steps,
        batch_size=p.batch_size,
        lr=p.lr,
        rank=p.lora_rank,
        caption_dropout=p.caption_dropout,
        device=str(group.device),
    )


def _main_lora(params: Params) -> dict:
    """Backend lora_sd: train the adapters on the declared base, save the model folder, register it; write
    reports/train.json like the latent backend."""
    p = params.train_diffusion
    base = components.base_record(components.base_component(params))
    base_dir = components.local_path(base["path"])
    records = pd.read_parquet(paths.TRAIN_RECORDS)
    train, _ = split(records, params.train_clip.holdout_fraction)
    images = load_images(train)
    curves: dict[str, list[float]] = defaultdict(list)

    def on_step(step: int, metrics: dict) -> None:
        for key, value in metrics.items():
            curves[key].append(value)

    start = time.time()
    with distributed.process_group(p.device, p.processes) as group:
        lp = lora_params(params, group)
        # a killed run resumes from its last checkpoint; the key adds the base's digest (the base is not a DVC dep)
        resumable = checkpoint.Checkpointer(
            paths.CHECKPOINTS / "train_diffusion",
            {"stage": checkpoint.stage_key("train_diffusion"), "base_model": base["weights_sha256"]},
            label="train_lora",
            read_only=not group.is_main,
        )
        layers = train_lora(
            base_dir, images, list(train["caption"]), lp, on_step=on_step, checkpoint=resumable, group=group
        )
    if layers is None:
        return {}  # the other ranks are done: rank 0 saves and registers
    return _save_lora_and_register(
        params, base, records, train, layers, curves, round(time.time() - start, 1), lp, resumable
    )


def _save_lora_and_register(
    params: Params,
    base: dict,
    records: pd.DataFrame,
    train: pd.DataFrame,
    layers: dict,
    curves: dict[str, list[float]],
    seconds: float,
    lp: LoraParams,
    resumable: checkpoint.Checkpointer,
) -> dict:
    """Rank 0: write models/diffusion, the curves and plots, register the model, write reports/train.json."""
    p = params.train_diffusion
    with atomic_dir(paths.DIFFUSION_DIR) as tmp:
        lora_sha = save_lora(layers, tmp / LORA_DIR)
        size = base_resolution(components.local_path(base["path"]))
        config = {
            "backend": BACKEND,
            "resolution": size,
            "base_model": base,
            "lora_rank": lp.rank,
            "lora_weights": f"{LORA_DIR}/{LORA_WEIGHTS}",
        }
        (tmp / PIPELINE_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        shutil.copytree(paths.CLIP_DIR, tmp / "clip")  # replication and neighbours, as the latent model's
        shutil.copytree(paths.EVALUATOR_DIR, tmp / "evaluator")  # the registered model carries its own judge
        weights = {
            f"{LORA_DIR}/{LORA_WEIGHTS}": lora_sha,
            f"clip/{WEIGHTS_NAME}": file_sha256(tmp / "clip" / WEIGHTS_NAME),
            f"evaluator/{WEIGHTS_NAME}": file_sha256(tmp / "evaluator" / WEIGHTS_NAME),
        }
    for key, values in curves.items():
        write_curve(paths.TRAIN_CURVES / f"{key}.csv", key, values)
    write_curve(paths.TRAIN_CURVES / "unet_loss.csv", "unet_loss", curves["lora_loss"])  # dvc.yaml's plot

    licensed = json.loads(paths.LICENSE_SUMMARY.read_text())
    clip_report = json.loads((paths.REPORTS / "clip.json").read_text())
    registered = register_diffusion(
        params,
        records,
        train,
        licensed,
        logged_params={
            **{f"clip.{k}": v for k, v in params.train_clip.model_dump().items()},
            **{f"diffusion.{k}": v for k, v in p.model_dump().items()},
            **{f"base_model.{k}": v for k, v in base.items()},
        },
        curves={"clip_loss": read_curve(paths.TRAIN_CURVES / "clip.csv"), **curves},
        metrics={
            "clip_holdout_style_accuracy": clip_report.get("holdout_style_accuracy", 0.0),
            "clip_holdout_palette_accuracy": clip_report.get("holdout_palette_accuracy", 0.0),
            "lora_seconds": seconds,
        },
        tags={
            "backend": BACKEND,
            "device": lp.device,
            "processes": str(p.processes),
            **{f"base_model.{k}": str(base[k]) for k in ("name", "path", "license", "weights_sha256")},
        },
    )
    base_named = {k: base[k] for k in ("name", "path", "license", "weights_sha256")}
    extra = {"backend": BACKEND, "lora_steps": p.steps, "resolution": size, "base_model": base_named}
    summary = _finish(registered, weights, records, resumable, extra, {"lora_seconds": seconds, "device": lp.device})
    print(
        f"train_diffusion (lora_sd on {base['name']}): registered {registered['model_name']} version "
        f"{registered['version']} as challenger (run {registered['run_id']}), {p.steps} steps on {lp.device} "
        f"x {p.processes} in {seconds} s"
    )
    return summary


if __name__ == "__main__":
    main()
