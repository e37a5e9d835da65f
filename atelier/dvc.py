"""Running DVC and reading what it recorded (dvc.lock). DVC decides what is stale; we never second-guess it."""

from __future__ import annotations

import json
import os
import select
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


STALL_S = 30 * 60  # a stage showing no sign of work for this long is stopped (ATELIER_STAGE_STALL_S overrides)


class StageStalled(RuntimeError):
    """A stage showed no sign of work (output, checkpoint) for longer than its stall limit, and was stopped."""


def stall_limit() -> float:
    """Seconds without any sign of progress after which a stage is stopped: ATELIER_STAGE_STALL_S, else STALL_S."""
    raw = os.environ.get("ATELIER_STAGE_STALL_S")
    if raw is None:
        return STALL_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"ATELIER_STAGE_STALL_S={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"ATELIER_STAGE_STALL_S={raw!r} must be positive")
    return value


def repro(
    stage: str | None = None,
    root: Path | None = None,
    single: bool = False,
    stall_s: float | None = None,
    force: bool = False,
) -> str:
    """Run `dvc repro [stage]` in `root`; return its output, raise StageFailed naming the stage on failure.

    No stage is stopped for being slow: only for showing no sign of work (no output, no checkpoint written under
    root's .atelier/checkpoints) for `stall_s` seconds (default stall_limit()), raising StageStalled. DVC runs in its
    own process group; if we are interrupted or it stalls, the whole group (DVC and the stage's Python process) is
    stopped, so no orphaned stage keeps writing."""
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
    stall_s = stall_limit() if stall_s is None else stall_s
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output = _collect(proc, echo=watching, stall_s=stall_s, checkpoints=Path(root) / ".atelier" / "checkpoints")
    except BaseException:
        _stop_group(proc)
        raise
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise StageFailed(f"stage '{stage or 'pipeline'}' failed (dvc repro exited {proc.returncode}):\n{tail}")
    return output


def _collect(proc: subprocess.Popen, echo: bool, stall_s: float, checkpoints: Path) -> str:
    """Read the process's output to the end (echoing it live to a watching terminal); return it as text. Raise
    StageStalled once neither output nor a checkpoint has appeared for `stall_s` seconds."""
    chunks = []
    last_sign, last_checkpoint = time.monotonic(), _newest_mtime(checkpoints)
    fd = proc.stdout.fileno()
    while True:
        ready, _, _ = select.select([fd], [], [], min(5.0, stall_s))
        if ready:
            block = os.read(fd, 4096)
            if not block:
                break
            chunks.append(block)
            last_sign = time.monotonic()
            if echo:
                sys.stderr.buffer.write(block)
                sys.stderr.flush()
            continue
        newest = _newest_mtime(checkpoints)
        if newest != last_checkpoint:
            last_checkpoint, last_sign = newest, time.monotonic()
        if time.monotonic() - last_sign > stall_s:
            raise StageStalled(
                f"{' '.join(proc.args[2:])}: no output and no checkpoint for {stall_s:.0f} s, so it was stopped; "
                "a slow stage that shows progress is never stopped: raise ATELIER_STAGE_STALL_S if its steps are "
                "longer than that"
            )
    proc.wait()
    return b"".join(chunks).decode("utf-8", errors="replace")


def _newest_mtime(folder: Path) -> float:
    """The newest modification time of anything in `folder` (0 when absent): a checkpoint being written."""
    try:
        return max((entry.stat().st_mtime for entry in folder.rglob("*")), default=folder.stat().st_mtime)
    except OSError:
        return 0.0


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
        # libyaml's loader when PyYAML has it: dvc.lock is long, and the pure-Python loader takes a quarter second
        data = yaml.load(lock.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        for stage in (data.get("stages") or {}).values():
            for out in stage.get("outs", []):
                if out.get("path") == rel:
                    return out["md5"]
    raise LookupError(f"{lock}: no md5 recorded for {rel}; run `dvc repro` first")


# Team mode (atelier/team.py): the DVC remote on the team's S3 store. Its address goes to .dvc/config.local (never
# committed); its keys stay in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), where DVC reads them.
REMOTE = "team"
UNPUBLISHED = Path(".atelier") / "unpublished.json"  # under the checkout: a run whose push failed


class PushFailed(RuntimeError):
    """`dvc push` to the team's remote failed; the run is marked unpublished and the next run pushes it."""


def configure_remote(url: str, endpoint: str, root: Path | None = None) -> None:
    """Make `url` (s3://bucket/prefix on the S3 store at `endpoint`) the checkout's default remote, locally."""
    root = root or paths.ROOT
    for args in (
        ["remote", "add", "--local", "--force", "--default", REMOTE, url],
        ["remote", "modify", "--local", REMOTE, "endpointurl", endpoint],
    ):
        _dvc(args, root, "configuring the team's DVC remote")


def push(root: Path | None = None) -> str:
    """`dvc push` every output of dvc.lock to the team's remote. On failure, write the unpublished marker (with the
    reason) and raise PushFailed; on success remove the marker. Returns DVC's output."""
    root = root or paths.ROOT
    marker = root / UNPUBLISHED
    try:
        out = _dvc(["push", "--remote", REMOTE], root, "pushing this run's data and models to the team's remote")
    except RuntimeError as e:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reason": str(e)[-2000:]}) + "\n")
        os.replace(tmp, marker)
        raise PushFailed(
            f"{e}\nThe run finished but is marked unpublished ({marker}); the next run pushes it first, or run "
            "`dvc push` when the S3 store answers again"
        ) from None
    marker.unlink(missing_ok=True)
    return out


def unpublished(root: Path | None = None) -> dict | None:
    """Why the last run's push failed, when it did and no push has succeeded since; else None."""
    marker = (root or paths.ROOT) / UNPUBLISHED
    return json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else None


def pull(root: Path | None = None) -> str:
    """`dvc pull` every output of dvc.lock from the team's remote into the checkout (cache and workspace)."""
    return _dvc(["pull", "--remote", REMOTE], root or paths.ROOT, "pulling the team's data and models")


def _dvc(args: list[str], root: Path, doing: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=_env(), capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{doing}: dvc {' '.join(args[:1])} exited {proc.returncode}:\n{tail}")
    return proc.stdout
