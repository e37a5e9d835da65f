"""The code version recorded in runs and manifests: the git commit, marked dirty when the code has changes.

Dirtiness is judged on the code, params and policy, not on what the pipeline itself writes: dvc.lock and every output
that dvc.yaml or dvc.lock lists (`outs`, `metrics`, `plots`) are left out, so a fresh clone after `make run` signs the
plain commit."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml

from atelier import paths

_cached: tuple[float, str] | None = None
CACHE_S = 10.0  # a loop making many artworks asks git once per 10 s, not once per artwork
LOCK = "dvc.lock"


def code_version() -> str:
    """`<commit>` or `<commit>+dirty` for the project's checkout; `atelier-<package version>` without one."""
    global _cached
    if _cached is not None and time.monotonic() - _cached[0] < CACHE_S:
        return _cached[1]
    _cached = (time.monotonic(), code_version_of(paths.ROOT))
    return _cached[1]


def code_version_of(root: Path) -> str:
    """`<commit>` of the git checkout at `root`, plus `+dirty` when a tracked file other than a pipeline output
    differs from it; `atelier-<package version>` when `root` is not a git checkout."""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        changed = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=no", "--no-renames")
    except (subprocess.CalledProcessError, FileNotFoundError):
        from importlib.metadata import version

        return f"atelier-{version('atelier')}"
    outputs = pipeline_outputs(root)
    code_changes = [entry[3:] for entry in changed.split("\0") if entry and not _is_output(entry[3:], outputs)]
    return commit + ("+dirty" if code_changes else "")


def pipeline_outputs(root: Path) -> set[str]:
    """dvc.lock and every path listed as `outs`, `metrics` or `plots` of a stage in dvc.yaml or dvc.lock under
    `root` (relative paths, as git prints them)."""
    outputs = {LOCK}
    for name in ("dvc.yaml", LOCK):
        file = root / name
        if not file.is_file():
            continue
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            data = f"not valid YAML ({exc})"
        if not isinstance(data, dict):
            raise ValueError(
                f"{file}: not a DVC file ({str(data)[:200]}), so the pipeline's outputs, which the code "
                f"version's dirty check leaves out, cannot be read; fix {name} or restore it with git"
            )
        stages = data.get("stages") or {}
        for stage in stages.values():
            for key in ("outs", "metrics", "plots"):
                for entry in stage.get(key) or []:
                    outputs.add(_entry_path(entry))
    return {path.rstrip("/") for path in outputs}


def _entry_path(entry: str | dict) -> str:
    """The path of one `outs`/`metrics`/`plots` entry: `path`, `{path: options}` (dvc.yaml) or `{path: ..., md5:
    ...}` (dvc.lock)."""
    if isinstance(entry, str):
        return entry
    if "path" in entry:
        return str(entry["path"])
    return str(next(iter(entry)))


def _is_output(path: str, outputs: set[str]) -> bool:
    """Whether `path` is a pipeline output or lies inside an output directory."""
    return any(path == out or path.startswith(out + "/") for out in outputs)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout
