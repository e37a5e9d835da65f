"""dvc.lock records which code and params made the data and models, so it must match the tree: every dependency that
is a source file (code, policy, schema: anything git tracks or would track) has the md5 DVC computes for it now, and
every params entry equals params.yaml's value. DVC's own `dvc status` does the hashing and the comparison, in a copy
of the source files (no data, no DVC cache: as a fresh clone sees it), so a pipeline running in the workspace does
not matter. Also: a saved model carries no path of the workspace that wrote it, so its hash in dvc.lock does not
depend on where the project lives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from atelier import paths
from tests.workspace import copy_project, edit_params

FIX = "run `make run` (or `dvc repro`) and commit dvc.lock"
DEP_CHANGE = {
    "modified": "its md5 in dvc.lock is not the tree's",
    "new": "dvc.lock has no md5 for it",
    "deleted": "dvc.yaml lists it but the tree has no such file",
}
PARAM_CHANGE = {
    "modified": "dvc.lock holds another value than params.yaml",
    "new": "not in dvc.lock",
    "deleted": "dvc.yaml lists it but params.yaml has no such key",
}


def source_files(root: Path) -> set[str]:
    """The files git tracks or would track under `root` (not ignored ones: data, models, reports, caches)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return set(filter(None, out.split("\0")))


def _is_source(path: str, sources: set[str]) -> bool:
    """A source file, or a folder holding source files (atelier/sources)."""
    return path in sources or any(s.startswith(path.rstrip("/") + "/") for s in sources)


