"""Toy-size latent diffusion (like Stable Diffusion): a small AutoencoderKL, a text-conditional UNet, DDIM + CFG sampling."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Callable

import open_clip
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from PIL import Image
from tqdm import tqdm

from atelier.checkpoint import Checkpointer, TrainState
from atelier.config import SUPPORTED_RESOLUTIONS, AutoencoderParams, DiffusionParams
from atelier.distributed import Group
from atelier.models.clip import (image_size, load_clip, progress_disabled, refuse_other_resolution, save_clip_bundle,
                                 text_token_states)

LATENT_CHANNELS = 4
# The autoencoder's channels per block for each training resolution (clean.resolution). Each block but the last halves
# the side: 32 px -> 8x8 latents (3 blocks), 64 px -> 8x8 and 128 px -> 16x16 (4 blocks).
AUTOENCODER_BLOCKS = {32: (16, 32, 64), 64: (16, 32, 64, 64), 128: (16, 32, 64, 64)}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CONFIG_NAME = "atelier_config.json"
AE_WARMUP_STEPS = 20


# ----------------------------------------------------------------------------------------------------------- autoencoder


def autoencoder_config(resolution: int) -> dict:
    """AutoencoderKL's arguments for `resolution` px images; at 32 about 1M parameters, (16, 32, 64) -> 8x8x4 latents."""
    if resolution not in SUPPORTED_RESOLUTIONS or resolution not in AUTOENCODER_BLOCKS:
        raise ValueError(f"clean.resolution {resolution} is not supported: choose one of {list(SUPPORTED_RESOLUTIONS)}")
    blocks = AUTOENCODER_BLOCKS[resolution]
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * len(blocks),
        "up_block_types": ("UpDecoderBlock2D",) * len(blocks),
        "block_out_channels": blocks,
        "layers_per_block": 1,
        "latent_channels": LATENT_CHANNELS,
        "norm_num_groups": 8,
        "sample_size": resolution,
    }


def build_autoencoder(resolution: int) -> AutoencoderKL:
    """A freshly initialised autoencoder for `resolution` px images (autoencoder_config)."""
    return AutoencoderKL(**autoencoder_config(resolution))


def latent_size(vae_config) -> int:
    """The latents' side for an autoencoder config: its sample_size over 2**(blocks - 1), its downsampling."""
    return int(vae_config["sample_size"]) // 2 ** (len(vae_config["block_out_channels"]) - 1)


