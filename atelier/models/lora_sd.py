"""Second backend, for GPU users: LoRA (peft) on a local Stable Diffusion pipeline; weights saved as safetensors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image
from tqdm import tqdm

from atelier.models.clip import progress_disabled
from atelier.models.latent_diffusion import _refuse_pickles, image_seed

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class LoraParams:
    """Tunables of the LoRA backend."""

    seed: int = 0
    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-4
    rank: int = 8
    caption_dropout: float = 0.1
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(pipeline_path: str | Path, device: str = "cpu") -> StableDiffusionPipeline:
    """A local Stable Diffusion pipeline folder (safetensors only, no network, no safety checker download)."""
    path = Path(pipeline_path)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{path}: not a local diffusers pipeline folder (model_index.json missing)")
    _refuse_pickles(path)
    pipe = StableDiffusionPipeline.from_pretrained(
        path, use_safetensors=True, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    return pipe.to(device)


def _resolution(pipe: StableDiffusionPipeline) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def train_lora(
    pipeline_path: str | Path,
    images: torch.Tensor,
    captions: list[str],
    p: LoraParams,
    out_dir: str | Path,
    on_step: Callable[[int, dict], None] | None = None,
) -> str:
    """Train LoRA adapters on the UNet's attention projections; write them to out_dir; return their sha256."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    torch.manual_seed(p.seed)
    pipe = load_pipeline(pipeline_path, p.device)
    size = _resolution(pipe)
    pixels = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    pipe.unet.requires_grad_(False)
    pipe.unet.add_adapter(LoraConfig(r=p.rank, lora_alpha=p.rank, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [q for q in pipe.unet.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=p.lr)
    sched = pipe.scheduler
    g = torch.Generator().manual_seed(p.seed)
    pipe.unet.train()
    max_length = min(pipe.tokenizer.model_max_length, pipe.text_encoder.config.max_position_embeddings)
    for step in tqdm(range(p.steps), desc="train lora", disable=progress_disabled()):
        idx = torch.randperm(len(pixels), generator=g)[: p.batch_size]
        caps = ["" if torch.rand(1, generator=g).item() < p.caption_dropout else captions[i] for i in idx.tolist()]
        tokens = pipe.tokenizer(caps, padding="max_length", max_length=max_length,
                                truncation=True, return_tensors="pt").input_ids.to(p.device)
        with torch.no_grad():
            states = pipe.text_encoder(tokens)[0]
            latents = pipe.vae.encode(pixels[idx].to(p.device)).latent_dist.sample(generator=g)
            latents = latents * pipe.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=g).to(p.device)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g).to(p.device)
        noisy = sched.add_noise(latents, noise, t)
        target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(latents, noise, t)
        loss = F.mse_loss(pipe.unet(noisy, t, encoder_hidden_states=states).sample.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if on_step is not None:
            on_step(step, {"lora_loss": loss.item()})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)
    return hashlib.sha256((out / LORA_WEIGHTS).read_bytes()).hexdigest()


@torch.no_grad()
def generate(
    pipeline_path: str | Path,
    lora_dir: str | Path | None,
    prompts: list[str],
    seed: int,
    steps: int = 25,
    guidance: float = 7.5,
    negative_prompt: str = "",
    device: str = "cpu",
) -> list[Image.Image]:
    """DDIM + CFG, one image per prompt, image i seeded from (seed, i) like the latent-diffusion backend."""
    pipe = load_pipeline(pipeline_path, device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    if lora_dir is not None:
        lora_dir = Path(lora_dir)
        _refuse_pickles(lora_dir)
        pipe.load_lora_weights(lora_dir, weight_name=LORA_WEIGHTS)
    pipe.set_progress_bar_config(disable=progress_disabled())
    images = []
    for i, prompt in enumerate(prompts):
        gen = torch.Generator(device="cpu").manual_seed(image_seed(seed, i))
        out = pipe(prompt, negative_prompt=negative_prompt or None, num_inference_steps=steps,
                   guidance_scale=guidance, generator=gen, output_type="pil")
        images.append(out.images[0])
    return images
