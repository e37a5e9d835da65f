"""Erasure (issue 18, item 4): `atelier forget` leaves no byte of a record in data/, the DVC cache, the ingest index
or any report (searched for the image's sha256, a unique caption, the original and the training bytes), keeps a
tombstone that ingest honours (`erased`), and scrubs the ledger while its chain and public log still verify.

The workspace is a copy of the project with a tiny demo source and one private photograph, run through the data
stages with real DVC (`dvc repro license`: no training)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from atelier import dvc, paths
from atelier.declared import add_source
from atelier.erasures import erasure_count, record_digest
from provenance import keys, ledger, publiclog
from tests.conftest import REPO
from tests.test_ledger import manifest
from tests.test_takedown_image import NAME, works  # noqa: F401 (a fixture)

CAPTION = "zq-unique-caption-7f31c9 a person at a window on Rue Privee"
CREATOR = "Jane Q. Privateperson"


def photograph() -> bytes:
    rng = np.random.default_rng(18)
    image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((96, 96), Image.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def holding(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under data/, .dvc/cache, .atelier and reports/ that holds any needle."""
    found = []
    for top in ("data", ".dvc/cache", ".atelier", "reports"):
        for path in (root / top).rglob("*") if (root / top).exists() else []:
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                found += [f"{path.relative_to(root)} holds needle {i}" for i, n in enumerate(needles) if n in data]
    return found


def forget_cli(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "forget", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(root)} | env,
        timeout=300,
    )


@pytest.fixture
def private(workspace, tmp_path, monkeypatch, empty_store) -> dict:
    """The workspace with a source holding one private photograph (CC0, so it trains), through `dvc repro license`."""
    monkeypatch.setenv("ATELIER_DATA_KEY_DIR", str(tmp_path / "data-key"))
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    folder = workspace / "incoming" / "private"  # outside data/: the source is its owner's, never erased by us
    folder.mkdir(parents=True)
    data = photograph()
    (folder / "window.png").write_bytes(data)
    (folder / "metadata.jsonl").write_text(
        json.dumps(
            {
                "file_name": "window.png",
                "title": "At the window",
                "creator": CREATOR,
                "caption": CAPTION,
                "license": "CC0-1.0",
                "source_url": "https://example.org/zq-private/window",
            }
        )
        + "\n"
    )
    add_source(workspace, "private", "incoming/private")
    dvc.repro("license", root=workspace)
    rid = hashlib.sha256(data).hexdigest()
    train = pd.read_parquet(workspace / "data/licensed/train.parquet")
    assert rid in set(train["record_id"])
    from atelier import rawstore  # the training copy (a PNG in a clean pack), to search for after the erasure

    packs = (workspace / "data/clean/packs").glob("*.parquet")
    png = next(v for p in packs for v in rawstore.read_pack(p, {rid}).values())
    return {"root": workspace, "rid": rid, "original": data, "png": png}


