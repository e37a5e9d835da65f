"""Tiny randomly initialised models built offline for tests (no downloads): a Stable Diffusion pipeline folder."""

from __future__ import annotations

import gzip
import importlib.resources
import json
from pathlib import Path

import torch


def clip_tokenizer_from_open_clip(folder: Path):
    """A transformers CLIPTokenizer built offline from open_clip's bundled BPE merges (vocab.json, merges.txt in
    `folder`)."""
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = importlib.resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(str(bpe)).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """A diffusers StableDiffusionPipeline folder (safetensors) of a few thousand random weights making 32 px images
    (UNet sample size 16, VAE scale factor 2); `seed` decides the weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer_from_open_clip(folder / "_tokenizer_build")
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=2,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=49408,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    for f in (folder / "_tokenizer_build").iterdir():
        f.unlink()
    (folder / "_tokenizer_build").rmdir()
    return folder


def lora_curve(base: Path, steps: int = 4, batch_size: int = 4, group=None) -> list[float]:
    """The LoRA loss curve of `steps` steps on 8 seeded random images of the tiny base (`group`: this process's
    place in a data-parallel run, atelier/distributed.py)."""
    from atelier.models.lora_sd import LoraParams, train_lora

    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    captions = [
        f"a {c} shape on a {b} ground" for c, b in zip(["red", "blue", "green", "white"] * 2, ["dark", "pale"] * 4)
    ]
    losses: list[float] = []
    p = LoraParams(seed=0, steps=steps, batch_size=batch_size, lr=1e-3, rank=2, device="cpu")
    train_lora(base, images, captions, p, on_step=lambda step, m: losses.append(m["lora_loss"]), group=group)
    return losses


if __name__ == "__main__":  # under torchrun: python -m torch.distributed.run ... -m tests.tiny_models BASE OUT
    import sys

    from atelier import distributed

    with distributed.process_group("cpu", int(sys.argv[3])) as group:
        curve = lora_curve(Path(sys.argv[1]), group=group)
    if group.is_main:
        Path(sys.argv[2]).write_text(json.dumps(curve), encoding="utf-8")
