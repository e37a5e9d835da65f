"""Training beyond one process (atelier/distributed.py): the train_diffusion stage with processes: 2 re-launches itself
under torchrun (gloo, two CPU processes), resumes after its whole process group is SIGKILLed, registers one model
version, and follows the loss curve of a single-process run of the same global batch within LOSS_TOLERANCE.

One toy project copy is shared by the tests of this module, in order: a single-process run through `dvc repro` (the
reference), then a two-process run killed part way and finished by `dvc repro`. Each finished run registers one
version in the copy's MLflow sqlite store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from atelier import checkpoint as ckpt
from atelier import distributed, dvc
from atelier.hashing import weights_digest
from tests.conftest import copy_repo, edit_params
from tests.test_models import CLIP_P

STEPS = 12
# the largest difference allowed between the two-process and the one-process unet_loss at any step: the ranks draw
# the same samples, so only the order of float additions differs (DDP's gradient average, the loss's mean of means)
LOSS_TOLERANCE = 2e-4
TOY = dict(
    demo={"per_class": 2},
    train_clip={**CLIP_P.model_dump(exclude={"pretrained"}), "steps": 2},
    train_autoencoder={"steps": 2, "batch_size": 8},
    train_diffusion={"steps": STEPS, "batch_size": 8, "warmup_steps": 1, "processes": 1, "device": "cpu"},
)


def _env(**extra: str) -> dict:
    return dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""), **extra)


def _stage(root: Path, **env: str) -> subprocess.Popen:
    """The train_diffusion stage itself, in its own session (so its whole group can be killed)."""
    return subprocess.Popen(
        [sys.executable, "-m", "stages.train_diffusion"],
        cwd=root,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    return out


def _results(root: Path) -> dict:
    curve = (root / "reports" / "curves" / "unet_loss.csv").read_text().splitlines()[1:]
    return {
        "weights": weights_digest(root / "models" / "diffusion"),
        "loss": [float(line.split(",")[-1]) for line in curve],
        "version": json.loads((root / "reports" / "train.json").read_text())["version"],
    }


def _versions(root: Path) -> list[int]:
    code = (
        "from registry.tracking import client\n"
        "from atelier.config import load_params\n"
        "name = load_params().registry.model_name\n"
        "print(sorted(int(v.version) for v in client().search_model_versions(f\"name='{name}'\")))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _processes_in(root: Path) -> list[int]:
    """Pids of live processes whose working folder is `root` (the stage, torchrun and its ranks)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == root:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A toy project copy after `dvc repro train_diffusion` in one process, and what that run produced."""
    root = copy_repo(tmp_path_factory.mktemp("distributed")).resolve()
    edit_params(root, **TOY)
    dvc.repro("train_diffusion", root=root)
    return {"root": root, "one": _results(root)}


@pytest.mark.slow
def test_killed_two_process_group_resumes_and_registers_one_version(project, monkeypatch):
    """processes: 2. SIGKILL the stage's whole process group (stage and torchrun) once rank 0 has written a checkpoint:
    the ranks die with it and nothing is registered; `dvc repro` then resumes from the checkpoint in two processes,
    finishes, and registers exactly one version."""
    root = project["root"]
    edit_params(root, train_diffusion={"processes": 2})
    checkpoints = root / ".atelier" / "checkpoints" / "train_diffusion"
    victim = _stage(root, **{ckpt.EVERY_ENV: "2"})
    start = time.time()
    while victim.poll() is None and not list(checkpoints.glob("step-*")) and time.time() - start < 300:
        time.sleep(0.005)
    assert victim.poll() is None, "the stage finished before it could be killed: give it more steps"
    os.killpg(victim.pid, signal.SIGKILL)
    out = victim.communicate()[0]
    assert "stages.train_diffusion: training in 2 processes: -m torch.distributed.run --standalone" in out, out
    deadline = time.time() + 30
    while _processes_in(root) and time.time() < deadline:
        time.sleep(0.1)
    assert not _processes_in(root), "a training rank kept running after its launcher was killed"
    saved = sorted(p.name for p in checkpoints.glob("step-*"))
    assert saved and saved[-1] < f"step-{STEPS:07d}", saved
    assert _versions(root) == [1]  # the killed run registered nothing

    monkeypatch.setenv(ckpt.EVERY_ENV, "2")  # for the stage DVC starts
    out = dvc.repro("train_diffusion", root=root)
    assert "training in 2 processes" in out, out
    assert f"train_unet: resuming from step {int(saved[-1][5:])} of {STEPS} (checkpoint " in out, out
    project["two"] = _results(root)
    assert project["two"]["version"] == "2" and _versions(root) == [1, 2]  # rank 0 alone registered
    assert len(project["two"]["loss"]) == STEPS  # rank 0's curve: the global batch's mean loss, every step
    assert not checkpoints.exists()  # cleared once registered
    assert not _processes_in(root)  # no rank outlives the stage


@pytest.mark.slow
def test_two_processes_follow_the_single_process_loss_curve(project):
    """The same global batch and seed in one process and in two: the same samples, so the loss curves differ only by
    the order of float additions, which training amplifies a little each step."""
    one, two = project["one"]["loss"], project["two"]["loss"]
    assert len(one) == len(two) == STEPS
    worst = max(abs(a - b) for a, b in zip(one, two))
    print(f"max |unet_loss(2 processes) - unet_loss(1 process)| over {STEPS} steps: {worst:.3g}")
    assert worst <= LOSS_TOLERANCE, (one, two)
    assert project["two"]["weights"] != project["one"]["weights"]  # two real runs, not one result read twice


@pytest.mark.slow
def test_a_failing_rank_fails_the_stage_naming_it(tmp_path):
    """A rank that raises makes torchrun stop the other and the stage fail with an error naming the rank."""
    script = tmp_path / "failing_rank.py"
    script.write_text(
        "from atelier import distributed\n"
        "if distributed.must_launch(2):\n"
        "    distributed.launch('failing_rank', 2, 'cpu')\n"
        "else:\n"
        "    with distributed.process_group('cpu', 2) as group:\n"
        "        if group.rank == 1:\n"
        "            raise SystemExit('rank 1 gives up')\n"
        "        group.same(0, 'nothing')  # rank 0 waits in a collective for the rank that failed\n"
    )
    env = _env(PYTHONPATH=f"{tmp_path}{os.pathsep}{Path(__file__).resolve().parent.parent}")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    assert (
        "DistributedFailed: failing_rank: training in 2 processes under torchrun failed (rank 1 failed first: "
        "SystemExit: rank 1 gives up; torchrun exit code 1)" in proc.stderr
    ), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 1 gives up" in proc.stdout


def test_a_group_shares_the_global_batch():
    one, two = distributed.Group(), distributed.Group(rank=1, world=2)
    assert one.share(8) == slice(0, 8) and two.share(8) == slice(4, 8)
    assert two.is_main is False and one.is_main
    with pytest.raises(ValueError, match="make batch_size a multiple of processes"):
        distributed.Group(world=3).share(8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_refused():
    assert distributed.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(distributed.DistributedFailed, match="device is cuda but torch sees no GPU"):
        distributed.resolve_device("cuda")
    with pytest.raises(distributed.DistributedFailed, match="device is cuda but torch sees no GPU"):
        distributed.launch("stages.train_diffusion", 2, "cuda")  # refused before anything is launched
