"""Shared fixtures. Everything a test needs is built by code in a temporary folder."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
from pathlib import Path

import c2pa
import pytest

from provenance.keys import ensure_signing_identity
from tests.workspace import copy_project, edit_params  # noqa: F401 (tests import edit_params from here)

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ATELIER_QUIET", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on the two cores: each worker, and every stage and CLI process it starts, computes
    # on one thread (two workers of two threads each oversubscribe the cores and run several times slower)
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")
# signing and data keys for tests live in one private temp folder (never the user's ~/.config), removed at exit
if "ATELIER_SIGNING_DIR" not in os.environ or "ATELIER_DATA_KEY_DIR" not in os.environ:
    _KEYS = Path(tempfile.mkdtemp(prefix="atelier-test-keys-"))
    atexit.register(shutil.rmtree, _KEYS, ignore_errors=True)
    os.environ.setdefault("ATELIER_SIGNING_DIR", str(_KEYS / "signing"))
    os.environ.setdefault("ATELIER_DATA_KEY_DIR", str(_KEYS / "data"))


# The modules that run pipelines, longest first (measured; see README): `make test` runs two workers (pytest -n 2
# --dist loadfile), each taking whole modules as it frees up, so the long ones start first and the rest fill in.
LONGEST_FIRST = [
    "test_end_to_end",
    "test_pretrained_clip",
    "test_lora_pipeline",
    "test_team",
    "test_distributed",
    "test_checkpoint",
    "test_hostile_inputs",
]


def pytest_collection_modifyitems(config, items):
    """Modules in LONGEST_FIRST order, then the rest as collected; the order inside a module is kept."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))


def copy_repo(dest: Path) -> Path:
    """Copy the project's source files (not data, models or the venv) into `dest` and git-init it."""
    return copy_project(dest)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh copy of the project with a small demo source, ready for `dvc repro`."""
    root = copy_repo(tmp_path / "ws")
    edit_params(root, demo={"per_class": 2})
    return root


def sign_with_training_mining(data: bytes, label: str, entries: dict, fmt: str = "image/png") -> bytes:
    """`data` signed for real with Atelier's test identity, carrying a training-and-mining assertion."""
    identity = ensure_signing_identity()
    definition = {
        "title": "work",
        "format": fmt,
        "claim_generator_info": [{"name": "test", "version": "1"}],
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture",
                        }
                    ]
                },
            },
            {"label": label, "data": {"entries": entries}},
        ],
    }
    settings = {
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
        "builder": {"thumbnail": {"enabled": False}, "created_assertion_labels": ["c2pa.actions", label]},
    }
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.chain.read_bytes(), identity.key.read_bytes(), None)
    out = io.BytesIO()
    with (
        c2pa.Context.from_dict(settings) as context,
        c2pa.Signer.from_info(info) as signer,
        c2pa.Builder(definition, context=context) as builder,
    ):
        builder.sign(signer, fmt, io.BytesIO(data), out)
    return out.getvalue()


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store for one module's tests, its schema made once (the slow part); tests copy it."""
    from registry import tracking  # mlflow is imported only by the tests that need a store

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        tracking.client().search_registered_models()
    return db