def _random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=g) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _ema_buffer(weights: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """EMA weights initialised to `weights`: one flat buffer, and views of it shaped as each weight.

    The decay multiplies the whole buffer in one call: a foreach call over 200-odd tensors costs five times as much
    on the CPU (one dispatch per tensor, most of them too small to use both cores)."""
    with torch.no_grad():
        flat = torch.cat([q.detach().reshape(-1) for q in weights])
    views, offset = [], 0
    for q in weights:
        views.append(flat[offset: offset + q.numel()].view(q.shape))
        offset += q.numel()
    return flat, views


def _cosine_lr(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay reaching zero at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - 1 - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_autoencoder(
    images: torch.Tensor,
    p: AutoencoderParams,
    on_step: Callable[[int, dict], None] | None = None,
    checkpoint: Checkpointer | None = None,
) -> tuple[AutoencoderKL, float]:
    """Train the autoencoder (L1 + kl_weight*KL, flips, cosine LR decay) on images [N,3,R,R] in [0,1], R one of
    SUPPORTED_RESOLUTIONS; return (vae, latent scale).

    With a `checkpoint`, resumes from its last checkpoint and saves one periodically (atelier/checkpoint.py)."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != images.shape[-2] \
            or images.shape[-1] not in SUPPORTED_RESOLUTIONS:
        raise ValueError(f"expected images [N, 3, R, R] in [0, 1] with R (clean.resolution) one of "
                         f"{list(SUPPORTED_RESOLUTIONS)}, got {tuple(images.shape)}")
    torch.manual_seed(p.seed)
    vae = build_autoencoder(images.shape[-1])
    vae.train()
    pixels = images.float() * 2 - 1
    opt = torch.optim.AdamW(vae.parameters(), lr=p.lr)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, p.steps, AE_WARMUP_STEPS))
    g = torch.Generator().manual_seed(p.seed)
    state = TrainState(p.steps, modules={"vae": vae}, optimizer=opt, scheduler=lr_sched, generators={"batches": g},
                       checkpoint=checkpoint, on_step=on_step)
    state.resume()
    for _ in tqdm(range(state.step, p.steps), initial=state.step, total=p.steps, desc="train autoencoder",
                  disable=progress_disabled()):
        idx = torch.randperm(len(pixels), generator=g)[: p.batch_size]
        x = _random_flip(pixels[idx], g)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g)
        recon = vae.decode(z).sample
        l1 = (recon - x).abs().mean()
        kl = posterior.kl().mean()
        loss = l1 + p.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_sched.step()
        state.record({"ae_l1": l1.item(), "ae_kl": kl.item()})
    vae.eval()
    raw = encode_latents(vae, images, scale=1.0)
    scale = 1.0 / float(raw.std())
    vae.register_to_config(scaling_factor=scale)
    return vae, scale


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor, scale: float, batch_size: int = 256) -> torch.Tensor:
    """Scaled latent means [N,4,n,n] of images [N,3,R,R] in [0,1] (R the vae's sample_size, n its latent_size)."""
    side = int(vae.config.sample_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, side, side):
        raise ValueError(f"this autoencoder encodes images [N, 3, {side}, {side}], got {tuple(images.shape)}")
    out = [vae.encode(images[i : i + batch_size].float() * 2 - 1).latent_dist.mean for i in range(0, len(images), batch_size)]
    return torch.cat(out) * scale


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, scale: float) -> torch.Tensor:
    """Scaled latents [N,4,n,n] -> images [N,3,R,R] in [0,1] (n the vae's latent_size, R its sample_size)."""
    side = latent_size(vae.config)
    if latents.ndim != 4 or tuple(latents.shape[-2:]) != (side, side):
        raise ValueError(f"this autoencoder decodes latents [N, C, {side}, {side}], got {tuple(latents.shape)}")
    return ((vae.decode(latents / scale).sample.clamp(-1, 1) + 1) / 2).float()


def mixed_precision(device: torch.device):
    """bf16 autocast on a CUDA device (the UNet's matmuls and convolutions at tensor-core speed, the loss and the
    optimiser state in float32); nothing on the CPU, where the results stay bit-identical to a float32 run."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------------------------ UNet


def build_unet(text_width: int, embed_dim: int, sample_size: int) -> UNet2DConditionModel:
    """About 4M parameters on sample_size x sample_size x 4 latents (8 or 16), cross-attending to CLIP token states,
    pooled embedding as a class input."""
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(64, 128),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=text_width,
        attention_head_dim=8,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=embed_dim,
    )


def build_scheduler(p: DiffusionParams) -> DDPMScheduler:
    """The training noise schedule: DDPM, 1000 steps, squaredcos_cap_v2, no x0 clipping (latents are not in [-1, 1])."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=p.prediction_type,
        clip_sample=False,
        timestep_spacing=getattr(p, "timestep_spacing", "leading"),
        rescale_betas_zero_snr=getattr(p, "zero_terminal_snr", False),
    )


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction_type: str, plus_one: bool = False) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for the eps or v objective.

    In x0 terms the v loss equals (snr + 1) * x0 loss, so the paper's v weight min(snr, gamma) / (snr + 1) gives the
    high-noise steps (where the global colour is decided) almost no weight. plus_one=True uses
    min(snr + 1, gamma) / (snr + 1) instead: plain v loss at high noise, min-SNR clipping at low noise.
    """
    if prediction_type == "epsilon":
        return torch.where(snr < gamma, torch.ones_like(snr), gamma / snr.clamp(min=1e-12))
    clipped = snr + 1 if plus_one else snr
    return torch.minimum(clipped, torch.full_like(snr, gamma)) / (snr + 1)


@torch.no_grad()
def caption_conditioning(
    clip_model: open_clip.CLIP, tokenizer, captions: list[str]
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(distinct captions with "" first, token states [K,L,W], pooled normalised embeddings [K,D]), computed once."""
    distinct = [""] + sorted(set(captions) - {""})
    states, pooled = text_token_states(clip_model, tokenizer, distinct)
    return distinct, states, pooled


