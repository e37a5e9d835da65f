"""The parts of a registered model and where each came from, and the `licensed_only` verdict over them.

Two kinds of part:
- **trained here** on the licensed set (the autoencoder, the UNet, the CLIP text encoder and evaluator of the default
  pipeline; the LoRA adapters, the similarity CLIP and evaluator of lora_sd): their training data is the licensed
  set, named by its dataset card's sha256;
- **declared** in params.yaml `components` (a pretrained CLIP, a base model, its text encoder): name, role, licence
  and training-data statement as their makers give them, and a weights digest computed here from their files, never
  declared (sha256 of a file; for a folder, hashing.weights_digest over its safetensors files).

`licensed_only(parts)` is true only when every part was trained here or declares `training_data_licensed: true`;
unknown (null) counts as false, and the reason names each part that fails. No local path is recorded: a part is named
by its name and digest. Below stages/, provenance/ and registry/ (like atelier/rights.py); MLflow-free.
"""

from __future__ import annotations

import json
from pathlib import Path

from atelier import paths
from atelier.config import ComponentParams, Params
from atelier.hashing import file_sha256, weights_digest

# backend -> the parts that backend trains here: (name, role, their folder in the saved pipeline or None)
TRAINED_HERE = {
    "latent": [
        ("atelier-autoencoder", "autoencoder", "vae"),
        ("atelier-unet", "unet", "unet"),
        ("atelier-clip", "text_encoder", "clip"),
        ("atelier-evaluator", "evaluator", "evaluator"),
    ],
    "lora_sd": [
        ("atelier-lora", "lora_adapters", "lora"),
        ("atelier-clip", "similarity_clip", "clip"),
        ("atelier-evaluator", "evaluator", "evaluator"),
    ],
}
CLIP_PARTS = ("clip", "evaluator")  # folders that hold the pretrained CLIP instead, when train_clip.pretrained is set
TAG_LIMIT = 5000  # MLflow's longest model-version tag value


def local_path(spec: str, root: Path = paths.ROOT) -> Path:
    """The file or folder of a component spec (`local-dir:` prefix dropped; relative to the project root)."""
    path = Path(spec.removeprefix("local-dir:"))
    return path if path.is_absolute() else root / path


def weights_sha256(spec: str, root: Path = paths.ROOT) -> str:
    """The weights digest of a component: sha256 of its file, or weights_digest over a folder's safetensors files."""
    path = local_path(spec, root)
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        return weights_digest(path)
    raise FileNotFoundError(
        f"component weights {spec!r} not found (looked at {path}); point its `path` in "
        "params.yaml components at the local file or folder"
    )


def declared_part(c: ComponentParams, root: Path = paths.ROOT) -> dict:
    """One declared component as the records carry it (no path: named by its computed digest)."""
    return {
        "name": c.name,
        "role": c.role,
        "trained_here": False,
        "weights_sha256": weights_sha256(c.path, root),
        "license": c.license,
        "training_data": c.training_data,
        "training_data_licensed": c.training_data_licensed,
    }


def trained_part(name: str, role: str, dataset_card_sha256: str, weights: str | None) -> dict:
    """One part trained here on the licensed set (`weights`: its folder's digest in the saved pipeline, if any)."""
    return {
        "name": name,
        "role": role,
        "trained_here": True,
        "weights_sha256": weights,
        "license": None,
        "training_data": f"the licensed set (dataset card sha256 {dataset_card_sha256})",
        "training_data_licensed": True,
    }


def _same(a: str | None, b: str) -> bool:
    return bool(a) and a.removeprefix("local-dir:").rstrip("/") == b.removeprefix("local-dir:").rstrip("/")


def refuse_unused(params: Params) -> None:
    """Raise when a declared component is not a part of this run (a stale entry would make the verdict lie)."""
    pretrained, base = params.train_clip.pretrained, params.train_diffusion.base_model
    for i, c in enumerate(params.components):
        where = f"params.yaml components[{i}] {c.name!r} (role {c.role}, path {c.path!r})"
        if c.role == "clip" and not _same(pretrained, c.path):
            raise ValueError(
                f"{where} is not train_clip.pretrained ({pretrained!r}): the run does not use it; "
                "remove it or set train_clip.pretrained to its path"
            )
        if c.role == "base_model" and not _same(base, c.path):
            raise ValueError(
                f"{where} is not train_diffusion.base_model ({base!r}): the run does not use it; "
                "remove it or set train_diffusion.base_model to its path"
            )
        if c.role == "text_encoder" and not base:
            raise ValueError(
                f"{where}: a declared text encoder belongs to a base model, but train_diffusion."
                "base_model is not set (the latent backend's text encoder is the CLIP: declare a "
                "pretrained one with role clip)"
            )


def for_run(
    params: Params,
    dataset_card_sha256: str,
    pipeline_dir: Path | None = None,
    recorded_clip_sha256: str | None = None,
    root: Path = paths.ROOT,
) -> list[dict]:
    """Every part of the model this run registers: those trained here (with their folder's digest in `pipeline_dir`
    when it has one) then the declared ones (digests computed from their files now). `recorded_clip_sha256`: the
    pretrained CLIP's digest as the train_clip stage recorded it (reports/clip.json); another file now is refused."""
    refuse_unused(params)
    pretrained = params.train_clip.pretrained
    parts = []
    for name, role, folder in TRAINED_HERE[params.train_diffusion.backend]:
        if pretrained and folder in CLIP_PARTS:
            continue  # that folder holds the declared CLIP
        found = pipeline_dir is not None and folder is not None and (Path(pipeline_dir) / folder).is_dir()
        parts.append(
            trained_part(
                name, role, dataset_card_sha256, weights_digest(Path(pipeline_dir) / folder) if found else None
            )
        )
    declared = [declared_part(c, root) for c in params.components]
    for c, part in zip(params.components, declared):
        if c.role == "clip" and recorded_clip_sha256 and part["weights_sha256"] != recorded_clip_sha256:
            raise ValueError(
                f"train_clip.pretrained {c.path!r} has weights sha256 {part['weights_sha256'][:16]}... "
                f"now, but the train_clip stage loaded {recorded_clip_sha256[:16]}... (reports/clip.json)"
                ": the checkpoint changed since; run `dvc repro -f train_clip` and the stages after it"
            )
    return parts + declared


def licensed_only(parts: list[dict]) -> tuple[bool, str]:
    """(verdict, reason): true only when every part was trained here on the licensed set or declares licensed
    training data; a part that declares false or null (unknown) makes it false, and the reason names it."""
    failing = []
    for part in parts:
        if part["trained_here"] or part["training_data_licensed"] is True:
            continue
        stated = "unlicensed" if part["training_data_licensed"] is False else "unknown (not declared licensed)"
        failing.append(
            f"{part['role']} {part['name']!r} (weights sha256 {str(part['weights_sha256'])[:12]}...) "
            f"was trained on {stated} data: {part['training_data']}"
        )
    if failing:
        return False, "not licensed-only: " + "; ".join(failing)
    outside = [f"{p['role']} {p['name']!r}" for p in parts if not p["trained_here"]]
    if outside:
        return True, (
            "every part was trained here on the licensed set or declares licensed training data "
            f"({', '.join(outside)}: declared by its makers)"
        )
    return True, "every part was trained here on the licensed set"


def as_tag(parts: list[dict]) -> str:
    """The parts as one compact JSON text (a registry tag); raises when MLflow could not hold it."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text) > TAG_LIMIT:
        raise ValueError(
            f"the components record is {len(text)} characters, over MLflow's tag limit {TAG_LIMIT}; "
            "shorten the training_data statements in params.yaml components"
        )
    return text


def from_tag(text: str) -> list[dict]:
    """Inverse of as_tag()."""
    return json.loads(text)


def base_component(params: Params) -> ComponentParams:
    """The `components:` entry declaring train_diffusion.base_model (params validation guarantees there is one)."""
    wanted = str(params.train_diffusion.base_model).rstrip("/")
    return next(c for c in params.components if c.path.rstrip("/") == wanted)


def base_record(component: ComponentParams) -> dict:
    """The base model as the LoRA model and its registry entry record it: name, path, licence, computed digest."""
    folder = local_path(component.path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"train_diffusion.base_model {component.path!r}: no such folder ({folder}); point it "
            "at a local diffusers Stable Diffusion folder (model_index.json, safetensors weights)"
        )
    return {
        "name": component.name,
        "path": component.path,
        "license": component.license,
        "training_data": component.training_data,
        "training_data_licensed": component.training_data_licensed,
        "weights_sha256": weights_sha256(component.path),
    }
