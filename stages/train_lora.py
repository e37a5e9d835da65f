"""train_diffusion stage, backend lora_sd: LoRA adapters (peft) on the declared local Stable Diffusion base, trained
on the licensed training split (the same records, split and captions as the latent backend), saved to
models/diffusion with the replication CLIP and the evaluator, then logged, registered and aliased `challenger` in
MLflow with the base model recorded (name, path, licence, weights digest). The base is not copied into the registry:
loading the model checks its digest (atelier/models/lora_sd.py LoraGenerator)."""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict

import pandas as pd

from atelier import checkpoint, components, distributed, paths
from atelier.config import ComponentParams, Params, load_params
from atelier.dataset import load_images, split
from atelier.hashing import file_sha256
from atelier.io import atomic_dir, write_json
from atelier.models.clip import WEIGHTS_NAME
from atelier.models.latent_diffusion import CONFIG_NAME
from atelier.models.lora_sd import BACKEND, LORA_DIR, LORA_WEIGHTS, LoraParams, base_resolution, save_lora, train_lora
from atelier.reports import read_curve, write_curve


def base_component(params: Params) -> ComponentParams:
    """The `components:` entry declaring train_diffusion.base_model (params validation guarantees there is one)."""
    wanted = str(params.train_diffusion.base_model).rstrip("/")
    return next(c for c in params.components if c.path.rstrip("/") == wanted)


def base_record(component: ComponentParams) -> dict:
    """The base model as the LoRA model and its registry entry record it: name, path, licence, computed digest."""
    folder = components.local_path(component.path)
    if not folder.is_dir():
        raise FileNotFoundError(f"train_diffusion.base_model {component.path!r}: no such folder ({folder}); point it "
                                "at a local diffusers Stable Diffusion folder (model_index.json, safetensors weights)")
    return {"name": component.name, "path": component.path, "license": component.license,
            "training_data": component.training_data, "training_data_licensed": component.training_data_licensed,
            "weights_sha256": components.weights_sha256(component.path)}


def lora_params(params: Params, group: distributed.Group) -> LoraParams:
    """The LoRA loop's tunables from train_diffusion (lr, steps, batch, caption dropout shared with the latent
    backend; lora_rank) on the group's device (device auto -> cuda when present)."""
    p = params.train_diffusion
    return LoraParams(seed=p.seed, steps=p.steps, batch_size=p.batch_size, lr=p.lr, rank=p.lora_rank,
                      caption_dropout=p.caption_dropout, device=str(group.device))


def main() -> dict:
    """Train the adapters, save the model folder, register it; write reports/train.json like the latent stage.

    With train_diffusion.processes > 1 the stage re-launches itself under torchrun and waits: each process trains on
    its share of the global batch, and rank 0 alone writes the outputs and registers the model (atelier/distributed.py).
    """
    params = load_params()
    p = params.train_diffusion
    if distributed.must_launch(p.processes):
        distributed.launch("stages.train_lora", p.processes, p.device)  # raises when a rank fails
        return json.loads(paths.TRAIN_SUMMARY.read_text())
    base = base_record(base_component(params))
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
        resumable = checkpoint.Checkpointer(paths.CHECKPOINTS / "train_diffusion",
                                            {"stage": checkpoint.stage_key("train_diffusion"),
                                             "base_model": base["weights_sha256"]}, label="train_lora",
                                            read_only=not group.is_main)
        layers = train_lora(base_dir, images, list(train["caption"]), lp, on_step=on_step, checkpoint=resumable,
                            group=group)
    if layers is None:
        return {}  # the other ranks are done: rank 0 saves and registers
    return _save_and_register(params, base, records, train, layers, curves, round(time.time() - start, 1), lp,
                              resumable)


def _save_and_register(params: Params, base: dict, records: pd.DataFrame, train: pd.DataFrame, layers: dict,
                       curves: dict[str, list[float]], seconds: float, lp: LoraParams,
                       resumable: checkpoint.Checkpointer) -> dict:
    """Rank 0: write models/diffusion, the curves and plots, register the model, write reports/train.json."""
    from stages.train_diffusion import register  # the latent backend's registration, shared

    p = params.train_diffusion
    with atomic_dir(paths.DIFFUSION_DIR) as tmp:
        lora_sha = save_lora(layers, tmp / LORA_DIR)
        size = base_resolution(components.local_path(base["path"]))
        config = {"backend": BACKEND, "resolution": size, "base_model": base, "lora_rank": lp.rank,
                  "lora_weights": f"{LORA_DIR}/{LORA_WEIGHTS}"}
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        shutil.copytree(paths.CLIP_DIR, tmp / "clip")            # replication and neighbours, as the latent model's
        shutil.copytree(paths.EVALUATOR_DIR, tmp / "evaluator")  # the registered model carries its own judge
        weights = {f"{LORA_DIR}/{LORA_WEIGHTS}": lora_sha,
                   f"clip/{WEIGHTS_NAME}": file_sha256(tmp / "clip" / WEIGHTS_NAME),
                   f"evaluator/{WEIGHTS_NAME}": file_sha256(tmp / "evaluator" / WEIGHTS_NAME)}
    for key, values in curves.items():
        write_curve(paths.TRAIN_CURVES / f"{key}.csv", key, values)
    write_curve(paths.TRAIN_CURVES / "unet_loss.csv", "unet_loss", curves["lora_loss"])  # dvc.yaml's plot

    licensed = json.loads(paths.LICENSE_SUMMARY.read_text())
    clip_report = json.loads((paths.REPORTS / "clip.json").read_text())
    registered = register(
        params, records, train, licensed,
        logged_params={**{f"clip.{k}": v for k, v in params.train_clip.model_dump().items()},
                       **{f"diffusion.{k}": v for k, v in p.model_dump().items()},
                       **{f"base_model.{k}": v for k, v in base.items()}},
        curves={"clip_loss": read_curve(paths.TRAIN_CURVES / "clip.csv"), **curves},
        metrics={"clip_holdout_style_accuracy": clip_report.get("holdout_style_accuracy", 0.0),
                 "clip_holdout_palette_accuracy": clip_report.get("holdout_palette_accuracy", 0.0),
                 "lora_seconds": seconds},
        tags={"backend": BACKEND, "device": lp.device, "processes": str(p.processes),
              **{f"base_model.{k}": str(base[k]) for k in ("name", "path", "license", "weights_sha256")}})
    data_md5, weights_sha256 = registered["dataset_md5"], registered["weights_sha256"]
    # reports/train.json is tracked by DVC: no clock time and no random id
    summary = {"model_name": registered["model_name"], "version": registered["version"], "backend": BACKEND,
               "weights_sha256": weights_sha256, "weights": weights, "dataset_md5": data_md5,
               "train_records": len(records), "lora_steps": p.steps, "resolution": size,
               "base_model": {k: base[k] for k in ("name", "path", "license", "weights_sha256")}}
    write_json(paths.TRAIN_SUMMARY, summary)
    write_json(paths.TIMINGS / "train_diffusion.json", {"lora_seconds": seconds, "device": lp.device})  # untracked
    resumable.clear()  # every output is written and the model registered: nothing left to resume
    print(f"train_diffusion (lora_sd on {base['name']}): registered {registered['model_name']} version "
          f"{registered['version']} as challenger (run {registered['run_id']}), {p.steps} steps on {lp.device} "
          f"x {p.processes} in {seconds} s")
    return summary


if __name__ == "__main__":
    main()
