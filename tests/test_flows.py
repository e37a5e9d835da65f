"""The pipeline flow under a real (temporary) Prefect server: it leaves the same dvc.lock as `dvc repro`, names the
stage that failed, retries where the policy says, and resumes where it stopped. Data stages only, at toy size."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.settings import PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from atelier import dvc
from atelier.dvc import StageFailed
from flows import pipeline
from tests.conftest import REPO, copy_repo, edit_params


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server for the session, with a fresh PREFECT_HOME and analytics off."""
    home = tmp_path_factory.mktemp("prefect-home")
    env = pytest.MonkeyPatch()
    env.setenv("PREFECT_HOME", str(home))
    env.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with temporary_settings(updates={PREFECT_HOME: home, PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        with prefect_test_harness(server_startup_timeout=300):
            yield
    env.undo()


def lock(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]


def shape(stages: dict) -> dict:
    """A lock without its hashes: stage -> cmd, params, dependency and output paths."""
    return {
        name: (
            st["cmd"],
            st.get("params"),
            [d["path"] for d in st.get("deps", [])],
            [o["path"] for o in st.get("outs", [])],
        )
        for name, st in stages.items()
    }


def task_run_counts(flow_run_id) -> dict[str, int]:
    """How many times each task of a flow run ran (1 + its retries)."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run.run_count for run in runs}


def test_policy_covers_every_stage():
    names = pipeline.stage_names(REPO)
    assert names == list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert names[:4] == ["demo", "ingest", "clean", "license"]
    for name in names:
        task = pipeline.stage_task(name)
        assert task.name == name and task.timeout_seconds is None  # stopped when stalled, never for being slow
        assert task.retries == (2 if name == "ingest" else 0)
    assert pipeline.stage_task("ingest").retry_delay_seconds == [10.0, 20.0]
    assert set(pipeline.RETRIES) <= set(names)  # no policy for a stage that is gone


def test_flows_hold_no_data_libraries():
    code = (
        "import sys, flows.pipeline, flows.serve; "
        "print(sorted(m for m in ('pandas', 'torch', 'PIL', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_stage_order_and_upto_are_checked(tmp_path):
    stages = {
        "clean": {"cmd": "c", "deps": ["data/raw/records.parquet"], "outs": ["data/clean"]},
        "ingest": {"cmd": "i", "outs": ["data/raw"]},
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    with pytest.raises(ValueError, match="stage 'clean' depends on data/raw/records.parquet.*later stage 'ingest'"):
        pipeline.stage_names(tmp_path)
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        pipeline.select(["demo", "ingest"], "nope")
    assert pipeline.select(["demo", "ingest", "clean"], "ingest") == ["demo", "ingest"]


def test_flow_leaves_the_same_lock_as_dvc_repro(workspace, prefect_harness):
    dvc.repro("license", root=workspace)
    plain = lock(workspace)
    shutil.rmtree(workspace)  # a fresh copy at the same path (ingest records absolute paths in its error messages)
    copy_repo(workspace)
    edit_params(workspace, demo={"per_class": 2})

    state = pipeline.dataset_to_artwork(root=str(workspace), upto="license", return_state=True)
    outputs = state.result()
    assert list(outputs) == ["demo", "ingest", "clean", "license"]
    assert all(f"Running stage '{name}'" in out for name, out in outputs.items())
    flowed = lock(workspace)
    assert shape(flowed) == shape(plain)  # the same stages, commands, dependencies, params and outputs
    assert flowed == plain  # and the same md5 for every dependency and output
    again = dvc.repro("license", root=workspace)  # DVC takes the flow's lock as its own: nothing to do
    assert "Running stage" not in again and again.count("didn't change, skipping") == 4

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[pipeline.SUMMARY_KEY]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert len(artifacts) == 1 and artifacts[0].type == "markdown"
    markdown = artifacts[0].data
    licensed = yaml.safe_load((workspace / "data/licensed/summary.json").read_text())
    for reason, count in licensed["excluded_per_reason"].items():
        assert f"| {reason} | {count} |" in markdown
    assert f"## Train records\n\n{licensed['train_records']}\n" in markdown


def break_stage(root: Path, stage: str) -> str:
    """Make `stages/<stage>.py` in a workspace exit 1 before doing anything; return the original text."""
    path = root / "stages" / f"{stage}.py"
    original = path.read_text()
    main = 'if __name__ == "__main__":\n'
    assert original.count(main) == 1
    path.write_text(original.replace(main, main + f'    raise SystemExit("injected fault in {stage}")\n'))
    return original


def test_failure_names_the_stage_retries_and_resumes(workspace, prefect_harness, monkeypatch):
    monkeypatch.setattr(pipeline, "RETRY_BACKOFF_S", 0.2)  # the policy's shape, without the 30 s of waiting

    ingest = break_stage(workspace, "ingest")  # fails on every attempt
    state = pipeline.dataset_to_artwork(root=str(workspace), upto="license", return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, StageFailed) and "stage 'ingest' failed" in str(error)
    assert "injected fault in ingest" in str(error)  # DVC's own output comes with it
    assert task_run_counts(state.state_details.flow_run_id) == {"demo": 1, "ingest": 3}  # 2 retries; clean never ran
    assert (workspace / "data/sources/demo/arr_0.png").exists()  # the stage before it finished and stays

    (workspace / "stages/ingest.py").write_text(ingest)
    clean = break_stage(workspace, "clean")  # clean has no retries: one attempt
    state = pipeline.dataset_to_artwork(root=str(workspace), upto="license", return_state=True)
    error = state.result(raise_on_failure=False)
    assert state.is_failed() and isinstance(error, StageFailed) and "stage 'clean' failed" in str(error)
    assert task_run_counts(state.state_details.flow_run_id) == {"demo": 1, "ingest": 1, "clean": 1}
    assert (workspace / "data/raw/records.parquet").exists()  # earlier outputs stay in place
    assert set(lock(workspace)) == {"demo", "ingest"}

    (workspace / "stages/clean.py").write_text(clean)
    outputs = pipeline.dataset_to_artwork(root=str(workspace), upto="license")
    assert "Stage 'demo' didn't change, skipping" in outputs["demo"]
    assert "Stage 'ingest' didn't change, skipping" in outputs["ingest"]
    assert "Running stage 'clean'" in outputs["clean"] and "Running stage 'license'" in outputs["license"]
    assert set(lock(workspace)) == {"demo", "ingest", "clean", "license"}


def test_generate_flow_passes_its_parameters_and_fails_with_the_reason(prefect_harness):
    # a creator on policy/opt_out.csv: refused before any model is loaded, so no champion is needed
    state = pipeline.generate_artworks_flow(
        prompts=["a blue spiral", "a portrait in the manner of Marta Okafor"], seed=3, count=2, return_state=True
    )
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert type(error).__name__ == "PromptRefused" and "marta okafor" in str(error).lower()