def stale_lock_entries(root: Path, site_cache: Path) -> list[str]:
    """One line per stale entry of `root`/dvc.lock: a source dependency whose md5 differs from the tree's, a params
    value that differs from params.yaml's, a changed command, a stage missing from the lock or no longer in dvc.yaml.
    Data and other stages' outputs are not checked (they are absent from a fresh clone)."""
    env = {**os.environ, "DVC_SITE_CACHE_DIR": str(site_cache), "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=root, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"`dvc status --json` failed in {root} (exit {result.returncode}):\n{result.stderr}")
    status = json.loads(result.stdout or "{}")
    sources = source_files(root)
    stale = []
    for stage, entries in status.items():
        for entry in entries:
            if entry == "always changed":  # promote re-reads the registry on every run; not a stale lock
                continue
            if isinstance(entry, str):  # "changed command"
                stale.append(f"stage '{stage}': {entry} (dvc.yaml's cmd differs from dvc.lock's)")
                continue
            for path, change in entry.get("changed deps", {}).items():
                if not _is_source(path, sources):
                    continue  # data or another stage's output: absent in a fresh clone
                if isinstance(change, dict):  # params: {key: modified | new | deleted}
                    stale += [
                        f"stage '{stage}': {path} {key} ({how}: {PARAM_CHANGE.get(how, 'differs')})"
                        for key, how in change.items()
                    ]
                else:
                    stale.append(f"stage '{stage}': {path} ({change}: {DEP_CHANGE.get(change, 'differs')})")
    stages = (yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages") or {}
    lock_file = root / "dvc.lock"
    locked = (
        (yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}).get("stages") or {} if lock_file.is_file() else {}
    )
    stale += [f"stage '{name}': in dvc.lock but no longer in dvc.yaml" for name in sorted(set(locked) - set(stages))]
    return stale


def test_the_committed_lock_matches_the_code_and_params(tmp_path):
    copy = copy_project(tmp_path / "tree")  # the source files as they are now, without data, models or caches
    shutil.copy2(paths.ROOT / "dvc.lock", copy / "dvc.lock")
    stale = stale_lock_entries(copy, tmp_path / "dvc-site")
    assert not stale, (
        f"{paths.ROOT / 'dvc.lock'} does not match the code and params ({len(stale)} stale "
        f"entries); {FIX}:\n  " + "\n  ".join(stale)
    )


# ------------------------------------------------------------------------------------------ the check itself can fail


def test_an_edit_to_the_project_s_code_or_params_is_caught(tmp_path):
    copy = copy_project(tmp_path / "tree")
    shutil.copy2(paths.ROOT / "dvc.lock", copy / "dvc.lock")
    edit_params(copy, demo={"seed": 8})
    with (copy / "stages" / "demo.py").open("a") as f:
        f.write("# edited\n")
    stale = stale_lock_entries(copy, tmp_path / "dvc-site")
    assert any(line.startswith("stage 'demo': params.yaml demo (modified") for line in stale), stale
    assert any(line.startswith("stage 'demo': stages/demo.py (modified") for line in stale), stale


STAGE_CODE = """import pathlib, yaml
n = yaml.safe_load(open("params.yaml"))["make"]["size"]
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/result.txt").write_text(pathlib.Path("data/input.txt").read_text() * n)
"""


def _mini_project(root: Path, dvcignore: str = "") -> Path:
    """A one-stage DVC project (code, params, git-ignored data and output), run once so its lock is fresh."""
    files = {
        ".dvcignore": dvcignore,
        ".gitignore": "/data/\n/out/\n",
        ".dvc/config": "[core]\n    analytics = false\n",
        ".dvc/.gitignore": "/config.local\n/tmp\n/cache\n",
        "make.py": STAGE_CODE,
        "lib/helper.py": "X = 1\n",
        "params.yaml": "make:\n  size: 2\n  label: a\n",
        "data/input.txt": "x\n",
        "dvc.yaml": yaml.safe_dump(
            {
                "stages": {
                    "make": {
                        "cmd": f"{sys.executable} make.py",
                        "deps": ["make.py", "lib", "data/input.txt"],
                        "params": ["make.size"],
                        "outs": ["out/result.txt"],
                    }
                }
            }
        ),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    env = {**os.environ, "DVC_SITE_CACHE_DIR": str(root.parent / "dvc-site"), "DVC_NO_ANALYTICS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=root, env=env, check=True)
    return root


def test_the_check_passes_a_fresh_lock_and_names_each_stale_entry(tmp_path):
    root = _mini_project(tmp_path / "mini")
    site = tmp_path / "dvc-site"
    shutil.rmtree(root / "data")  # data and outputs are absent in a fresh clone: not a stale lock
    shutil.rmtree(root / "out")
    assert stale_lock_entries(root, site) == []

    (root / "make.py").write_text(STAGE_CODE + "# edited\n")
    (root / "lib" / "helper.py").write_text("X = 2\n")
    (root / "params.yaml").write_text("make:\n  size: 3\n  label: b\n")  # label: no stage reads it
    stale = stale_lock_entries(root, site)
    assert len(stale) == 3, stale
    assert any(line.startswith("stage 'make': make.py (modified") for line in stale), stale
    assert any(line.startswith("stage 'make': lib (modified") for line in stale), stale
    assert any(line.startswith("stage 'make': params.yaml make.size (modified") for line in stale), stale

    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    spec["stages"]["make"]["cmd"] += " --again"
    spec["stages"]["other"] = {"cmd": "true", "deps": ["make.py"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec))
    stale = stale_lock_entries(root, site)
    assert any("stage 'make': changed command" in line for line in stale), stale
    assert any(line.startswith("stage 'other': make.py") for line in stale), stale  # not in the lock at all

    del spec["stages"]["make"]
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec))
    assert "stage 'make': in dvc.lock but no longer in dvc.yaml" in stale_lock_entries(root, site)


# -------------------------------------------------------------------------------- saved models carry no local path


def test_a_saved_pipeline_is_the_same_bytes_wherever_its_parts_were_loaded_from(tmp_path):
    from diffusers import AutoencoderKL

    from atelier.models import clip as C
    from atelier.models import latent_diffusion as L
    from tests.toy import TINY_CLIP, TINY_DIFFUSION

    clip_p = TINY_CLIP.model_copy(update={"steps": 1})
    diff_p = TINY_DIFFUSION.model_copy(update={"steps": 1})
    clip = C.build_clip(clip_p, 32)
    cfg = C.model_config(clip_p, 32)
    torch.manual_seed(0)
    vae = L.build_autoencoder(32)
    unet = L.build_unet(cfg["text_cfg"]["width"], cfg["embed_dim"], L.latent_size(vae.config))
    saved = {}
    for place in ("one", "two"):  # as train_diffusion does: the autoencoder is loaded from where it was saved
        vae.save_pretrained(tmp_path / place / "autoencoder", safe_serialization=True)
        loaded = AutoencoderKL.from_pretrained(tmp_path / place / "autoencoder", use_safetensors=True)
        pipeline = L.LatentDiffusionPipeline(
            loaded,
            unet,
            L.build_scheduler(diff_p),
            clip,
            C.build_tokenizer(16),
            {"latent_scale": 1.0, "pooled_scale": 8.0, "resolution": 32, "clip_model_cfg": cfg},
        )
        folder = tmp_path / place / "diffusion"
        pipeline.save_pretrained(folder)
        saved[place] = {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}
        for name, data in saved[place].items():
            assert str(tmp_path).encode() not in data, f"{name} holds the path it was saved from or loaded from"
    assert saved["one"].keys() == saved["two"].keys()
    assert [name for name in saved["one"] if saved["one"][name] != saved["two"][name]] == []


def test_bytecode_caches_do_not_change_a_folder_dependency_s_hash(tmp_path):
    """atelier/sources is a folder dependency; Python writes __pycache__ into it when a stage imports it (unless
    PYTHONDONTWRITEBYTECODE is set), so without .dvcignore leaving it out, a user's `make run` records another md5
    for it than a clean checkout's, and the lock would not compare between machines."""
    root = _mini_project(tmp_path / "mini", dvcignore=(paths.ROOT / ".dvcignore").read_text(encoding="utf-8"))
    (root / "lib" / "__pycache__").mkdir()
    (root / "lib" / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"\x00bytecode")
    stale = stale_lock_entries(root, tmp_path / "dvc-site")
    assert stale == [], (
        f"a __pycache__ folder changes the md5 of a folder dependency: add `__pycache__/` and "
        f"`*.pyc` to {paths.ROOT / '.dvcignore'}, then {FIX}:\n  " + "\n  ".join(stale)
    )
