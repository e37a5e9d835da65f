"""Toy-size tests for atelier.models: CLIP bundle, zero-shot, metrics, latent diffusion determinism and I/O."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from atelier.demo import PALETTES, STYLES, build_demo, caption_for
from atelier.models import clip as C
from atelier.models import latent_diffusion as L
from atelier.models import metrics as M
from tests.tiny_models import build_tiny_sd, clip_tokenizer_from_open_clip
from tests.toy import TINY_AE, TINY_CLIP, TINY_DIFFUSION

CLIP_P = TINY_CLIP
AE_P = TINY_AE
DIFF_P = TINY_DIFFUSION.model_copy(update={"prediction_type": "v_prediction", "offset_noise": 0.05})


def _pixels_sha(images: list[Image.Image]) -> list[str]:
    return [hashlib.sha256(np.asarray(im).tobytes()).hexdigest() for im in images]


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, list[str]]:
    files, _, _ = build_demo(seed=7, per_class=1, size=64)
    images, captions = [], []
    for f in files:
        if f.file_name.startswith("art_") and len(images) < 16:
            im = Image.open(io.BytesIO(f.data)).convert("RGB").resize((32, 32), Image.LANCZOS)
            images.append(torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255)
            captions.append(f.meta["caption"])
    return torch.stack(images), captions


@pytest.fixture(scope="module")
def clip_bundle(data, tmp_path_factory):
    images, captions = data
    model = C.train_clip(images, captions, CLIP_P)
    folder = tmp_path_factory.mktemp("clip")
    sha = C.save_clip_bundle(model, CLIP_P, folder)
    return model, folder, sha


@pytest.fixture(scope="module")
def pipeline(data, clip_bundle):
    images, captions = data
    model, _, _ = clip_bundle
    tok = C.build_tokenizer(CLIP_P.context_length)
    return L.train_diffusion(images, captions, model, tok, C.model_config(CLIP_P, 32), AE_P, DIFF_P)


# ---------------------------------------------------------------------------------------------------------------- CLIP


def test_clip_bundle_round_trip(data, clip_bundle):
    images, captions = data
    model, folder, sha = clip_bundle
    assert sha == hashlib.sha256((folder / C.WEIGHTS_NAME).read_bytes()).hexdigest()
    tok = C.build_tokenizer(CLIP_P.context_length)
    want_img, want_txt = C.encode_images(model, images), C.encode_texts(model, tok, captions)
    for spec in (folder, f"local-dir:{folder}", folder / C.WEIGHTS_NAME):
        loaded, tokenizer = C.load_clip(spec)
        assert torch.equal(C.encode_images(loaded, images), want_img)
        assert torch.equal(C.encode_texts(loaded, tokenizer, captions), want_txt)
    own, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    assert torch.allclose(own.encode_image(C.normalize_images(images), normalize=True), want_img, atol=1e-6)
    assert want_img.shape == (16, CLIP_P.embed_dim)
    assert torch.allclose(want_img.norm(dim=-1), torch.ones(16), atol=1e-5)


def test_clip_image_size_comes_from_the_model(data, clip_bundle):
    images, _ = data
    model, _, _ = clip_bundle
    assert C.image_size(model) == 32 and C.model_config(CLIP_P, 32)["vision_cfg"]["image_size"] == 32
    with pytest.raises(ValueError, match=r"takes 32x32 images, got \(64, 64\)"):
        C.encode_images(model, torch.nn.functional.interpolate(images, size=64))
    with pytest.raises(ValueError, match=r"clean\.resolution.*train_clip\.patch_size 12"):
        C.model_config(CLIP_P.model_copy(update={"patch_size": 12}), 32)


def test_load_evaluator_prefers_the_evaluator_and_falls_back_to_clip(data, clip_bundle, tmp_path):
    images, _ = data
    model, _, _ = clip_bundle
    evaluator = C.train_clip(images, data[1], CLIP_P.model_copy(update={"seed": CLIP_P.evaluator_seed}))
    C.save_clip_bundle(model, CLIP_P, tmp_path / "clip")
    assert C.evaluator_dir(tmp_path) == tmp_path / "clip"  # a model saved before it carried an evaluator
    loaded, _ = C.load_evaluator(tmp_path)
    assert torch.equal(C.encode_images(loaded, images), C.encode_images(model, images))
    C.save_clip_bundle(evaluator, CLIP_P, tmp_path / "evaluator")
    assert C.evaluator_dir(tmp_path) == tmp_path / "evaluator"
    loaded, tokenizer = C.load_evaluator(tmp_path)
    assert torch.equal(C.encode_images(loaded, images), C.encode_images(evaluator, images))
    assert not torch.equal(C.encode_images(loaded, images), C.encode_images(model, images))  # another seed
    (tmp_path / "evaluator" / C.WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="evaluator.*open_clip_model.safetensors"):
        C.load_evaluator(tmp_path)  # a broken evaluator is an error, never a silent fall back to the text encoder


def test_load_clip_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a bundle folder"):
        C.load_clip(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        C.load_clip(tmp_path)


def test_zero_shot_on_orthogonal_embeddings():
    names = ["a", "b", "c"]
    classes = torch.eye(3, 8)
    images = torch.eye(3, 8)[[2, 0, 1, 1]]
    acc, pred = C.zero_shot_from_embeddings(images, classes, names, ["c", "a", "b", "a"])
    assert pred == ["c", "a", "b", "b"] and acc == 0.75
    with pytest.raises(ValueError, match="not among the classes"):
        C.zero_shot_from_embeddings(images, classes, names, ["z"] * 4)


def test_class_captions_cover_every_caption():
    styles, palettes = C.class_captions("style"), C.class_captions("palette")
    assert list(styles) == STYLES and list(palettes) == list(PALETTES)
    assert styles["grid"] == [caption_for("grid", p) for p in PALETTES]
    with pytest.raises(ValueError):
        C.class_captions("mood")


# ------------------------------------------------------------------------------------------------------------- metrics


def test_clip_score_formula():
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    txt = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    assert torch.allclose(M.clip_score(img, txt), torch.tensor([2.5, 0.0, 1.5]))


def test_cmmd():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(50, 8, generator=g) + 3, dim=-1)
    assert M.cmmd(x, x) == pytest.approx(0.0, abs=1e-9)
    assert M.cmmd(x, y, sigma=1.0) > M.cmmd(x, x[torch.randperm(50, generator=g)], sigma=1.0) + 1.0


def test_diversity():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert M.diversity(e) == pytest.approx(0.0)
    assert M.diversity(torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(1.0)


def test_replication_flags_exact_copy():
    g = torch.Generator().manual_seed(0)
    train = torch.nn.functional.normalize(torch.randn(20, 16, generator=g), dim=-1)
    gen = torch.stack([train[3], torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)])
    rows = M.replication(gen, train, ratio=1 / 3, hamming=4)
    assert rows[0]["flagged"] and rows[0]["nearest"][0] == 3 and rows[0]["distance_ratio"] == pytest.approx(0, abs=1e-6)
    assert not rows[1]["flagged"]
    hashed = M.replication(
        gen, train, ["ff00ff00ff00ff00", "0"], ["0f00ff00ff00ff00", "0000000000000000"] + ["ffffffffffffffff"] * 18
    )
    assert hashed[0]["phash_distance"] == 4 and hashed[1]["phash_distance"] == 0 and hashed[1]["flagged"]
    assert hashed[1]["phash_nearest"] == 1
    cal = M.calibrate_replication(train)
    assert cal["n"] == 20 and 0 <= cal["fraction_below_ratio"] <= 1


# ----------------------------------------------------------------------------------------------------------- diffusion


def test_generation_is_deterministic(pipeline):
    prompts = [caption_for("grid", "red"), caption_for("spiral", "blue")]
    a = pipeline(prompts, seed=3, steps=2, guidance=1.5)
    b = pipeline(prompts, seed=3, steps=2, guidance=1.5)
    assert _pixels_sha(a) == _pixels_sha(b)
    assert a[0].size == (32, 32) and a[0].mode == "RGB"
    other = pipeline([prompts[0], caption_for("stripes", "green")], seed=3, steps=2, guidance=1.5)
    assert _pixels_sha(other)[0] == _pixels_sha(a)[0]  # the batch's other prompts do not change image 0
    assert _pixels_sha(pipeline(prompts[:1], seed=4, steps=2, guidance=1.5))[0] != _pixels_sha(a)[0]


def test_save_load_round_trip(pipeline, tmp_path):
    hashes = pipeline.save_pretrained(tmp_path)
    assert {
        "vae/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "clip/open_clip_model.safetensors",
    } <= set(hashes)
    assert json.loads((tmp_path / L.CONFIG_NAME).read_text())["latent_scale"] == pipeline.config["latent_scale"]
    loaded = L.LatentDiffusionPipeline.from_pretrained(tmp_path)
    prompts = [caption_for("sunset landscape", "golden")]
    assert _pixels_sha(loaded(prompts, seed=1, steps=2, guidance=2.0)) == _pixels_sha(
        pipeline(prompts, seed=1, steps=2, guidance=2.0)
    )


def test_pickle_files_are_refused(pipeline, tmp_path):
    pipeline.save_pretrained(tmp_path)
    torch.save({"x": 1}, tmp_path / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        L.LatentDiffusionPipeline.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="atelier_config.json"):
        L.LatentDiffusionPipeline.from_pretrained(tmp_path / "unet")


def test_training_rejects_bad_input(data):
    images, captions = data
    with pytest.raises(ValueError, match="captions"):
        C.train_clip(images, captions[:3], CLIP_P)
    with pytest.raises(ValueError, match=r"\[N, 3, R, R\].*clean\.resolution.*\[32, 64, 128\]"):
        L.train_autoencoder(images[:, :, :16, :16], AE_P)


# ------------------------------------------------------------------------------------------------------ LoRA SD backend


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


def test_lora_backend_trains_saves_and_generates(tiny_sd, data, tmp_path):
    from atelier.models import lora_sd

    images, captions = data
    assert "composition" in clip_tokenizer_from_open_clip(tmp_path).decode(
        clip_tokenizer_from_open_clip(tmp_path)("a red grid composition").input_ids, skip_special_tokens=True
    )
    p = lora_sd.LoraParams(seed=0, steps=2, batch_size=2, lr=1e-3, rank=2, device="cpu")
    sha = lora_sd.save_lora(lora_sd.train_lora(tiny_sd, images[:4], captions[:4], p), tmp_path / "lora")
    assert (tmp_path / "lora" / lora_sd.LORA_WEIGHTS).is_file() and len(sha) == 64
    assert not list((tmp_path / "lora").glob("*.bin"))
    a = lora_sd.generate(tiny_sd, tmp_path / "lora", captions[:1], seed=5, steps=2, guidance=2.0)
    b = lora_sd.generate(tiny_sd, tmp_path / "lora", captions[:1], seed=5, steps=2, guidance=2.0)
    assert a[0].size == (32, 32) and _pixels_sha(a) == _pixels_sha(b)


class _Killed(Exception):
    """Stands for a kill in the middle of training."""


def test_lora_resume_after_a_kill_matches_an_uninterrupted_run(tiny_sd, data, tmp_path):
    from atelier.checkpoint import Checkpointer
    from atelier.models import lora_sd

    images, captions = data
    p = lora_sd.LoraParams(seed=0, steps=4, batch_size=2, lr=1e-3, rank=2, device="cpu")
    whole = lora_sd.save_lora(lora_sd.train_lora(tiny_sd, images[:4], captions[:4], p), tmp_path / "whole")

    def killed_at_step_3(step: int, metrics: dict) -> None:
        if step == 3:
            raise _Killed

    resumable = Checkpointer(tmp_path / "ck", {"run": "lora"}, label="train_lora", every=2)
    with pytest.raises(_Killed):
        lora_sd.train_lora(tiny_sd, images[:4], captions[:4], p, on_step=killed_at_step_3, checkpoint=resumable)
    steps: list[int] = []
    resumed = lora_sd.save_lora(
        lora_sd.train_lora(
            tiny_sd, images[:4], captions[:4], p, checkpoint=resumable, on_step=lambda step, m: steps.append(step)
        ),
        tmp_path / "resumed",
    )
    assert steps == [0, 1, 2, 3]  # steps 0-1 replayed from the checkpoint, 2-3 trained again
    assert resumed == whole  # bitwise the adapters of the run that was never killed
    from safetensors import safe_open

    with safe_open(str(next((tmp_path / "ck").glob("step-*")) / "tensors.safetensors"), "pt") as saved:
        weights = [k for k in saved.keys() if k.startswith("module.")]
    assert weights and all(".lora." in k or k.startswith("module.lora.") for k in weights)  # never the frozen base


@pytest.mark.slow  # torchrun starts two processes that each load torch and the base
def test_lora_on_two_processes_follows_the_one_process_curve(tiny_sd, tmp_path):
    """Two CPU processes under torchrun (gloo, DDP), each on half the global batch, give the loss curve of one
    process on the whole batch, to float rounding (the halves go through the VAE and text encoder apart)."""
    import subprocess
    import sys

    from tests.tiny_models import lora_curve

    one = lora_curve(tiny_sd)
    out = tmp_path / "curve.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "tests.tiny_models",
            str(tiny_sd),
            str(out),
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    two = json.loads(out.read_text())
    assert len(two) == len(one) == 4
    assert two == pytest.approx(one, rel=1e-4)
    assert len(set(one)) == 4  # the steps differ: a curve, not a constant


def test_load_generator_reads_the_backend_from_the_config(pipeline, tmp_path):
    from atelier.models.generator import at_size, load_generator

    pipeline.save_pretrained(tmp_path)
    loaded = load_generator(tmp_path, resolution=32)
    assert isinstance(loaded, L.LatentDiffusionPipeline)
    prompts = [caption_for("grid", "red")]
    assert _pixels_sha(loaded(prompts, seed=1, steps=2, guidance=2.0)) == _pixels_sha(
        pipeline(prompts, seed=1, steps=2, guidance=2.0)
    )
    with pytest.raises(ValueError, match="clean.resolution in params.yaml is 64"):
        load_generator(tmp_path, resolution=64)
    config = json.loads((tmp_path / L.CONFIG_NAME).read_text())
    (tmp_path / L.CONFIG_NAME).write_text(json.dumps({**config, "backend": "gan"}))
    with pytest.raises(ValueError, match="unknown backend 'gan'"):
        load_generator(tmp_path)
    images = torch.rand(2, 3, 64, 64)
    assert at_size(images, 64) is images and at_size(images, 32).shape == (2, 3, 32, 32)
