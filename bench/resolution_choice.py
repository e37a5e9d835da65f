"""32 against 64 px at the same CPU time (issue 28, item 5), on the demo and on a second collection (the scenes of
tests/scenes.py: free-text captions, mixed sizes and formats, no palette/style grammar).

For each collection, in a scratch copy of the project, through the real `dvc repro` up to `evaluate`:
1. 32 px with params.yaml's training steps: the evaluation, its sample grid and the training seconds;
2. a short probe at 64 px (PROBE_STEPS steps of the autoencoder and the UNet) for their seconds per step;
3. 64 px with the steps that spend the 32 px run's seconds on each of the two (the CLIPs keep their steps: they are
   the judges, trained at each resolution the same way).

Reported for each run: the held-out prompts' top-1 retrieval of the generations and of the real images (with chance),
CLIPScore against the real images', CMMD against its real-vs-real baseline, colour agreement of generations and real
images, and the training seconds. The sample grids are copied to bench/figures/ for the README. Takes about 40 minutes
on 2 cores (ATELIER_BENCH_SCENES images in the second collection, default 600)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from atelier import paths
from tests.workspace import copy_project, edit_params

PROBE_STEPS = 40
SCENES = int(os.environ.get("ATELIER_BENCH_SCENES", 600))
FIGURES = paths.ROOT / "bench" / "figures"


def _repro(root: Path, target: str) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", target], cwd=root, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro {target} in {root} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def _seconds(root: Path) -> dict:
    t = root / "reports" / "timings"
    return {
        "autoencoder": json.loads((t / "train_autoencoder.json").read_text())["seconds"],
        "unet": json.loads((t / "train_diffusion.json").read_text())["unet_seconds"],
    }


def _figures(root: Path) -> dict:
    e = json.loads((root / "reports" / "eval.json").read_text())
    h = e["headline"]
    keep = (
        "retrieval_top1",
        "real_retrieval_top1",
        "chance_top1",
        "clip_score",
        "real_clip_score",
        "cmmd",
        "cmmd_baseline",
        "colour_agreement",
        "real_colour_agreement",
    )
    return {k: h.get(k) for k in keep}


def _steps(root: Path) -> dict:
    p = yaml.safe_load((root / "params.yaml").read_text())
    return {"autoencoder": p["train_autoencoder"]["steps"], "unet": p["train_diffusion"]["steps"]}


def _run(root: Path, label: str) -> dict:
    _repro(root, "evaluate")
    FIGURES.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "reports" / "samples.png", FIGURES / f"samples-{label}.png")
    found = {"figures": _figures(root), "seconds": _seconds(root), "steps": _steps(root)}
    print(f"{label}: {json.dumps(found)}", flush=True)
    return found


def collection(tmp: Path, name: str) -> dict:
    root = copy_project(tmp / name)
    if name == "scenes":
        from tests.scenes import write_scenes

        write_scenes(root / "data/sources/scenes", n=SCENES, seed=0)
        added = subprocess.run(
            [sys.executable, "-m", "app.cli", "sources", "add", "scenes", "data/sources/scenes"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        if added.returncode != 0:
            raise RuntimeError(added.stderr)
        sources = yaml.safe_load((root / "params.yaml").read_text())["ingest"]["sources"]
        edit_params(root, ingest={"sources": [s for s in sources if s["name"] != "demo"]})
    at32 = _run(root, f"{name}-32px")
    steps32 = at32["steps"]
    edit_params(
        root,
        clean={"resolution": 64, "min_size": 64},
        train_autoencoder={"steps": PROBE_STEPS},
        train_diffusion={"steps": PROBE_STEPS, "warmup_steps": 10},
    )
    _repro(root, "train_diffusion")
    probe = _seconds(root)
    steps64 = {k: max(PROBE_STEPS, round(at32["seconds"][k] / (probe[k] / PROBE_STEPS))) for k in probe}
    print(f"{name} probe at 64 px: {probe} for {PROBE_STEPS} steps each -> {steps64} (32 px: {steps32})", flush=True)
    edit_params(
        root,
        train_autoencoder={"steps": steps64["autoencoder"]},
        train_diffusion={"steps": steps64["unet"], "warmup_steps": min(100, steps64["unet"] // 10)},
    )
    at64 = _run(root, f"{name}-64px")
    return {"32": at32, "64": at64}


def main() -> dict:
    names = os.environ.get("ATELIER_BENCH_COLLECTIONS", "demo,scenes").split(",")
    with tempfile.TemporaryDirectory(prefix="atelier-resolution-") as tmp:
        return {name: collection(Path(tmp), name) for name in names}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
