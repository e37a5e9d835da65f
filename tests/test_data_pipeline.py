"""The data stages end to end through real DVC, in a copy of the project with a small demo source."""

import json

import pandas as pd

from atelier import dvc
from tests.conftest import edit_params


def test_demo_through_dvc(workspace):
    out = dvc.repro("license", root=workspace)
    assert "Running stage 'license'" in out
    raw = pd.read_parquet(workspace / "data/raw/records.parquet")
    clean = pd.read_parquet(workspace / "data/clean/records.parquet")
    rejects = pd.read_parquet(workspace / "data/clean/rejects.parquet")
    train = pd.read_parquet(workspace / "data/licensed/train.parquet")
    excluded = pd.read_parquet(workspace / "data/licensed/excluded.parquet")
    assert len(raw) == len(clean) + len(rejects)
    assert len(clean) == len(train) + len(excluded)
    assert train["record_id"].is_unique and not train["permits_training"].eq(False).any()

    expected = json.loads((workspace / "data/sources/demo/expected.json").read_text())
    outcome = {
        **dict(zip(rejects["source_uri"], rejects["reason"])),
        **dict(zip(excluded["source_uri"], excluded["reason"])),
    }
    for file_name, reason in expected.items():
        assert outcome.get(file_name) == reason, (file_name, outcome.get(file_name), reason)
    assert not set(expected) & set(train["source_uri"])
    assert (workspace / "data/licensed/ATTRIBUTION.md").read_text().count("|") > 10
    assert all((workspace / p).exists() for p in train["clean_path"])

    again = dvc.repro("license", root=workspace)
    assert "Running stage" not in again

    edit_params(
        workspace, license={"policy": {"commercial": False, "allow_share_alike": True, "allow_no_derivatives": False}}
    )
    changed = dvc.repro("license", root=workspace)
    assert "Running stage 'license'" in changed
    assert "Running stage 'clean'" not in changed and "Running stage 'ingest'" not in changed
    relaxed = pd.read_parquet(workspace / "data/licensed/train.parquet")
    assert relaxed["license_spdx"].str.contains("NC").any() and len(relaxed) > len(train)
