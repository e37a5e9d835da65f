"""The demo trained on a GPU at 64 and 128 px (issue 28, item 6): `train_diffusion.device: cuda`, the UNet under bf16
autocast (atelier/models/latent_diffusion.py, mixed_precision), through the real `dvc repro` up to `evaluate` in a
scratch copy of the project. Reported per resolution: the UNet's samples per second, the autoencoder's seconds, the
evaluation's headline figures, and the sample grid (copied to bench/figures/gpu-samples-<R>px.png).

Needs a CUDA device; on a machine without one it says so and measures nothing (CI never has one). Steps: params.yaml's,
times GPU_STEP_MULTIPLE (a GPU affords more training in the time the CPU run takes)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from bench.resolution_choice import FIGURES, _figures, _repro, _seconds
from tests.workspace import copy_project, edit_params

RESOLUTIONS = tuple(int(r) for r in os.environ.get("ATELIER_BENCH_RESOLUTIONS", "64,128").split(","))
GPU_STEP_MULTIPLE = int(os.environ.get("ATELIER_BENCH_GPU_STEPS", 4))


def main() -> dict:
    if not torch.cuda.is_available():
        print("gpu: no CUDA device on this machine; nothing measured (run it where a GPU is lent)")
        return {"skipped": "no CUDA device"}
    found = {"device": torch.cuda.get_device_name(0)}
    with tempfile.TemporaryDirectory(prefix="atelier-gpu-") as tmp:
        for resolution in RESOLUTIONS:
            root = copy_project(Path(tmp) / f"r{resolution}")
            p = yaml.safe_load((root / "params.yaml").read_text())
            steps = {
                "autoencoder": p["train_autoencoder"]["steps"] * GPU_STEP_MULTIPLE,
                "unet": p["train_diffusion"]["steps"] * GPU_STEP_MULTIPLE,
            }
            edit_params(
                root,
                clean={"resolution": resolution, "min_size": resolution},
                demo={"size": max(64, resolution)},
                train_autoencoder={"steps": steps["autoencoder"]},
                train_diffusion={"steps": steps["unet"], "device": "cuda"},
            )
            _repro(root, "evaluate")
            seconds = _seconds(root)
            batch = p["train_diffusion"]["batch_size"]
            FIGURES.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / "reports" / "samples.png", FIGURES / f"gpu-samples-{resolution}px.png")
            found[f"{resolution}px"] = {
                "unet_samples_per_s": steps["unet"] * batch / seconds["unet"],
                "seconds": seconds,
                "steps": steps,
                "figures": _figures(root),
            }
            print(f"gpu {resolution} px: {json.dumps(found[f'{resolution}px'])}", flush=True)
    return found


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
