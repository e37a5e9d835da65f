"""One way to load a trained text-to-image model folder, whichever backend made it (its atelier_config.json says).

evaluate, promote, generate and the MLflow pyfunc call load_generator; what they use is common to both backends:
`generator(prompts, seed=, steps=, guidance=, negative_prompt=)` -> PIL images, `generate_tensor(...)` -> [N,3,R,R]
in [0,1], `clip_model` (the replication CLIP) and `config`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from atelier.models.latent_diffusion import CONFIG_NAME, LatentDiffusionPipeline


def backend_of(folder: str | Path) -> str:
    """The backend named in a model folder's atelier_config.json ("latent-diffusion" when it names none)."""
    config = Path(folder) / CONFIG_NAME
    if not config.is_file():
        raise FileNotFoundError(f"{folder}: not an Atelier diffusion model ({CONFIG_NAME} missing); train one with "
                                "dvc repro train_diffusion")
    return json.loads(config.read_text(encoding="utf-8")).get("backend", "latent-diffusion")


def load_generator(folder: str | Path, resolution: int | None = None):
    """The LatentDiffusionPipeline or LoraGenerator saved in `folder`.

    `resolution` (clean.resolution) is checked for the latent backend, whose every part is trained at it; a LoRA
    model makes images at its base's resolution, which the stages scale to their CLIPs' size."""
    backend = backend_of(folder)
    if backend == "lora_sd":
        from atelier.models.lora_sd import LoraGenerator

        return LoraGenerator.from_pretrained(folder)
    if backend != "latent-diffusion":
        raise ValueError(f"{Path(folder) / CONFIG_NAME}: unknown backend {backend!r}; expected latent-diffusion or "
                         "lora_sd")
    return LatentDiffusionPipeline.from_pretrained(folder, resolution=resolution)


def at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images [N,3,R,R] in [0,1] scaled to size x size for a CLIP (a LoRA base makes its own resolution, which may
    differ from clean.resolution, the CLIPs'); returned as they are when R is already `size`."""
    if images.shape[-1] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
