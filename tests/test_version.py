"""The code version is dirty for edits to code, params and policy, not for what the pipeline itself writes (dvc.lock
and the outputs dvc.yaml lists). Real git in a temporary repository, with the project's own dvc.yaml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from atelier import paths
from atelier.version import code_version_of, pipeline_outputs


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _repo(tmp_path: Path) -> Path:
    """A committed repository with the project's dvc.yaml, a dvc.lock, code, params and policy, and (as a workspace
    might) git-tracked copies of a report and a curve that dvc.yaml lists as outputs."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy2(paths.ROOT / "dvc.yaml", root / "dvc.yaml")
    files = {
        "dvc.lock": "schema: '2.0'\nstages: {}\n",
        "params.yaml": "demo:\n  seed: 7\n",
        "stages/demo.py": "print('demo')\n",
        "policy/opt_out.csv": "name\n",
        "reports/eval.json": "{}\n",
        "reports/curves/clip.csv": "step,clip_loss\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "first")
    return root


def test_outputs_are_read_from_dvc_yaml_and_dvc_lock(tmp_path):
    root = _repo(tmp_path)
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  old:\n    cmd: x\n    outs:\n    - path: reports/old.json\n      md5: 0\n"
    )
    outputs = pipeline_outputs(root)
    assert {
        "dvc.lock",
        "data/raw",
        "models/diffusion",
        "reports/eval.json",
        "reports/curves/clip.csv",
        "reports/train.json",
        "reports/old.json",
    } <= outputs
    assert not outputs & {"params.yaml", "stages/demo.py", "policy/opt_out.csv", "dvc.yaml"}


def test_a_run_that_rewrites_the_lock_and_outputs_is_not_dirty(tmp_path):
    root = _repo(tmp_path)
    commit = _git(root, "rev-parse", "HEAD").strip()
    assert code_version_of(root) == commit
    (root / "dvc.lock").write_text("schema: '2.0'\nstages:\n  demo:\n    cmd: python -m stages.demo\n")
    (root / "reports/eval.json").write_text('{"clip_score": 0.5}\n')
    (root / "reports/curves/clip.csv").unlink()
    _git(root, "add", "reports/eval.json")  # staged output changes do not count either
    assert code_version_of(root) == commit


def test_code_params_and_policy_edits_are_dirty(tmp_path):
    root = _repo(tmp_path)
    commit = _git(root, "rev-parse", "HEAD").strip()
    for rel, text in (
        ("stages/demo.py", "print('changed')\n"),
        ("params.yaml", "demo:\n  seed: 8\n"),
        ("policy/opt_out.csv", "name\nSomeone\n"),
        ("dvc.yaml", "stages: {}\n"),
    ):
        before = (root / rel).read_text()
        (root / rel).write_text(text)
        (root / "dvc.lock").write_text("schema: '2.0'\nstages: {demo: {cmd: rewritten}}\n")  # the run's own change
        assert code_version_of(root) == commit + "+dirty", rel
        (root / rel).write_text(before)
        _git(root, "checkout", "-q", "--", "dvc.lock")
        assert code_version_of(root) == commit, rel


def test_a_deleted_code_file_is_dirty_and_untracked_files_are_not(tmp_path):
    root = _repo(tmp_path)
    commit = _git(root, "rev-parse", "HEAD").strip()
    (root / "scratch.txt").write_text("notes\n")
    assert code_version_of(root) == commit
    (root / "stages/demo.py").unlink()
    assert code_version_of(root) == commit + "+dirty"


def test_a_lock_that_is_not_a_dvc_file_is_an_error_naming_it(tmp_path):
    root = _repo(tmp_path)
    (root / "dvc.lock").write_text("half written\n")
    with pytest.raises(ValueError, match=r"dvc\.lock: not a DVC file .* fix dvc\.lock or restore it with git"):
        code_version_of(root)


def test_outside_a_checkout_the_package_version(tmp_path):
    assert code_version_of(tmp_path).startswith("atelier-")