def test_forget_leaves_no_byte_of_the_record_and_ingest_excludes_it_again(private, tmp_path):
    root, rid = private["root"], private["rid"]
    needles = [rid.encode(), CAPTION.encode(), private["original"], private["png"]]
    before = holding(root, needles)
    assert {f.rsplit(" ", 1)[-1] for f in before} >= {"0", "1", "3"}  # id, caption, training copy
    assert any(f.startswith(".dvc/cache") for f in before) and any(f.startswith("data/raw") for f in before)
    assert not any("data/raw/" in f and "needle 2" in f for f in before)  # the raw store is encrypted at rest

    lost = forget_cli(root, rid, "--reason", "request", ATELIER_DATA_KEY_DIR=str(tmp_path / "lost"))
    assert lost.returncode == 2 and "Traceback" not in lost.stderr and "ATELIER_DATA_KEY_DIR" in lost.stderr
    assert erasure_count(root / "policy/erasures.csv") == 0  # stopped before erasing anything

    dry = forget_cli(root, rid, "--reason", "erasure request", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Dry run" in dry.stdout and erasure_count(root / "policy/erasures.csv") == 0
    assert holding(root, needles) == before

    done = forget_cli(root, rid, "--reason", "GDPR Art. 17 request", "--by", "privacy desk", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["record_ids"] == [rid] and report["erasure"] == "E1" and report["cache_objects_deleted"] > 0
    assert holding(root, needles) == []
    tombstones = pd.read_csv(root / "policy/erasures.csv")
    assert tombstones.to_dict("records") == [
        {
            "erasure": "E1",
            "record_digest": record_digest(rid),
            "erased_at": report["erased_at"],
            "reason": "GDPR Art. 17 request",
            "requested_by": "privacy desk",
        }
    ]
    assert erasure_count(root / "policy/erasures.csv") == 1
    assert rid not in (root / "policy/erasures.csv").read_text()  # the tombstone holds a digest, not the image's sha256

    out = dvc.repro("license", root=root)  # the photograph is still in its source: excluded as erased
    assert "Running stage 'ingest'" in out and "Running stage 'license'" in out
    rejects = pd.read_parquet(root / "data/clean/rejects.parquet")
    erased = rejects[rejects["reason"] == "erased"]
    assert len(erased) == 1 and erased.iloc[0]["source"] == "private"
    assert rid not in set(pd.read_parquet(root / "data/licensed/train.parquet")["record_id"])
    assert holding(root, needles) == []


NEAREST = {
    "record_id": "ab" * 32,
    "title": "At the window",
    "creator": CREATOR,
    "license": "CC0-1.0",
    "source": "https://example.org/zq-private/window",
    "similarity": 0.71,
}
OTHER = {
    "record_id": "cd" * 32,
    "title": "Harbour",
    "creator": "Ben Ode",
    "license": "CC0-1.0",
    "source": "museum/ben.png",
    "similarity": 0.42,
}


def test_the_ledger_erase_path_scrubs_rows_and_entries_and_the_chain_still_verifies(tmp_path):
    identity = keys.create_signing_identity(tmp_path / "signing", "test")
    conn = ledger.open_ledger(tmp_path / "ledger" / "ledger.sqlite")
    art = manifest("a1") | {"nearest_training_images": [NEAREST, OTHER]}
    ledger.record(conn, art, None)
    ledger.record(conn, manifest("a2") | {"nearest_training_images": [OTHER]}, None)
    ledger.record_refusal(
        conn,
        {
            "id": "r1".ljust(16, "0"),
            "sha256_pixels": "r1".ljust(64, "0"),
            "phash": "0f" * 8,
            "prompt": "a window",
            "seed": 1,
            "model": {"name": "m", "version": "3"},
            "reason": "possible replication",
            "nearest_training_images": [NEAREST],
            "created_at": "2026-11-23T21:00:00+00:00",
        },
    )
    publiclog.seal(conn, identity)

    entry = ledger.erase_record(
        conn, NEAREST["record_id"], record_digest(NEAREST["record_id"]), "2026-12-02T10:00:00+00:00", "erasure request"
    )
    assert entry["artworks"] == ["a1"] and entry["refusals"] == ["r1".ljust(16, "0")]
    assert entry["entries_erased"] == [1, 3]
    row = ledger.get(conn, "a1")["manifest"]["nearest_training_images"]
    assert row[0] == NEAREST | {"title": "(erased)", "creator": "(erased)", "source": "(erased)"}
    assert row[1] == OTHER  # another work's item is untouched
    assert ledger.verify_ledger(conn) == []
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # the triggers are back
        conn.execute("UPDATE log SET entry = '{}' WHERE seq = 2")
    publiclog.seal(conn, identity)  # the head signed before the erasure still matches: hashes were kept
    assert publiclog.export_public_log(conn, tmp_path / "public", identity) == 6
    entries, head = publiclog.read_public_log(tmp_path / "public")
    assert publiclog.verify_public_log(entries, head, identity.ca_pem()) == []
    assert [e.get("withheld") for e in entries] == ["erased", None, "erased", None, None, None]
    assert entries[-1]["kind"] == "erasure" and entries[-1]["entry"]["record_digest"] == record_digest("ab" * 32)
    conn.close()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "ledger").iterdir() if p.is_file())
    assert CREATOR.encode() not in stored and b"zq-private" not in stored


def test_forget_marks_the_versions_trained_on_it_and_a_dry_run_writes_nothing(works, tmp_path, monkeypatch):
    """The takedown fixture (tests/test_takedown_image.py): version 1 trained on Ana's work, version 2 did not."""
    from app import forget
    from registry import tracking

    for name in ("RAW_PACKS", "CLEAN_PACKS", "CLEAN_CHUNKS", "REPORTS", "INGEST_INDEX", "INGEST_COMPACTED"):
        monkeypatch.setattr(paths, name, tmp_path / getattr(paths, name).relative_to(REPO))  # ROOT moved already
    monkeypatch.setattr(paths, "ERASURES", tmp_path / "policy" / "erasures.csv", raising=False)
    monkeypatch.setattr(forget, "rebuild_licensed", lambda: False)  # the fixture's tables are not a license input
    dry = forget.forget(works["ana"], reason="request", dry_run=True)
    assert [v["version"] for v in dry["versions"]] == ["1"] and not paths.ERASURES.exists()
    assert "takedown" not in tracking.get_version(NAME, "1")["tags"]

    done = forget.forget("A. Ruiz", reason="GDPR Art. 17", by="Ana's lawyer")  # by creator: any spelling
    assert done["kind"] == "creator" and done["record_ids"] == [works["ana"]]
    tag = tracking.get_version(NAME, "1")["tags"]["takedown"]
    assert "erased by E1" in tag and "Ruiz" not in tag
    assert "takedown" not in tracking.get_version(NAME, "2")["tags"]
    raw = pd.read_parquet(paths.RAW_RECORDS)
    assert works["ana"] not in set(raw["record_id"]) and not raw["creator"].isin(["Ana Ruiz", "A. Ruiz"]).any()
    assert "Dry run" in forget.format_report(dry) and "tombstone E1" in forget.format_report(done)