def train_unet(
    latents: torch.Tensor,
    captions: list[str],
    clip_model: open_clip.CLIP,
    tokenizer,
    p: DiffusionParams,
    on_step: Callable[[int, dict], None] | None = None,
    flipped_latents: torch.Tensor | None = None,
    checkpoint: Checkpointer | None = None,
    group: Group | None = None,
) -> UNet2DConditionModel | None:
    """Train the text-conditional UNet on scaled latents [N,4,n,n]; return a UNet holding the EMA weights.

    With a `checkpoint`, resumes from its last checkpoint and saves one periodically (atelier/checkpoint.py). With a
    `group` of several processes (atelier/distributed.py), each rank draws the whole global batch's randomness from
    the same generator and trains on its share, the model wrapped in DDP; the loss reported is the global batch's
    mean. Rank 0 alone keeps the EMA and returns the UNet; the other ranks return None."""
    if len(latents) != len(captions):
        raise ValueError(f"{len(latents)} latents but {len(captions)} captions")
    if latents.ndim != 4 or latents.shape[-1] != latents.shape[-2]:
        raise ValueError(f"expected square latents [N, C, n, n], got {tuple(latents.shape)}")
    group = group or Group()
    device = group.device
    torch.manual_seed(p.seed)
    distinct, states, pooled = caption_conditioning(clip_model, tokenizer, captions)
    states = states.to(device)
    cap_index = torch.tensor([distinct.index(c) for c in captions])
    pooled_in = (pooled * p.pooled_scale).to(device)
    latents = latents.to(device)
    flipped_latents = flipped_latents.to(device) if flipped_latents is not None else None
    unet = build_unet(states.shape[-1], pooled.shape[-1], latents.shape[-1]).to(device)
    unet.train()
    model = group.wrap(unet)  # what the loop calls: DDP averages the ranks' gradients (the UNet itself for one rank)
    weights = list(unet.parameters())
    ema_flat, ema = _ema_buffer(weights)
    sched = build_scheduler(p)
    alphas_cumprod = sched.alphas_cumprod
    snr_plus_one = getattr(p, "loss_weighting", "min_snr") == "min_snr_plus_one"
    opt = torch.optim.AdamW(unet.parameters(), lr=p.lr)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, p.steps, p.warmup_steps))
    g = torch.Generator().manual_seed(p.seed)
    state = TrainState(p.steps, modules={"unet": unet}, optimizer=opt, scheduler=lr_sched, generators={"batches": g},
                       tensors={"ema": ema}, checkpoint=checkpoint, on_step=on_step)
    state.resume()
    group.same(state.step, "the step to resume from")
    mine = group.share(p.batch_size)
    for step in tqdm(range(state.step, p.steps), initial=state.step, total=p.steps, desc="train unet",
                     disable=progress_disabled() or not group.is_main):
        # the whole global batch's draws, in the same order on every rank; then this rank's share of them
        idx = torch.randperm(len(latents), generator=g)[: p.batch_size]
        flip = torch.rand(len(idx), generator=g) < 0.5 if flipped_latents is not None else None
        noise = torch.randn((len(idx), *latents.shape[1:]), generator=g)
        if p.offset_noise > 0:
            noise = noise + p.offset_noise * torch.randn(len(idx), latents.shape[1], 1, 1, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g)
        cond = cap_index[idx].clone()
        cond[torch.rand(len(idx), generator=g) < p.caption_dropout] = 0  # "" is the unconditional input
        if group.world > 1:
            idx, noise, t, cond = idx[mine], noise[mine], t[mine], cond[mine]
            flip = flip[mine] if flip is not None else None
        idx, noise, t, cond = idx.to(device), noise.to(device), t.to(device), cond.to(device)
        x0 = latents[idx]
        if flip is not None:
            x0 = torch.where(flip.to(device).view(-1, 1, 1, 1), flipped_latents[idx], x0)
        xt = sched.add_noise(x0, noise, t)
        with mixed_precision(device):
            pred = model(xt, t, encoder_hidden_states=states[cond], class_labels=pooled_in[cond]).sample.float()
        target = noise if p.prediction_type == "epsilon" else sched.get_velocity(x0, noise, t)
        ac = alphas_cumprod.to(device)[t]
        weight = min_snr_weight(ac / (1 - ac), p.min_snr_gamma, p.prediction_type, snr_plus_one)
        loss = (weight * ((pred - target) ** 2).mean(dim=(1, 2, 3))).mean()  # this rank's share
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(weights, 1.0)
        opt.step()
        lr_sched.step()
        if group.is_main:  # the EMA lives on rank 0 (every rank holds the same weights after each step)
            decay = min(p.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():  # ema = ema * decay + weights * (1 - decay), per element as diffusers' EMAModel
                ema_flat.mul_(decay)  # one call over the whole buffer: the same products as one per tensor
                torch._foreach_add_(ema, weights, alpha=1 - decay)
        state.record({"unet_loss": group.mean(loss.detach()).item(), "grad_norm": grad_norm.item(),
                      "lr": lr_sched.get_last_lr()[0]})
    if not group.is_main:
        return None
    with torch.no_grad():
        for e, q in zip(ema, unet.parameters()):
            q.copy_(e)
    unet.eval()
    return unet.cpu()


# -------------------------------------------------------------------------------------------------------------- pipeline


def image_seed(seed: int, index: int) -> int:
    """The per-image generator seed: depends only on (seed, index), never on the batch."""
    return (seed * 1_000_003 + index) % (2**63 - 1)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[N,3,H,W] in [0,1] -> RGB PIL images (round to nearest)."""
    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


def refuse_pickles(folder: Path) -> None:
    found = sorted(str(f.relative_to(folder)) for f in folder.rglob("*") if f.suffix.lower() in PICKLE_SUFFIXES)
    if found:
        raise ValueError(
            f"refusing to load {folder}: it contains pickle-format files {found}, which can run arbitrary code when "
            "loaded; only safetensors weights are accepted. Remove them or re-save the model with safetensors."
        )


def _check_parts(vae: AutoencoderKL, unet: UNet2DConditionModel, clip_model: open_clip.CLIP, resolution: int) -> None:
    """The autoencoder, UNet and CLIP must all be made for the pipeline's `resolution`; raise naming the keys."""
    found = {
        "vae sample_size": (int(vae.config.sample_size), resolution),
        "unet sample_size": (int(unet.config.sample_size), latent_size(vae.config)),
        "clip vision_cfg.image_size": (image_size(clip_model), resolution),
    }
    for what, (got, want) in found.items():
        if got != want:
            raise ValueError(f"pipeline parts disagree: {what} is {got}, expected {want} for the pipeline's "
                             f"resolution {resolution}")


def _drop_load_path(config_file: Path) -> None:
    """Remove `_name_or_path` from a diffusers config written by save_pretrained. diffusers records there the folder a
    part was loaded from (train_diffusion loads the autoencoder from models/autoencoder): an absolute path of this
    workspace, which would make the saved model, and its hash in dvc.lock, differ between two clones."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.pop("_name_or_path", None) is not None:
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class LatentDiffusionPipeline:
    """vae + unet + noise schedule + frozen CLIP text tower; DDIM sampling with classifier-free guidance."""

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        scheduler: DDPMScheduler,
        clip_model: open_clip.CLIP,
        tokenizer,
        config: dict,
    ) -> None:
        for key in ("latent_scale", "pooled_scale", "resolution", "clip_model_cfg"):
            if key not in config:
                raise ValueError(f"pipeline config is missing {key!r}")
        _check_parts(vae, unet, clip_model, config["resolution"])
        self.vae, self.unet, self.scheduler = vae.eval(), unet.eval(), scheduler
        self.clip_model, self.tokenizer, self.config = clip_model.eval(), tokenizer, dict(config)
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> "LatentDiffusionPipeline":
        """Sample on `device` (the autoencoder and UNet move; the CLIP text tower stays on the CPU, its states are
        moved per call). On CUDA the UNet runs under bf16 autocast: the pixels then differ from the CPU's."""
        self.device = torch.device(device)
        self.vae.to(self.device)
        self.unet.to(self.device)
        return self

    def save_pretrained(self, folder: str | Path) -> dict[str, str]:
        """Write vae/, unet/, scheduler/ (safetensors), clip/ bundle and atelier_config.json; return file sha256s."""
        import hashlib

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(folder / "vae", safe_serialization=True)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(folder / "scheduler")
        for config_file in (folder / "vae" / "config.json", folder / "unet" / "config.json",
                            folder / "scheduler" / "scheduler_config.json"):
            _drop_load_path(config_file)
        save_clip_bundle(self.clip_model, self.config["clip_model_cfg"], folder / "clip")
        (folder / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True), encoding="utf-8")
        return {
            str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*.safetensors"))
        }

    @classmethod
    def from_pretrained(cls, folder: str | Path, resolution: int | None = None) -> "LatentDiffusionPipeline":
        """Load a folder written by save_pretrained; refuses pickle files, loads safetensors only.

        With `resolution` (clean.resolution), refuses a model whose config `resolution` differs."""
        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{folder}: not an Atelier diffusion model ({CONFIG_NAME} missing)")
        refuse_pickles(folder)
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        if resolution is not None:
            refuse_other_resolution(config.get("resolution"), resolution, f"'resolution' in {folder / CONFIG_NAME}")
        vae = AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True)
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True)
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        clip_model, tokenizer = load_clip(folder / "clip")
        return cls(vae, unet, scheduler, clip_model, tokenizer, config)

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str],
        seed: int,
        steps: int = 25,
        guidance: float = 1.5,
        negative_prompt: str = "",
        batch_size: int = 1,
    ) -> list[Image.Image]:
        """Generate one image per prompt; image i depends only on (prompts[i], seed, i, steps, guidance, negative).

        With batch_size 1 (the default) pixels are bit-identical whatever else is in `prompts`; larger batches are
        faster for evaluation but may differ in the last float bits (CPU kernels round differently per batch size).
        """
        return to_pil(self.generate_tensor(prompts, seed, steps, guidance, negative_prompt, batch_size))

    @torch.no_grad()
    def generate_tensor(
        self,
        prompts: list[str],
        seed: int,
        steps: int = 25,
        guidance: float = 1.5,
        negative_prompt: str = "",
        batch_size: int = 1,
    ) -> torch.Tensor:
        """Like __call__ but returns images [N,3,R,R] in [0,1], R the pipeline's resolution."""
        if not prompts:
            raise ValueError("no prompts given")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        distinct = sorted(set(prompts) | {negative_prompt})
        # One text at a time: batched matmuls may round differently with batch composition, and we promise that
        # image i depends only on its own prompt, seed and index.
        encoded = [text_token_states(self.clip_model, self.tokenizer, [text]) for text in distinct]
        dev = self.device
        states = torch.cat([e[0] for e in encoded]).to(dev)
        pooled = torch.cat([e[1] for e in encoded])
        pooled = (pooled * self.config["pooled_scale"]).to(dev)
        ddim = DDIMScheduler.from_config(self.scheduler.config, clip_sample=False, set_alpha_to_one=True)
        ddim.set_timesteps(steps)
        side = latent_size(self.vae.config)
        latent_shape = (LATENT_CHANNELS, side, side)
        neg = distinct.index(negative_prompt)
        out = []
        for start in range(0, len(prompts), batch_size):
            chunk = list(range(start, min(start + batch_size, len(prompts))))
            x = torch.stack([
                torch.randn(latent_shape, generator=torch.Generator().manual_seed(image_seed(seed, i))) for i in chunk
            ]).to(dev) * ddim.init_noise_sigma  # drawn on the CPU: the same noise on every device
            pos = torch.tensor([distinct.index(prompts[i]) for i in chunk])
            cond = torch.cat([torch.full_like(pos, neg), pos]).to(dev)
            for t in ddim.timesteps:
                model_in = torch.cat([x, x])
                with mixed_precision(dev):
                    pred = self.unet(model_in, t, encoder_hidden_states=states[cond], class_labels=pooled[cond]).sample
                uncond, text = pred.float().chunk(2)
                pred = uncond + guidance * (text - uncond)
                x = ddim.step(pred, t, x).prev_sample
            out.append(decode_latents(self.vae, x, self.config["latent_scale"]).cpu())
        return torch.cat(out)


def train_diffusion(
    images: torch.Tensor,
    captions: list[str],
    clip_model: open_clip.CLIP,
    tokenizer,
    clip_model_cfg: dict,
    ae: AutoencoderParams,
    p: DiffusionParams,
    on_step: Callable[[int, dict], None] | None = None,
) -> LatentDiffusionPipeline:
    """Autoencoder, then UNet on its latents (flips cached), assembled into a pipeline."""
    vae, scale = train_autoencoder(images, ae, on_step)
    latents = encode_latents(vae, images, scale)
    flipped = encode_latents(vae, images.flip(-1), scale)
    unet = train_unet(latents, captions, clip_model, tokenizer, p, on_step, flipped_latents=flipped)
    config = {
        "latent_scale": scale,
        "pooled_scale": p.pooled_scale,
        "resolution": images.shape[-1],
        "clip_model_cfg": clip_model_cfg,
        "backend": "latent-diffusion",
    }
    return LatentDiffusionPipeline(vae, unet, build_scheduler(p), clip_model, tokenizer, config)
