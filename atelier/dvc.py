"""Running DVC and reading what it recorded (dvc.lock). DVC decides what is stale; we never second-guess it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from atelier import paths
from atelier.progress import FORCE, progress_enabled


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message names the stage and ends with DVC's own output."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # stage commands run this environment's python
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def repro(
    stage: str | None = None,
    root: Path | None = None,
    single: bool = False,
    timeout: float | None = None,
    force: bool = False,
) -> str:
    """Run `dvc repro [stage]` in `root`; return its output, raise StageFailed naming the stage on failure.

    DVC runs in its own process group; if we are interrupted or time out, the whole group (DVC and the stage's
    Python process) is stopped, so no orphaned stage keeps writing."""
    root = root or paths.ROOT
    cmd = [sys.executable, "-m", "dvc", "repro"]
    if single:
        cmd.append("--single-item")
    if force:
        cmd.append("--force")
    if stage:
        cmd.append(stage)
    watching = progress_enabled()
    env = _env() | {FORCE: "1" if watching else "0"}
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output = _collect(proc, echo=watching, timeout=timeout)
    except BaseException:
        _stop_group(proc)
        raise
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise StageFailed(f"stage '{stage or 'pipeline'}' failed (dvc repro exited {proc.returncode}):\n{tail}")
    return output


def _collect(proc: subprocess.Popen, echo: bool, timeout: float | None) -> str:
    """Read the process's output to the end (echoing it live to a watching terminal); return it as text."""
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks = []
    while True:
        if deadline is not None and time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        block = os.read(proc.stdout.fileno(), 4096)
        if not block:
            break
        chunks.append(block)
        if echo:
            sys.stderr.buffer.write(block)
            sys.stderr.flush()
    proc.wait()
    return b"".join(chunks).decode("utf-8", errors="replace")


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited within 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


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
