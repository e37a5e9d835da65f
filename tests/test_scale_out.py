"""Ingest and clean at scale: the same output on a local Dask cluster as on the process pool and in one process,
and incremental runs that touch only what changed. Real stage processes in a copy of the project."""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from atelier.config import load_params
from atelier.rawstore import read_pack
from stages.clean import clean_records
from tests.conftest import copy_repo, edit_params


def stage(root: Path, name: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"stages.{name}"], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def snapshot(root: Path) -> dict:
    """Everything clean wrote, as comparable values: the tables and a digest of every image."""
    clean = root / "data/clean"
    return {
        "records": pq.read_table(clean / "records.parquet").to_pylist(),  # nulls as None (NaN != NaN)
        "rejects": pq.read_table(clean / "rejects.parquet").to_pylist(),
        "packs": sorted(p.name for p in (clean / "packs").iterdir()),
        "images": {
            rid: hashlib.sha256(png).hexdigest()
            for p in sorted((clean / "packs").iterdir())
            for rid, png in read_pack(p).items()
        },
    }


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    root = copy_repo(tmp_path_factory.mktemp("scale") / "ws")
    edit_params(root, demo={"per_class": 2}, engine={"chunk_size": 16})
    stage(root, "demo")
    stage(root, "ingest")
    return root


def test_clean_on_a_dask_cluster_equals_the_process_pool_and_one_process(ingested):
    distributed = pytest.importorskip("distributed")
    outputs = {}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        for name, engine in [
            ("dask", {"dask_scheduler": cluster.scheduler_address}),
            ("pool", {"dask_scheduler": None, "workers": 2}),
            ("inline", {"dask_scheduler": None, "workers": 1}),
        ]:
            shutil.rmtree(ingested / "data/clean", ignore_errors=True)  # a full run each time, not an incremental one
            edit_params(ingested, engine=engine)
            out = stage(ingested, "clean")
            assert ("dask tcp://" in out) == (name == "dask"), out
            outputs[name] = snapshot(ingested)
    assert outputs["dask"] == outputs["pool"] == outputs["inline"]
    assert len(outputs["dask"]["records"]) > 50 and len(outputs["dask"]["rejects"]) > 10

    # ...and the streaming stage agrees with the in-memory reference implementation
    raw = pd.read_parquet(ingested / "data/raw/records.parquet")
    p = load_params(ingested / "params.yaml").clean
    ref_clean, ref_rejects = clean_records(raw, lambda r: read_pack(ingested / r["raw_pack"])[r["record_id"]], p)
    got = outputs["pool"]
    assert [r["record_id"] for r in got["records"]] == ref_clean["record_id"].tolist()
    assert [(r["source_uri"], r["reason"], r["detail"]) for r in got["rejects"]] == list(
        zip(ref_rejects["source_uri"], ref_rejects["reason"], ref_rejects["detail"])
    )


def _add_images(source: Path, n: int) -> list[str]:
    names = []
    with (source / "metadata.jsonl").open("a") as fh:
        for i in range(n):
            name = f"added_{i}.png"
            rng = random.Random(i)  # random blocks: distinct pictures, never near duplicates of each other
            Image.frombytes("RGB", (8, 8), bytes(rng.randrange(256) for _ in range(192))).resize(
                (64, 64), Image.NEAREST
            ).save(source / name)
            fh.write(
                json.dumps(
                    {
                        "file_name": name,
                        "title": f"Added {i}",
                        "creator": "New Artist",
                        "caption": "a red stripes composition",
                        "license": "CC0-1.0",
                    }
                )
                + "\n"
            )
            names.append(name)
    return names


