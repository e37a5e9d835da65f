"""clean.resolution 32, 64 or 128: CLIP, autoencoder and UNet follow from it; mismatches are refused naming the keys.

Toy size: a 64 px model trained end to end for a few steps of each part, then generated, saved and loaded back."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.config import SUPPORTED_RESOLUTIONS
from atelier.demo import build_demo, caption_for
from atelier.models import clip as C
from atelier.models import latent_diffusion as L
from tests.toy import TINY_AE, TINY_CLIP, TINY_DIFFUSION

CLIP_P = TINY_CLIP
AE_P = TINY_AE
DIFF_P = TINY_DIFFUSION


@pytest.fixture(scope="module")
def data64() -> tuple[torch.Tensor, list[str]]:
    files, _, _ = build_demo(seed=7, per_class=1, size=64)
    images, captions = [], []
    for f in files:
        if f.file_name.startswith("art_") and len(images) < 12:
            im = Image.open(io.BytesIO(f.data)).convert("RGB")
            assert im.size == (64, 64)
            images.append(torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255)
            captions.append(f.meta["caption"])
    return torch.stack(images), captions


@pytest.fixture(scope="module")
def pipeline64(data64):
    images, captions = data64
    clip = C.train_clip(images, captions, CLIP_P)
    tokenizer = C.build_tokenizer(CLIP_P.context_length)
    return L.train_diffusion(images, captions, clip, tokenizer, C.model_config(CLIP_P, 64), AE_P, DIFF_P)


def test_autoencoder_config_follows_the_resolution():
    assert L.autoencoder_config(32)["block_out_channels"] == (16, 32, 64)  # the default: as before
    assert L.autoencoder_config(64)["block_out_channels"] == (16, 32, 64, 64)
    assert {r: L.latent_size(L.autoencoder_config(r)) for r in SUPPORTED_RESOLUTIONS} == {32: 8, 64: 8, 128: 16}
    with pytest.raises(ValueError, match=r"clean\.resolution 48 is not supported"):
        L.autoencoder_config(48)


def test_128_px_autoencoder_makes_16x16_latents():
    torch.manual_seed(0)
    vae = L.build_autoencoder(128).eval()
    images = torch.rand(1, 3, 128, 128)
    latents = L.encode_latents(vae, images, scale=1.0)
    assert latents.shape == (1, L.LATENT_CHANNELS, 16, 16)
    assert L.decode_latents(vae, latents, scale=1.0).shape == (1, 3, 128, 128)
    with pytest.raises(ValueError, match=r"encodes images \[N, 3, 128, 128\]"):
        L.encode_latents(vae, torch.rand(1, 3, 64, 64), scale=1.0)
    with pytest.raises(ValueError, match=r"decodes latents \[N, C, 16, 16\]"):
        L.decode_latents(vae, torch.zeros(1, 4, 8, 8), scale=1.0)


def test_64_px_trains_generates_saves_and_loads(pipeline64, data64, tmp_path):
    images, _ = data64
    assert pipeline64.config["resolution"] == 64
    assert C.image_size(pipeline64.clip_model) == 64
    assert pipeline64.vae.config.block_out_channels == (16, 32, 64, 64)
    assert L.encode_latents(pipeline64.vae, images[:2], 1.0).shape == (2, 4, 8, 8)
    assert pipeline64.unet.config.sample_size == 8
    prompts = [caption_for("grid", "red"), caption_for("spiral", "blue")]
    generated = pipeline64.generate_tensor(prompts, seed=3, steps=2, guidance=2.0)
    assert generated.shape == (2, 3, 64, 64)
    assert C.encode_images(pipeline64.clip_model, generated).shape == (2, CLIP_P.embed_dim)  # the CLIP takes 64 px
    pictures = pipeline64(prompts, seed=3, steps=2, guidance=2.0)
    assert pictures[0].size == (64, 64)

    pipeline64.save_pretrained(tmp_path)
    assert json.loads((tmp_path / L.CONFIG_NAME).read_text())["resolution"] == 64
    loaded = L.LatentDiffusionPipeline.from_pretrained(tmp_path, resolution=64)
    again = loaded(prompts, seed=3, steps=2, guidance=2.0)
    assert [np.asarray(a).tobytes() for a in again] == [np.asarray(a).tobytes() for a in pictures]
    with pytest.raises(
        ValueError,
        match=r"'resolution' in .*atelier_config\.json is 64 but clean\.resolution in "
        r"params\.yaml is 32",
    ):
        L.LatentDiffusionPipeline.from_pretrained(tmp_path, resolution=32)


def test_parts_made_for_other_resolutions_are_refused(pipeline64, data64):
    images, captions = data64
    clip32 = C.train_clip(torch.nn.functional.interpolate(images, size=32), captions, CLIP_P)
    with pytest.raises(ValueError, match=r"clip vision_cfg\.image_size is 32, expected 64"):
        L.LatentDiffusionPipeline(
            pipeline64.vae,
            pipeline64.unet,
            pipeline64.scheduler,
            clip32,
            pipeline64.tokenizer,
            {**pipeline64.config, "clip_model_cfg": {}},
        )
    with pytest.raises(ValueError, match=r"vae sample_size is 64, expected 32"):
        L.LatentDiffusionPipeline(
            pipeline64.vae,
            pipeline64.unet,
            pipeline64.scheduler,
            pipeline64.clip_model,
            pipeline64.tokenizer,
            {**pipeline64.config, "resolution": 32},
        )
    with pytest.raises(ValueError, match=r"vision_cfg\.image_size.* is 32 but clean\.resolution in params\.yaml is 64"):
        C.refuse_other_resolution(
            C.image_size(clip32), 64, "vision_cfg.image_size in models/clip/open_clip_config.json"
        )
