"""A small open_clip model: build, train on image-caption pairs, save/load as a `local-dir:` bundle, encode, zero-shot."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from open_clip.model import set_model_preprocess_cfg
from open_clip.transform import PreprocessCfg, merge_preprocess_dict
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from atelier.checkpoint import Checkpointer, TrainState
from atelier.progress import progress_enabled
from atelier.config import ClipParams
from atelier.demo import PALETTES, STYLES, caption_for

# Images arrive in [0, 1]; the CLIP sees them mapped to [-1, 1]. Defined once, used in training and evaluation.
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


def progress_disabled() -> bool:
    """tqdm bars only when atelier.progress says someone is watching."""
    return not progress_enabled()


def model_config(p: ClipParams, resolution: int) -> dict:
    """The open_clip `model_cfg` dict for these params and square images of `resolution` px (the bundle's
    open_clip_config.json holds it)."""
    if resolution % p.patch_size:
        raise ValueError(f"CLIP image size {resolution} (clean.resolution) is not divisible by train_clip.patch_size "
                         f"{p.patch_size}: choose a patch size that divides it")
    return {
        "embed_dim": p.embed_dim,
        "vision_cfg": {
            "image_size": resolution,
            "layers": p.image_layers,
            "width": p.image_width,
            "head_width": max(p.image_width // 4, 1),
            "patch_size": p.patch_size,
        },
        "text_cfg": {
            "context_length": p.context_length,
            "vocab_size": 49408,
            "width": p.text_width,
            "heads": max(p.text_width // 16, 1),
            "layers": p.text_layers,
        },
    }


def _from_config(cfg: dict) -> open_clip.CLIP:
    vision = open_clip.model.CLIPVisionCfg(**cfg["vision_cfg"])
    text = open_clip.model.CLIPTextCfg(**cfg["text_cfg"])
    return open_clip.CLIP(cfg["embed_dim"], vision, text)


def build_clip(p: ClipParams, resolution: int = 32) -> open_clip.CLIP:
    """A freshly initialised small CLIP for `resolution` px images (default: params.yaml's clean.resolution, 32),
    seeded by p.seed."""
    torch.manual_seed(p.seed)
    return _from_config(model_config(p, resolution))


def image_size(model: open_clip.CLIP) -> int:
    """The side in pixels of the square images this CLIP's vision tower takes (its vision_cfg.image_size)."""
    height, width = model.visual.image_size
    if height != width:
        raise ValueError(f"this CLIP takes {height}x{width} images; Atelier uses square ones")
    return int(height)


def refuse_other_resolution(found: int, resolution: int, what: str) -> None:
    """Raise unless a saved model made for `found` px images matches clean.resolution (`resolution`)."""
    if found != resolution:
        raise ValueError(f"{what} is {found} but clean.resolution in params.yaml is {resolution}: the model was made "
                         f"for {found} px images; retrain it (dvc repro) or set clean.resolution to {found}")


def build_tokenizer(context_length: int) -> open_clip.tokenizer.SimpleTokenizer:
    """open_clip's bundled BPE tokenizer (works offline)."""
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def normalize_images(images: torch.Tensor, model: open_clip.CLIP | None = None) -> torch.Tensor:
    """[N,3,H,W] in [0,1] -> the CLIP's input normalisation: Atelier's (IMAGE_MEAN, IMAGE_STD), or a loaded model's
    own preprocess_cfg mean and std (a pretrained checkpoint's)."""
    mean, std = _mean_std(model)
    mean = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def _mean_std(model: open_clip.CLIP | None) -> tuple[tuple, tuple]:
    """A model's image normalisation (open_clip keeps it as visual.image_mean / image_std), else Atelier's."""
    visual = getattr(model, "visual", None)
    mean, std = getattr(visual, "image_mean", None), getattr(visual, "image_std", None)
    return (tuple(mean), tuple(std)) if mean is not None and std is not None else (IMAGE_MEAN, IMAGE_STD)


def _check_images(images: torch.Tensor, size: int | None = None) -> None:
    """Images must be [N, 3, H, W] and square; `size` x `size` when given (the CLIP's own image size)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images shaped [N, 3, H, W], got {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square images, got {tuple(images.shape[-2:])}")
    if size is not None and images.shape[-1] != size:
        raise ValueError(f"this CLIP takes {size}x{size} images, got {tuple(images.shape[-2:])}")


def train_clip(
    images: torch.Tensor,
    captions: list[str],
    p: ClipParams,
    on_step: Callable[[int, dict], None] | None = None,
    checkpoint: Checkpointer | None = None,
) -> open_clip.CLIP:
    """Contrastively train a small CLIP on image-caption pairs (images [N,3,R,R] in [0,1]; the CLIP takes R px).

    With a `checkpoint`, the loop resumes from its last checkpoint (replaying the earlier steps' metrics through
    on_step) and saves one periodically; the result is bitwise the same as an uninterrupted run's."""
    _check_images(images)
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    model = build_clip(p, images.shape[-1])
    model.train()
    tokenizer = build_tokenizer(p.context_length)
    tokens = tokenizer(captions)
    pixels = normalize_images(images.float())
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    g = torch.Generator().manual_seed(p.seed)
    state = TrainState(p.steps, modules={"clip": model}, optimizer=opt, generators={"batches": g},
                       checkpoint=checkpoint, on_step=on_step)
    state.resume()
    n = len(images)
    for _ in tqdm(range(state.step, p.steps), initial=state.step, total=p.steps, desc="train clip",
                  disable=progress_disabled()):
        idx = torch.randperm(n, generator=g)[: p.batch_size]
        x = pixels[idx]
        flip = torch.rand(len(idx), generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        img_f, txt_f, scale = model(x, tokens[idx])
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        state.record({"clip_loss": loss.item()})
    model.eval()
    return model


def save_clip_bundle(model: open_clip.CLIP, p: ClipParams | dict, folder: str | Path) -> str:
    """Write a `local-dir:` bundle (open_clip_config.json + safetensors), check it loads back, return the weights' sha256.
    `p`: the params it was built from, or its own model_cfg (a pretrained checkpoint's, from clip_config)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model_config(p, image_size(model)) if isinstance(p, ClipParams) else p
    mean, std = _mean_std(model)  # a pretrained model keeps its own normalisation
    config = {
        "model_cfg": cfg,
        "preprocess_cfg": {"size": cfg["vision_cfg"]["image_size"], "mean": list(mean), "std": list(std)},
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME))
    loaded = open_clip.create_model(f"local-dir:{folder}", device="cpu")
    for key, value in loaded.state_dict().items():
        if not torch.equal(value, state[key]):
            raise RuntimeError(f"CLIP bundle at {folder} did not load back identically (tensor {key})")
    return hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()


# open_clip's names for a local-dir bundle's weights, in its own order of preference (factory._find_checkpoint_in_dir);
# Atelier reads safetensors only
BUNDLE_WEIGHTS = (WEIGHTS_NAME, "open_clip_pytorch_model.safetensors", "model.safetensors")
BUNDLED_VOCAB = 49408  # open_clip's bundled BPE tokenizer (SimpleTokenizer)
UNSUPPORTED = {  # model_cfg keys Atelier cannot use, and why
    "custom_text": "a custom text tower (CustomTextCLIP)", "multimodal_cfg": "a CoCa captioning head",
    "timm_model_name": "a timm image tower (its weights come from the network)",
    "hf_model_name": "a Hugging Face text tower (its weights come from the network)",
}


def _checkpoint_files(spec: str | Path) -> tuple[Path, Path]:
    """(config json, safetensors weights) of a CLIP spec: a `local-dir:` bundle folder (open_clip's local-dir schema:
    open_clip_config.json with model_cfg and preprocess_cfg, and safetensors weights), or a `.safetensors` file with
    open_clip_config.json beside it (the same file names as open_clip's hub format)."""
    text = str(spec)
    if text.startswith("hf-hub:"):
        raise ValueError(f"CLIP spec {text!r}: Atelier never downloads a model; save it as a local-dir: bundle and "
                         "name that folder")
    path = Path(text.removeprefix("local-dir:"))
    if path.is_dir():
        config = path / CONFIG_NAME
        if not config.is_file():
            raise FileNotFoundError(f"{path}: not a CLIP bundle ({CONFIG_NAME} missing)")
        weights = next((path / name for name in BUNDLE_WEIGHTS if (path / name).is_file()), None)
        if weights is None:
            found = sorted(f.name for f in path.iterdir() if f.suffix in (".bin", ".pth", ".pt", ".safetensors"))
            raise FileNotFoundError(f"{path}: CLIP bundle has none of {list(BUNDLE_WEIGHTS)} (found {found}); only "
                                    "safetensors weights are loaded: convert the checkpoint with safetensors")
        return config, weights
    if path.suffix == ".safetensors" and path.is_file():
        config = path.parent / CONFIG_NAME
        if not config.is_file():
            raise FileNotFoundError(f"{path}: a .safetensors CLIP checkpoint needs its open_clip config "
                                    f"{CONFIG_NAME} (model_cfg, preprocess_cfg) beside it")
        return config, path
    raise FileNotFoundError(f"CLIP spec {text!r} is neither a bundle folder (local-dir:) nor a .safetensors file")


def clip_config(spec: str | Path) -> dict:
    """The open_clip model_cfg of a CLIP spec, refused when Atelier cannot use it (names the key and why)."""
    config_path, _ = _checkpoint_files(spec)
    document = json.loads(config_path.read_text(encoding="utf-8"))
    if "model_cfg" not in document:
        raise ValueError(f"{config_path}: no model_cfg (open_clip's local-dir config holds model_cfg and "
                         "preprocess_cfg)")
    cfg = document["model_cfg"]
    for key, what in UNSUPPORTED.items():
        if cfg.get(key) or cfg.get("vision_cfg", {}).get(key) or cfg.get("text_cfg", {}).get(key):
            raise ValueError(f"{config_path}: {key} ({what}) is not supported: Atelier conditions on open_clip's "
                             "CLIP text transformer and loads local weights only")
    text = cfg.get("text_cfg", {})
    if text.get("hf_tokenizer_name"):
        raise ValueError(f"{config_path}: text_cfg.hf_tokenizer_name {text['hf_tokenizer_name']!r} names a Hugging "
                         "Face tokenizer; Atelier uses open_clip's bundled BPE tokenizer only (offline)")
    if text.get("vocab_size", BUNDLED_VOCAB) != BUNDLED_VOCAB:
        raise ValueError(f"{config_path}: text_cfg.vocab_size {text['vocab_size']} differs from the bundled "
                         f"tokenizer's {BUNDLED_VOCAB}; that checkpoint needs another tokenizer")
    return cfg


def tensor_mismatches(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> list[str]:
    """Each key whose tensor differs in shape between the config's model (`expected`) and a checkpoint (`found`), or
    that only one of them has."""
    out = [f"{key}: checkpoint {tuple(found[key].shape)} vs config {tuple(expected[key].shape)}"
           for key in expected if key in found and found[key].shape != expected[key].shape]
    out += [f"{key}: in the config's model, not in the checkpoint" for key in expected if key not in found]
    out += [f"{key}: in the checkpoint, not in the config's model" for key in found if key not in expected]
    return out


def load_clip(spec: str | Path, resolution: int | None = None) -> tuple[open_clip.CLIP, object]:
    """Load (model, tokenizer) from a bundle folder (`local-dir:` prefix optional) or a .safetensors file beside its
    config. With `resolution` (clean.resolution), refuse a model made for other images. A checkpoint whose tensors
    do not fit its config is refused, naming the keys and both shapes."""
    config_path, weights = _checkpoint_files(spec)
    cfg = clip_config(spec)
    if resolution is not None:
        size = cfg["vision_cfg"].get("image_size")
        refuse_other_resolution(size, resolution, f"vision_cfg.image_size in {config_path}")
    model = open_clip.CLIP(**cfg)
    state = load_file(str(weights))
    problems = tensor_mismatches(model.state_dict(), state)
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise ValueError(f"{weights}: the checkpoint does not fit its config {config_path} ({shown}); use the "
                         "config the checkpoint was saved with")
    model.load_state_dict(state)
    preprocess = json.loads(config_path.read_text(encoding="utf-8")).get("preprocess_cfg", {})
    set_model_preprocess_cfg(model, merge_preprocess_dict(asdict(PreprocessCfg()), preprocess)
                             | {"size": image_size(model)})
    model.eval()
    return model, open_clip.get_tokenizer(f"local-dir:{config_path.parent}")


def evaluator_dir(model_dir: str | Path) -> Path:
    """The CLIP bundle that scores a saved pipeline: its own `evaluator/` when present, else its text encoder `clip/`
    (pipelines saved before they carried an evaluator)."""
    model_dir = Path(model_dir)
    return model_dir / "evaluator" if (model_dir / "evaluator").is_dir() else model_dir / "clip"


def load_evaluator(model_dir: str | Path) -> tuple[open_clip.CLIP, open_clip.tokenizer.SimpleTokenizer]:
    """(model, tokenizer) of a saved pipeline's evaluator CLIP; evaluator_dir(model_dir) says which folder it was."""
    return load_clip(evaluator_dir(model_dir))


@torch.no_grad()
def encode_images(model: open_clip.CLIP, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised image embeddings [N,D] for images [N,3,R,R] in [0,1], R the model's image size."""
    _check_images(images, image_size(model))
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        out.append(model.encode_image(normalize_images(images[i : i + batch_size].float(), model), normalize=True))
    return torch.cat(out)


@torch.no_grad()
def encode_texts(model: open_clip.CLIP, tokenizer, texts: list[str]) -> torch.Tensor:
    """L2-normalised text embeddings [N,D]."""
    model.eval()
    return model.encode_text(tokenizer(texts), normalize=True)


@torch.no_grad()
def text_token_states(model: open_clip.CLIP, tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(token states [N,L,W] after the final LayerNorm, pooled normalised embedding [N,D]) for conditioning."""
    model.eval()
    tokens = tokenizer(texts)
    x = model.token_embedding(tokens) + model.positional_embedding
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    return x, model.encode_text(tokens, normalize=True)


def class_captions(kind: str) -> dict[str, list[str]]:
    """Every caption of each class: style s -> caption_for(s, p) for all palettes, and vice versa."""
    if kind == "style":
        return {s: [caption_for(s, pal) for pal in PALETTES] for s in STYLES}
    if kind == "palette":
        return {pal: [caption_for(s, pal) for s in STYLES] for pal in PALETTES}
    raise ValueError(f"zero-shot kind must be 'style' or 'palette', got {kind!r}")


def class_embeddings(model: open_clip.CLIP, tokenizer, kind: str) -> tuple[list[str], torch.Tensor]:
    """(class names, [C,D]) where each row is the normalised mean of its class's caption embeddings."""
    names, rows = [], []
    for name, caps in class_captions(kind).items():
        names.append(name)
        rows.append(F.normalize(encode_texts(model, tokenizer, caps).mean(0), dim=-1))
    return names, torch.stack(rows)


def zero_shot_from_embeddings(
    image_emb: torch.Tensor, class_emb: torch.Tensor, names: list[str], labels: list[str]
) -> tuple[float, list[str]]:
    """(accuracy, predicted class names): each image takes the class of highest cosine."""
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {names}")
    pred = [names[i] for i in (image_emb @ class_emb.T).argmax(dim=1).tolist()]
    acc = sum(a == b for a, b in zip(pred, labels)) / max(len(labels), 1)
    return acc, pred


def zero_shot(
    model: open_clip.CLIP, tokenizer, images: torch.Tensor, labels: list[str], kind: str
) -> tuple[float, list[str]]:
    """Zero-shot (accuracy, predictions) by style or palette; chance is 1/6 for the demo classes."""
    names, cls = class_embeddings(model, tokenizer, kind)
    return zero_shot_from_embeddings(encode_images(model, images), cls, names, labels)