def test_incremental_runs_process_only_what_changed(tmp_path):
    root = copy_repo(tmp_path / "ws")
    edit_params(root, demo={"per_class": 2})
    stage(root, "demo")
    first = stage(root, "ingest") + stage(root, "clean")
    assert "0 unchanged since the last run" in first and "0 decodes reused" in first

    again = stage(root, "ingest") + stage(root, "clean")
    reused = int(re.search(r"(\d+) unchanged since the last run", again).group(1))
    assert reused == (pd.read_parquet(root / "data/raw/records.parquet")["ingest_error"].isna()).sum() > 50
    decodes_reused = int(re.search(r"(\d+) decodes reused", again).group(1))
    assert decodes_reused > 50
    before = snapshot(root)

    source = root / "data/sources/demo"
    added = _add_images(source, 3)
    removed = next(r for r in before["records"] if r["source"] == "demo")
    lines = (source / "metadata.jsonl").read_text().splitlines()
    (source / "metadata.jsonl").write_text(
        "\n".join(line for line in lines if f'"{removed["source_uri"]}"' not in line) + "\n"
    )
    third = stage(root, "ingest") + stage(root, "clean")
    assert f"{reused - 1} unchanged since the last run" in third
    assert f"{decodes_reused - 1} decodes reused" in third  # the 3 new images were decoded, nothing else
    stored = set()
    for pack in (root / "data/raw/packs").iterdir():
        stored |= set(read_pack(pack))
    assert removed["record_id"] not in stored  # the dropped image's bytes are gone from the raw store
    incremental = snapshot(root)
    assert {r["source_uri"] for r in incremental["records"]} >= set(added)
    assert removed["source_uri"] not in {r["source_uri"] for r in incremental["records"]}

    # the incremental result equals a run from scratch on the same sources
    shutil.rmtree(root / "data/raw")
    shutil.rmtree(root / "data/clean")
    stage(root, "ingest")
    stage(root, "clean")
    assert snapshot(root) == incremental


def test_an_unchanged_metadata_line_does_not_hide_a_changed_file(tmp_path):
    """Ingest skips a chunk whose metadata lines are as before only when every file they name is the same file
    (inode, size, mtime): an image rewritten in place under the same name is read again."""
    root = copy_repo(tmp_path / "ws")
    edit_params(root, demo={"per_class": 2}, engine={"chunk_size": 16})
    stage(root, "demo")
    stage(root, "ingest")
    before = pd.read_parquet(root / "data/raw/records.parquet")
    again = stage(root, "ingest")
    assert f"{before['ingest_error'].isna().sum()} unchanged since the last run" in again
    row = before[before["ingest_error"].isna()].iloc[len(before) // 2]
    image = root / "data/sources/demo" / row["source_uri"]
    Image.new("RGB", (64, 64), (1, 2, 3)).save(image, format=Image.open(image).format)  # same name, new content
    stage(root, "ingest")
    after = pd.read_parquet(root / "data/raw/records.parquet")
    changed = after[after["source_uri"] == row["source_uri"]].iloc[0]
    assert changed["record_id"] == hashlib.sha256(image.read_bytes()).hexdigest() != row["record_id"]
    others = after[after["source_uri"] != row["source_uri"]]
    assert others["record_id"].tolist() == before[before["source_uri"] != row["source_uri"]]["record_id"].tolist()


def test_clip_embedding_on_a_dask_cluster_equals_local_threads_and_one_thread(ingested, monkeypatch):
    """The training-set embedding (evaluate, generate) runs its chunks on the engine: the same bits everywhere."""
    distributed = pytest.importorskip("distributed")
    import torch

    from atelier import embedding
    from atelier.config import EngineParams
    from atelier.dataset import load_images
    from atelier.models import clip as C
    from tests.toy import TINY_CLIP

    shutil.rmtree(ingested / "data/clean", ignore_errors=True)
    edit_params(ingested, engine={"dask_scheduler": None, "workers": 2})
    stage(ingested, "clean")
    records = pd.read_parquet(ingested / "data/clean/records.parquet").head(60)
    clean_path = records["clean_path"].map(lambda p: str(ingested / p))  # the workers read packs by path
    records = records.assign(clean_path=clean_path)
    p = TINY_CLIP.model_copy(update={"steps": 2})
    images = load_images(records)
    model = C.train_clip(images, list(records["caption"]), p)
    C.save_clip_bundle(model, p, ingested / "clip")
    monkeypatch.setattr(embedding, "CHUNK_RECORDS", 16)  # four chunks
    got = {}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        for name, engine in [
            ("dask", EngineParams(dask_scheduler=cluster.scheduler_address)),
            ("threads", EngineParams(workers=2)),
            ("inline", EngineParams(workers=1)),
        ]:
            got[name] = embedding.embed_records(ingested / "clip", records, engine)
    assert got["dask"].shape == (60, 16)
    assert torch.equal(got["dask"], got["threads"]) and torch.equal(got["threads"], got["inline"])
    assert torch.allclose(got["inline"], C.encode_images(model, images), atol=1e-5)  # what encode_images gives
