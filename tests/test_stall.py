"""A stage is stopped when it stalls, never for being slow (issue 27, item 6): `dvc repro` of a stage that keeps
printing runs past the stall limit to the end; one that shows no sign of work for the limit is stopped, with a
message saying how to raise it."""

import subprocess
import sys

import pytest
import yaml

from atelier import dvc


def project(tmp_path, cmd: str):
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"work": {"cmd": cmd, "outs": ["out.txt"]}}}))
    return tmp_path


def test_a_slow_stage_that_shows_progress_is_never_stopped(tmp_path):
    code = "import time\nfor i in range(10):\n    print(i, flush=True)\n    time.sleep(0.5)\nopen('out.txt', 'w')"
    (tmp_path / "slow.py").write_text(code)
    root = project(tmp_path, f"{sys.executable} slow.py")
    dvc.repro("work", root=root, stall_s=4)  # 5 s of work, no silence over 0.5 s, a margin for a busy machine
    assert (root / "out.txt").exists()


def test_a_stage_writing_checkpoints_is_progressing(tmp_path):
    code = (
        "import pathlib, time\nd = pathlib.Path('.atelier/checkpoints/work'); d.mkdir(parents=True, exist_ok=True)\n"
        "for i in range(10):\n    (d / f'step-{i}').write_text(str(i)); time.sleep(0.5)\n"
        "open('out.txt', 'w').write('done')"
    )
    (tmp_path / "quiet.py").write_text(code)
    root = project(tmp_path, f"{sys.executable} quiet.py")
    dvc.repro("work", root=root, stall_s=4)
    assert (root / "out.txt").read_text() == "done"


def test_a_stalled_stage_is_stopped_with_what_to_do(tmp_path, monkeypatch):
    root = project(tmp_path, f"{sys.executable} -c \"import time; time.sleep(60); open('out.txt', 'w')\"")
    monkeypatch.setenv("ATELIER_STAGE_STALL_S", "3")
    with pytest.raises(dvc.StageStalled, match="no output and no checkpoint for 3 s.*ATELIER_STAGE_STALL_S"):
        dvc.repro("work", root=root)
    assert not (root / "out.txt").exists()
    monkeypatch.setenv("ATELIER_STAGE_STALL_S", "soon")
    with pytest.raises(ValueError, match="ATELIER_STAGE_STALL_S='soon' is not a number"):
        dvc.stall_limit()
