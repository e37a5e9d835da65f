"""Running DVC and reading what it recorded (dvc.lock). DVC decides what is stale; we never second-guess it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from atelier import paths


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message names the stage and ends with DVC's own output."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # stage commands run this environment's python
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def repro(stage: str | None = None, root: Path | None = None, single: bool = False) -> str:
    """Run `dvc repro [stage]` in `root`; return its output, raise StageFailed naming the stage on failure."""
    root = root or paths.ROOT
    cmd = [sys.executable, "-m", "dvc", "repro"]
    if single:
        cmd.append("--single-item")
    if stage:
        cmd.append(stage)
    proc = subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise StageFailed(f"stage '{stage or 'pipeline'}' failed (dvc repro exited {proc.returncode}):\n{tail}")
    return output


def lock_md5(out_path: Path, root: Path | None = None) -> str:
    """The md5 that dvc.lock records for the output at `out_path`; raise if it is not recorded yet."""
    root = root or paths.ROOT
    lock = root / "dvc.lock"
    rel = str(Path(out_path).resolve().relative_to(root.resolve()))
    if lock.exists():
        data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
        for stage in (data.get("stages") or {}).values():
            for out in stage.get("outs", []):
                if out.get("path") == rel:
                    return out["md5"]
    raise LookupError(f"{lock}: no md5 recorded for {rel}; run `dvc repro` first")
