"""Resumable training (atelier/checkpoint.py): a training loop stopped part way and run again ends bitwise identical
to one that was never stopped; a checkpoint from other params or inputs, or a partial one, is never used.

The fast tests stop a loop by raising from its on_step callback (nothing of the stopped run survives in memory but
what the checkpoint holds); the slow one SIGKILLs a real train_autoencoder stage and runs it again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_tensors

from atelier import checkpoint as ckpt
from atelier import dvc
from atelier.hashing import weights_digest
from atelier.models import clip as C
from atelier.models import latent_diffusion as L
from tests.conftest import edit_params
from tests.test_models import AE_P, CLIP_P, DIFF_P

STEPS = 7  # per fast run: checkpoints after steps 2, 4, 6 and 7 (the last)
EVERY = 2
STOP_AT = 5  # the loop is stopped in step index 5, before its checkpoint: the resumed run redoes step 4 onwards


class Stopped(Exception):
    """Stands for a kill: raised from on_step, it abandons the run and everything it held in memory."""


def _data() -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(3)
    images = torch.rand(12, 3, 32, 32, generator=g)
    captions = [f"a {c} {s} composition" for c in ("red", "blue", "green") for s in ("grid", "spiral", "stripes", "")]
    return images, captions


def _sha(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's safetensors bytes: equal only when every tensor is bitwise equal."""
    return hashlib.sha256(save_tensors({k: v.contiguous() for k, v in state_dict.items()})).hexdigest()


def _train(loop: str, checkpoint=None, stop_at: int | None = None) -> tuple[str, list[tuple[int, dict]]]:
    """Run one of the three training loops at toy size; return (weights sha256, the (step, metrics) it reported)."""
    images, captions = _data()
    rows: list[tuple[int, dict]] = []

    def on_step(step: int, metrics: dict) -> None:
        if step == stop_at:
            raise Stopped
        rows.append((step, dict(metrics)))

    if loop == "clip":
        model = C.train_clip(images, captions, CLIP_P.model_copy(update={"steps": STEPS}), on_step, checkpoint)
        return _sha(model.state_dict()), rows
    if loop == "autoencoder":
        vae, scale = L.train_autoencoder(images, AE_P.model_copy(update={"steps": STEPS}), on_step, checkpoint)
        return _sha(vae.state_dict()) + f":{scale!r}", rows
    clip_model = C.build_clip(CLIP_P)
    latents = torch.randn(len(images), 4, 8, 8, generator=torch.Generator().manual_seed(4))
    unet = L.train_unet(
        latents,
        captions,
        clip_model,
        C.build_tokenizer(CLIP_P.context_length),
        DIFF_P.model_copy(update={"steps": STEPS, "caption_dropout": 0.3}),
        on_step,
        flipped_latents=latents.flip(-1),
        checkpoint=checkpoint,
    )
    return _sha(unet.state_dict()), rows


def _stopped_run(loop: str, checkpointer: ckpt.Checkpointer) -> None:
    with pytest.raises(Stopped):
        _train(loop, checkpointer, stop_at=STOP_AT)


@pytest.fixture(scope="module")
def uninterrupted() -> dict[str, tuple[str, list]]:
    return {loop: _train(loop) for loop in ("clip", "autoencoder", "unet")}


@pytest.mark.parametrize("loop", ["clip", "autoencoder", "unet"])
def test_a_stopped_loop_resumes_to_the_uninterrupted_result(loop, uninterrupted, tmp_path, capsys):
    folder = tmp_path / loop
    key = {"loop": loop, "params": "toy"}
    _stopped_run(loop, ckpt.Checkpointer(folder, key, f"train_{loop}", every=EVERY))
    assert [p.name for p in folder.iterdir()] == ["step-0000004"]  # older checkpoints are deleted once a newer is in

    weights, rows = _train(loop, ckpt.Checkpointer(folder, key, f"train_{loop}", every=EVERY))
    assert weights == uninterrupted[loop][0]
    assert rows == uninterrupted[loop][1]  # curve rows of the steps before the stop are replayed, exactly
    assert f"train_{loop}: resuming from step 4 of {STEPS} (checkpoint " in capsys.readouterr().out
    assert [p.name for p in folder.iterdir()] == [f"step-{STEPS:07d}"]  # the last step is saved too


