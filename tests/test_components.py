"""Declared components and the computed licensed_only verdict (atelier/components.py): pure, no training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from atelier import components, paths
from atelier.config import ConfigError, load_params

CARD = "c" * 64


def _params(tmp_path: Path, mutate=None):
    data = yaml.safe_load(paths.PARAMS.read_text())
    if mutate:
        mutate(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_params(path)


def _checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.safetensors"
    save_file({"w": torch.arange(8, dtype=torch.float32)}, str(path))
    return path


def _with_clip(path: Path, licensed):
    def mutate(data):
        data["train_clip"]["pretrained"] = str(path)
        data["components"] = [
            {
                "name": "tiny-clip",
                "role": "clip",
                "path": str(path),
                "license": "MIT",
                "training_data": "web image-text pairs",
                "training_data_licensed": licensed,
            }
        ]

    return mutate


def _pipeline(tmp_path: Path) -> Path:
    for folder in ("vae", "unet", "clip", "evaluator"):
        _checkpoint(tmp_path / "pipeline" / folder)
    return tmp_path / "pipeline"


def test_the_default_pipeline_is_licensed_only_every_part_trained_here(tmp_path):
    parts = components.for_run(_params(tmp_path), CARD, _pipeline(tmp_path))
    assert [p["name"] for p in parts] == ["atelier-autoencoder", "atelier-unet", "atelier-clip", "atelier-evaluator"]
    assert all(p["trained_here"] and CARD in p["training_data"] and len(p["weights_sha256"]) == 64 for p in parts)
    verdict, reason = components.licensed_only(parts)
    assert verdict is True and reason == "every part was trained here on the licensed set"


@pytest.mark.parametrize("licensed, stated", [(False, "unlicensed"), (None, "unknown")])
def test_a_component_declaring_unlicensed_or_unknown_data_makes_it_false_naming_the_part(tmp_path, licensed, stated):
    ckpt = _checkpoint(tmp_path / "ckpt")
    parts = components.for_run(_params(tmp_path, _with_clip(ckpt, licensed)), CARD, _pipeline(tmp_path))
    assert [p["name"] for p in parts] == ["atelier-autoencoder", "atelier-unet", "tiny-clip"]  # clip/ holds it
    verdict, reason = components.licensed_only(parts)
    assert verdict is False
    assert "clip 'tiny-clip'" in reason and stated in reason and "web image-text pairs" in reason
    assert str(tmp_path) not in components.as_tag(parts)  # named by digest, never by local path


def test_a_component_declaring_licensed_data_keeps_it_true_and_says_so(tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt")
    verdict, reason = components.licensed_only(components.for_run(_params(tmp_path, _with_clip(ckpt, True)), CARD))
    assert verdict is True and "clip 'tiny-clip'" in reason and "declared by its makers" in reason


def test_the_digest_is_computed_from_the_weights_not_declared(tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt")
    params = _params(tmp_path, _with_clip(ckpt, None))
    before = components.for_run(params, CARD)[-1]["weights_sha256"]
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 1  # one byte of the last tensor
    ckpt.write_bytes(bytes(data))
    after = components.for_run(params, CARD)[-1]["weights_sha256"]
    assert before != after and len(after) == 64
    with pytest.raises(ValueError, match="changed since.*dvc repro -f train_clip"):
        components.for_run(params, CARD, recorded_clip_sha256=before)
    # a folder: one digest over its safetensors files, changed by a byte of any of them
    folder_digest = components.weights_sha256(f"local-dir:{ckpt.parent}")
    _checkpoint(tmp_path / "ckpt" / "sub")
    assert components.weights_sha256(f"local-dir:{ckpt.parent}") != folder_digest


def test_a_pretrained_clip_not_declared_is_refused_by_the_config(tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt")

    def undeclared(data):
        data["train_clip"]["pretrained"] = str(ckpt)

    with pytest.raises(ConfigError, match="train_clip.pretrained .* is not declared under components"):
        _params(tmp_path, undeclared)


def test_a_declared_part_the_run_does_not_use_is_refused(tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt")

    def stale(data):
        _with_clip(ckpt, True)(data)
        data["train_clip"]["pretrained"] = None

    with pytest.raises(ValueError, match=r"components\[0\] 'tiny-clip'.*the run does not use it"):
        components.for_run(_params(tmp_path, stale), CARD)


def test_missing_weights_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*params.yaml components"):
        components.weights_sha256(str(tmp_path / "nowhere.safetensors"))


def test_the_run_summary_states_the_champions_verdict():
    from atelier.run_summary import format_summary

    champion = {"name": "m", "version": "1", "run_id": "r"}
    yes = format_summary(
        {"champion": champion | {"licensed_only": True, "licensed_only_reason": "every part was trained here"}}
    )
    assert "  licensed only: yes: every part was trained here" in yes.splitlines()
    no = format_summary(
        {"champion": champion | {"licensed_only": False, "licensed_only_reason": "not licensed-only: clip 'x' was ..."}}
    )
    assert "  licensed only: NO: not licensed-only: clip 'x' was ..." in no.splitlines()
    assert "licensed only: not recorded" in format_summary({"champion": champion})  # a version from before
    assert "licensed only" not in format_summary({"champion": {"name": "m", "version": None}})
