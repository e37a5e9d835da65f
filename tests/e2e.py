"""The end-to-end pipeline of tests/test_end_to_end.py, and the CLI helpers the pipeline tests share: the scenes
collection (tests/scenes.py: free-text captions, mixed sizes, formats and licences) added with `atelier sources add`,
the demo removed from `ingest.sources`, trained at toy size through `dvc repro`, and the CLI run in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from atelier import dvc
from tests.toy import GATE_OPEN
from tests.workspace import copy_project, edit_params

SCENES = 100  # images in the scenes collection (75 of them trainable)
TOY = dict(
    demo={"per_class": 2},
    train_clip={"steps": 30, "batch_size": 32},
    train_autoencoder={"steps": 10, "batch_size": 16},
    train_diffusion={"steps": 10, "batch_size": 16, "warmup_steps": 2},
    evaluate={"per_prompt": 2, "sampling_steps": 2, "guidance": [3.0], "headline_guidance": 3.0},
    promote=GATE_OPEN,
    generate={"prompts": ["a red sailboat on a calm sea at dusk", "a white cottage under a cloudy sky"], "steps": 2},
)


def atelier(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI of the workspace copy in a fresh process."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )


def in_workspace(root: Path, code: str) -> str:
    """Run Python code in the workspace (its own atelier/registry modules and registry store); return stdout."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def build(root: Path) -> Path:
    """A copy of the project in `root` with the scenes collection as its only source, run through `dvc repro`."""
    from tests.scenes import write_scenes

    copy_project(root)
    write_scenes(root / "data/sources/scenes", n=SCENES, seed=0)
    _add_work_with_personal_data(root / "data/sources/scenes")
    added = atelier(root, "sources", "add", "scenes", "data/sources/scenes")
    assert added.returncode == 0, added.stderr
    edit_params(root, **TOY)
    edit_params(
        root,
        ingest={
            "sources": [
                s
                for s in yaml.safe_load((root / "params.yaml").read_text())["ingest"]["sources"]
                if s["name"] != "demo"
            ]
        },
    )
    dvc.repro(root=root)
    return root


def _add_work_with_personal_data(folder: Path) -> None:
    """One more CC BY work whose title holds an e-mail address and whose caption a phone number (tests.test_faces)."""
    import io
    import random

    from atelier.demo import STYLES, draw_artwork
    from tests.test_faces import EMAIL, PHONE

    buf = io.BytesIO()
    draw_artwork(STYLES[2], "green", 64, random.Random(9)).save(buf, "PNG")
    (folder / "contact.png").write_bytes(buf.getvalue())
    with (folder / "metadata.jsonl").open("a", encoding="utf-8") as out:
        out.write(
            json.dumps(
                {
                    "file_name": "contact.png",
                    "title": f"Harbour study (contact {EMAIL})",
                    "caption": f"a green harbour at dawn, call {PHONE}",
                    "creator": "Ada Moreno",
                    "license": "CC-BY-4.0",
                }
            )
            + "\n"
        )