def test_a_finished_run_resumes_at_its_end_without_training(uninterrupted, tmp_path, capsys):
    """Killed after training but before its outputs were written, a stage redoes no step."""
    folder = tmp_path / "ae"
    _train("autoencoder", ckpt.Checkpointer(folder, {"k": 1}, "train_autoencoder", every=EVERY))
    weights, rows = _train("autoencoder", ckpt.Checkpointer(folder, {"k": 1}, "train_autoencoder", every=EVERY))
    assert f"resuming from step {STEPS} of {STEPS}" in capsys.readouterr().out
    assert (weights, rows) == uninterrupted["autoencoder"]


def test_a_checkpoint_with_another_key_is_ignored_and_deleted(uninterrupted, tmp_path, capsys):
    folder = tmp_path / "clip"
    _stopped_run("clip", ckpt.Checkpointer(folder, {"params": "A"}, "train_clip", every=EVERY))
    other = CLIP_P.model_copy(update={"steps": STEPS, "lr": 0.002})  # a run with other params: another key
    assert ckpt.Checkpointer(folder, {"params": "A"}, "x").key != ckpt.Checkpointer(folder, {"params": "B"}, "x").key

    reported = []
    C.train_clip(
        *_data(),
        other,
        lambda step, m: reported.append(step),
        ckpt.Checkpointer(folder, {"params": "B"}, "train_clip", every=0),
    )
    out = capsys.readouterr().out
    assert "train_clip: ignoring checkpoint" in out and "made with other params, code or inputs; deleted" in out
    assert "resuming" not in out
    assert reported == list(range(STEPS))  # trained from step 0
    assert not list(folder.iterdir())  # deleted, and every=0 saved nothing


def test_partial_and_corrupt_checkpoints_are_never_loaded(uninterrupted, tmp_path, capsys):
    folder = tmp_path / "ae"
    key = {"params": "A"}
    _stopped_run("autoencoder", ckpt.Checkpointer(folder, key, "train_autoencoder", every=EVERY))
    good = folder / "step-0000004"
    # a writer killed mid-write leaves a hidden temporary (named .<name>.<pid>.<random> by atelier.io)
    dead = subprocess.Popen(["true"])
    dead.wait()
    half = folder / f".step-0000006.{dead.pid}.k1ll3d"
    half.mkdir()
    (half / ckpt.TENSORS).write_bytes((good / ckpt.TENSORS).read_bytes()[:1000])
    live = folder / f".step-0000006.{os.getpid()}.writing"  # a writer at work right now: left alone
    live.mkdir()
    # newer-looking folders whose bytes did not all reach the disk (power loss): no manifest, or a wrong digest
    no_manifest = folder / "step-0000008"
    shutil.copytree(good, no_manifest)
    (no_manifest / ckpt.MANIFEST).unlink()
    corrupt = folder / "step-0000006"
    shutil.copytree(good, corrupt)
    blob = bytearray((corrupt / ckpt.TENSORS).read_bytes())
    blob[-1] ^= 0xFF
    (corrupt / ckpt.TENSORS).write_bytes(bytes(blob))

    weights, rows = _train("autoencoder", ckpt.Checkpointer(folder, key, "train_autoencoder", every=EVERY))
    out = capsys.readouterr().out
    assert "ignoring checkpoint" in out and "incomplete (no readable manifest)" in out
    assert "corrupt (tensors.safetensors does not match its digest)" in out
    assert "resuming from step 4 of" in out
    assert (weights, rows) == uninterrupted["autoencoder"]
    assert not half.exists() and live.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([live.name, f"step-{STEPS:07d}"])


def test_a_read_only_checkpointer_resumes_but_never_writes_or_deletes(uninterrupted, tmp_path, capsys):
    """The other ranks of a data-parallel run (atelier/distributed.py) resume from rank 0's checkpoints, and leave
    the writing, the deleting and the log lines to it."""
    import json

    folder = tmp_path / "ae"
    key = {"params": "A"}
    _stopped_run("autoencoder", ckpt.Checkpointer(folder, key, "train_autoencoder", every=EVERY))
    good = folder / "step-0000004"
    meta = json.loads((good / ckpt.STATE).read_text())
    meta["rows"][0]["ae_l1"] = 123.0  # a mark: seen in the curve only if the run resumed from this checkpoint
    (good / ckpt.STATE).write_text(json.dumps(meta))
    manifest = json.loads((good / ckpt.MANIFEST).read_text())
    manifest["files"][ckpt.STATE] = hashlib.sha256((good / ckpt.STATE).read_bytes()).hexdigest()
    (good / ckpt.MANIFEST).write_text(json.dumps(manifest))
    unusable = folder / "step-0000006"  # newer, but its manifest never reached the disk
    shutil.copytree(good, unusable)
    (unusable / ckpt.MANIFEST).unlink()
    capsys.readouterr()

    reader = ckpt.Checkpointer(folder, key, "train_autoencoder", every=EVERY, read_only=True)
    weights, rows = _train("autoencoder", reader)
    assert rows[0] == (0, {**uninterrupted["autoencoder"][1][0][1], "ae_l1": 123.0})  # resumed from step 4
    assert (weights, rows[1:]) == (uninterrupted["autoencoder"][0], uninterrupted["autoencoder"][1][1:])
    assert sorted(p.name for p in folder.iterdir()) == ["step-0000004", "step-0000006"]  # nothing saved or deleted
    assert capsys.readouterr().out == ""


