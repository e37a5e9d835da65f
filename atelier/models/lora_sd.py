"""Second backend, for GPU users: LoRA (peft) on a local Stable Diffusion pipeline; weights saved as safetensors.

A LoRA model folder (models/diffusion with backend lora_sd) holds only what was made here: the adapters
(lora/pytorch_lora_weights.safetensors), the replication CLIP (clip/, a copy of models/clip) and the evaluator
(evaluator/), with atelier_config.json naming the base model by path, name, licence and weights digest. The base is
never copied (it can be gigabytes): LoraGenerator.from_pretrained checks its digest and refuses a base that changed.
"""

from __future__ import annotations

import hashlib
import json
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

from atelier.checkpoint import Checkpointer, TrainState
from atelier.distributed import Group, resolve_device
from atelier.hashing import weights_digest
from atelier.models.clip import load_clip, progress_disabled
from atelier.models.latent_diffusion import CONFIG_NAME, refuse_pickles, image_seed, to_pil

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
LORA_DIR = "lora"      # the adapters' subfolder in a saved LoRA model
BACKEND = "lora_sd"


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


def load_pipeline(pipeline_path: str | Path, device: str | torch.device = "cpu") -> StableDiffusionPipeline:
    """A local Stable Diffusion pipeline folder (safetensors only, no network, no safety checker download)."""
    path = Path(pipeline_path)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{path}: not a local diffusers pipeline folder (model_index.json missing); "
                                "train_diffusion.base_model must name a folder written by save_pretrained")
    refuse_pickles(path)
    pipe = StableDiffusionPipeline.from_pretrained(
        path, use_safetensors=True, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=progress_disabled())
    return pipe.to(device)


def resolution(pipe: StableDiffusionPipeline) -> int:
    """The side in pixels of the images the base pipeline makes (UNet sample size x VAE scale factor)."""
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


def base_resolution(pipeline_path: str | Path) -> int:
    """resolution() read from a base folder's unet/ and vae/ configs, without loading its weights."""
    path = Path(pipeline_path)
    unet = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
    vae = json.loads((path / "vae" / "config.json").read_text(encoding="utf-8"))
    return int(unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1))


def train_lora(
    pipeline_path: str | Path,
    images: torch.Tensor,
    captions: list[str],
    p: LoraParams,
    on_step: Callable[[int, dict], None] | None = None,
    checkpoint: Checkpointer | None = None,
    group: Group | None = None,
) -> dict[str, torch.Tensor] | None:
    """Train LoRA adapters on the UNet's attention projections; return their weights (diffusers names, on the CPU)
    for save_lora.

    With a `checkpoint`, resumes from its last checkpoint and saves one periodically (only the adapters, the
    optimizer and the RNG states: never the frozen base). With a `group` of several processes
    (atelier/distributed.py), every rank draws the whole global batch's randomness from the same generator and trains
    on its share, the UNet wrapped in DDP; the loss reported is the global batch's mean. Rank 0 alone returns the
    weights; the other ranks return None."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    group = group or Group(device=torch.device(p.device))
    device = group.device
    torch.manual_seed(p.seed)
    pipe = load_pipeline(pipeline_path, device)
    size = resolution(pipe)
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
    # the adapters alone as a module: a checkpoint holds them (shared with the UNet, restored in place), not the base
    state = TrainState(total=p.steps, modules={"lora": torch.nn.ParameterList(params)}, optimizer=opt,
                       generators={"batches": g}, checkpoint=checkpoint, on_step=on_step)
    state.resume()
    group.same(state.step, "the step to resume from")
    mine = group.share(p.batch_size)
    pipe.unet.train()
    unet = group.wrap(pipe.unet)  # what the loop calls: DDP averages the ranks' gradients (the UNet for one rank)
    max_length = min(pipe.tokenizer.model_max_length, pipe.text_encoder.config.max_position_embeddings)
    side = size // pipe.vae_scale_factor
    for _ in tqdm(range(state.step, p.steps), initial=state.step, total=p.steps, desc="train lora",
                  disable=progress_disabled() or not group.is_main):
        # the whole global batch's draws, in the same order on every rank; then this rank's share of them
        idx = torch.randperm(len(pixels), generator=g)[: p.batch_size]
        drop = [torch.rand(1, generator=g).item() < p.caption_dropout for _ in range(len(idx))]
        eps = torch.randn((len(idx), pipe.vae.config.latent_channels, side, side), generator=g)  # the VAE's sample
        noise = torch.randn(eps.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g)
        idx, eps, noise, t = idx[mine], eps[mine].to(device), noise[mine].to(device), t[mine].to(device)
        caps = ["" if dropped else captions[i] for i, dropped in zip(idx.tolist(), drop[mine])]
        tokens = pipe.tokenizer(caps, padding="max_length", max_length=max_length,
                                truncation=True, return_tensors="pt").input_ids.to(device)
        with torch.no_grad():
            states = pipe.text_encoder(tokens)[0]
            posterior = pipe.vae.encode(pixels[idx].to(device)).latent_dist
            latents = (posterior.mean + posterior.std * eps) * pipe.vae.config.scaling_factor
        noisy = sched.add_noise(latents, noise, t)
        target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(latents, noise, t)
        loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=states).sample.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state.record({"lora_loss": group.mean(loss.detach()).item(), "grad_norm": grad_norm.item()})
    if not group.is_main:
        return None
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    return {k: v.detach().cpu().contiguous() for k, v in layers.items()}


def save_lora(layers: dict[str, torch.Tensor], out_dir: str | Path) -> str:
    """Write the adapters as out_dir/pytorch_lora_weights.safetensors (diffusers' LoRA format); return its sha256."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)
    return hashlib.sha256((out / LORA_WEIGHTS).read_bytes()).hexdigest()


def _sample(pipe: StableDiffusionPipeline, prompts: list[str], seed: int, steps: int, guidance: float,
            negative_prompt: str, batch_size: int) -> torch.Tensor:
    """DDIM + CFG; images [N,3,R,R] in [0,1] on the CPU, image i seeded from (seed, i) like the latent backend."""
    if not prompts:
        raise ValueError("no prompts given")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(range(start, min(start + batch_size, len(prompts))))
        gens = [torch.Generator(device="cpu").manual_seed(image_seed(seed, i)) for i in chunk]
        result = pipe([prompts[i] for i in chunk], negative_prompt=[negative_prompt] * len(chunk) if negative_prompt
                      else None, num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="pt")
        out.append(result.images.float().cpu().clamp(0, 1))
    return torch.cat(out)


def base_path(config: dict) -> Path:
    """The base model's folder as recorded (a relative path is taken from the project root)."""
    from atelier.components import local_path

    return local_path(config["base_model"]["path"])


def check_base(folder: Path, recorded: str, what: str) -> None:
    """Refuse a base model whose weights digest differs from the one recorded when the LoRA was trained."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: its base model {folder} is not there; a LoRA model needs the base it was "
                                "trained on: put that folder back (its digest is recorded) or retrain")
    found = weights_digest(folder)  # as atelier/components.py computes a folder's digest
    if found != recorded:
        raise ValueError(f"{what}: the base model {folder} has weights digest {found}, but the LoRA was trained on "
                         f"{recorded}; the base changed since training, so its artworks would not be what was "
                         "evaluated and signed. Restore the recorded base, or retrain (dvc repro train_diffusion)")


class LoraGenerator:
    """A base Stable Diffusion pipeline with trained LoRA adapters, exposing what the stages use of
    LatentDiffusionPipeline: __call__ (PIL images), generate_tensor, clip_model, tokenizer and config."""

    def __init__(self, pipe: StableDiffusionPipeline, clip_model, tokenizer, config: dict) -> None:
        self.pipe, self.clip_model, self.tokenizer, self.config = pipe, clip_model.eval(), tokenizer, dict(config)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str = "auto") -> "LoraGenerator":
        """Load a folder written by stages/train_lora.py; refuses pickles and a base whose digest changed."""
        folder = Path(folder)
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        if config.get("backend") != BACKEND:
            raise ValueError(f"{folder / CONFIG_NAME}: backend {config.get('backend')!r}, not {BACKEND!r}")
        refuse_pickles(folder)
        base = base_path(config)
        check_base(base, config["base_model"]["weights_sha256"], f"LoRA model {folder}")
        pipe = load_pipeline(base, resolve_device(device))
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.load_lora_weights(folder / LORA_DIR, weight_name=LORA_WEIGHTS)
        clip_model, tokenizer = load_clip(folder / "clip")
        return cls(pipe, clip_model, tokenizer, config)

    @torch.no_grad()
    def generate_tensor(self, prompts: list[str], seed: int, steps: int = 25, guidance: float = 7.5,
                        negative_prompt: str = "", batch_size: int = 1) -> torch.Tensor:
        """Images [N,3,R,R] in [0,1], R the base's resolution; image i depends on (prompts[i], seed, i, ...)."""
        return _sample(self.pipe, prompts, seed, steps, guidance, negative_prompt, batch_size)

    def __call__(self, prompts: list[str], seed: int, steps: int = 25, guidance: float = 7.5,
                 negative_prompt: str = "", batch_size: int = 1) -> list[Image.Image]:
        """One RGB image per prompt at the base's resolution."""
        return to_pil(self.generate_tensor(prompts, seed, steps, guidance, negative_prompt, batch_size))


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
    """DDIM + CFG from a base folder and an adapters folder, one image per prompt, image i seeded from (seed, i)."""
    pipe = load_pipeline(pipeline_path, device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    if lora_dir is not None:
        lora_dir = Path(lora_dir)
        refuse_pickles(lora_dir)
        pipe.load_lora_weights(lora_dir, weight_name=LORA_WEIGHTS)
    return to_pil(_sample(pipe, prompts, seed, steps, guidance, negative_prompt, batch_size=1))
