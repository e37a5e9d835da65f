"""train_autoencoder stage: the small AutoencoderKL whose latent space the diffusion model works in."""

from __future__ import annotations

import time
from collections import defaultdict

import pandas as pd
import torch

from atelier import checkpoint, paths
from atelier.config import load_params
from atelier.dataset import labels, load_images, split
from atelier.figures import write_curve
from atelier.io import atomic_dir, write_json
from atelier.models.clip import CONFIG_NAME, image_size, load_clip, refuse_other_resolution, zero_shot
from atelier.models.latent_diffusion import decode_latents, encode_latents, train_autoencoder


def reconstruction_report(vae, scale: float, holdout: pd.DataFrame) -> dict:
    """Held-out reconstruction MSE (images in [-1, 1]) and the evaluator's zero-shot accuracy on reconstructions."""
    images = load_images(holdout)
    recon = decode_latents(vae, encode_latents(vae, images, scale), scale)
    mse = float(((recon * 2 - 1) - (images * 2 - 1)).pow(2).mean())
    out = {"holdout_images": len(holdout), "holdout_mse": round(mse, 5), "latent_scale": scale}
    named = holdout["caption"].map(labels)
    keep = named.notna().to_numpy()
    if keep.any():
        clip, tokenizer = load_clip(paths.CLIP_DIR)
        refuse_other_resolution(
            image_size(clip),
            images.shape[-1],
            f"vision_cfg.image_size in {paths.relative(paths.CLIP_DIR / CONFIG_NAME)}",
        )
        styles, palettes = zip(*named[keep])
        mask = torch.from_numpy(keep)
        for kind, truth in (("style", styles), ("palette", palettes)):
            out[f"recon_{kind}_accuracy"] = zero_shot(clip, tokenizer, recon[mask], list(truth), kind)[0]
            out[f"real_{kind}_accuracy"] = zero_shot(clip, tokenizer, images[mask], list(truth), kind)[0]
    return out


NOT_USED = "NOT_USED.json"  # what models/autoencoder holds when the generator's backend brings its own VAE


def not_used(backend: str) -> dict:
    """Write the record saying the autoencoder is not trained for `backend` (its base model has its own VAE), in
    place of the model, the report and the curve that dvc.yaml declares."""
    summary = {
        "used": False,
        "backend": backend,
        "reason": f"train_diffusion.backend {backend} fine-tunes a base model that has its own VAE; Atelier's "
        "autoencoder is trained only for backend latent",
    }
    with atomic_dir(paths.AUTOENCODER_DIR) as tmp:
        write_json(tmp / NOT_USED, summary)
    write_curve(paths.TRAIN_CURVES / "autoencoder.csv", "ae_l1", [])
    write_json(paths.REPORTS / "autoencoder.json", summary)
    print(f"train_autoencoder: not used: {summary['reason']}")
    return summary


def main() -> dict:
    """Train the autoencoder on the licensed training split (clean.resolution px); save it to models/autoencoder."""
    params = load_params()
    p = params.train_autoencoder
    if params.train_diffusion.backend != "latent":
        return not_used(params.train_diffusion.backend)
    records = pd.read_parquet(paths.TRAIN_RECORDS)
    train, holdout = split(records, params.train_clip.holdout_fraction)
    images = load_images(train)
    if images.shape[-1] != params.clean.resolution:
        raise ValueError(
            f"the clean images are {images.shape[-1]} px but clean.resolution in params.yaml is "
            f"{params.clean.resolution}: run the clean stage again (dvc repro)"
        )
    curves: dict[str, list[float]] = defaultdict(list)

    def on_step(step: int, metrics: dict) -> None:
        for key, value in metrics.items():
            curves[key].append(value)

    start = time.time()
    resumable = checkpoint.for_stage("train_autoencoder")  # a killed run resumes from its last checkpoint
    vae, scale = train_autoencoder(images, p, on_step=on_step, checkpoint=resumable)
    with atomic_dir(paths.AUTOENCODER_DIR) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
    seconds = round(time.time() - start, 1)
    # No wall-clock time in autoencoder.json: DVC tracks it, and two runs of the same code and data must hash alike.
    summary = {"steps": p.steps, "train_images": len(train), **reconstruction_report(vae, scale, holdout)}
    write_curve(paths.TRAIN_CURVES / "autoencoder.csv", "ae_l1", curves["ae_l1"])
    write_json(paths.REPORTS / "autoencoder.json", summary)
    write_json(paths.TIMINGS / "train_autoencoder.json", {"seconds": seconds})  # git- and DVC-untracked
    resumable.clear()  # every output is written: nothing left to resume
    print(f"train_autoencoder: {summary}; {seconds} s")
    return summary


if __name__ == "__main__":
    main()