def test_checkpoint_period_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(ckpt.EVERY_ENV, raising=False)
    assert ckpt.checkpoint_every() == ckpt.CHECKPOINT_EVERY
    monkeypatch.setenv(ckpt.EVERY_ENV, "7")
    assert ckpt.Checkpointer(Path("x"), {}, "t").every == 7
    monkeypatch.setenv(ckpt.EVERY_ENV, "-3")
    with pytest.raises(ValueError, match=ckpt.EVERY_ENV):
        ckpt.checkpoint_every()


def test_stage_key_follows_params_and_deps(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  t:\n    cmd: x\n    deps: [code.py, data]\n    params: [t, other.fraction]\n"
    )
    (tmp_path / "params.yaml").write_text("t: {steps: 3}\nother: {fraction: 0.1, unrelated: 1}\n")
    (tmp_path / "code.py").write_text("print(1)\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.png").write_bytes(b"a")
    monkeypatch.setattr(ckpt.paths, "ROOT", tmp_path)
    monkeypatch.setattr(ckpt.paths, "PARAMS", tmp_path / "params.yaml")
    first = ckpt.stage_key("t")
    assert first["params"] == {"t": {"steps": 3}, "other.fraction": 0.1}
    (tmp_path / "params.yaml").write_text("t: {steps: 3}\nother: {fraction: 0.1, unrelated: 2}\n")
    assert ckpt.stage_key("t") == first  # a param the stage does not read
    (tmp_path / "data" / "b.png").write_bytes(b"b")
    assert ckpt.stage_key("t") != first  # its training data changed


# ------------------------------------------------------------------------------------------- a real SIGKILL (slow)


def _stage(root: Path, name: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"stages.{name}"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _outputs(root: Path) -> dict:
    return {
        "weights": weights_digest(root / "models" / "autoencoder"),
        "curve": (root / "reports" / "curves" / "autoencoder.csv").read_text(),
    }


@pytest.mark.slow
def test_train_autoencoder_killed_by_sigkill_resumes_to_the_same_model(workspace, monkeypatch):
    """SIGKILL the train_autoencoder stage once it has saved a checkpoint; the next `dvc repro` resumes from that
    checkpoint and writes the same weights and loss curve as an uninterrupted run, and leaves no checkpoint behind."""
    edit_params(
        workspace,
        train_clip={**CLIP_P.model_dump(exclude={"pretrained"}), "steps": 2},
        train_autoencoder={"steps": 40, "batch_size": 16},
    )
    dvc.repro("train_clip", root=workspace)
    monkeypatch.setenv(ckpt.EVERY_ENV, "5")  # for the stage processes started below, directly or by DVC
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    checkpoints = workspace / ".atelier" / "checkpoints" / "train_autoencoder"

    reference = _stage(workspace, "train_autoencoder", env)
    output = reference.communicate(timeout=600)[0]  # read as it runs: a full pipe would stall the stage
    assert reference.returncode == 0, output
    want = _outputs(workspace)
    assert not checkpoints.exists()  # a finished stage leaves no checkpoint

    start = time.time()
    victim = _stage(workspace, "train_autoencoder", env)
    while victim.poll() is None and not list(checkpoints.glob("step-*")) and time.time() - start < 600:
        time.sleep(0.005)
    assert victim.poll() is None, "the stage finished before it could be killed: give it more steps"
    victim.kill()  # SIGKILL: no handler, no cleanup
    victim.wait()
    saved = [p.name for p in checkpoints.glob("step-*")]
    assert saved, "no checkpoint survived the kill"

    out = dvc.repro("train_autoencoder", root=workspace)  # DVC deletes models/autoencoder first, not checkpoints
    assert "train_autoencoder: resuming from step " in out and " of 40 (checkpoint .atelier/checkpoints/" in out, out
    assert _outputs(workspace) == want
    assert not checkpoints.exists()
