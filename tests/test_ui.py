"""The real servers: `atelier ui`'s Prefect and MLflow servers answer with their UIs, MLflow's REST API shows a
registered model with its aliases, and a deployment served by `atelier serve` runs to completion when triggered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from app import ui


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server-home")
    server = ui.start_prefect_server(ui.free_port(), home=home, timeout=300)  # a loaded CI machine is slow
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    store = tmp_path_factory.mktemp("mlflow-store")
    server = ui.start_mlflow_server(
        ui.free_port(),
        db=store / "mlflow.db",
        artifacts=store / "mlartifacts",
        log_path=store / "server.log",
        timeout=300,
    )
    yield server
    server.stop()


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers.get("content-type", ""), response.read().decode()


def test_both_uis_answer_and_mlflow_shows_aliases(prefect_server, mlflow_server, tmp_path):
    for server in (prefect_server, mlflow_server):
        status, content_type, body = get(server.url + "/")
        assert status == 200 and content_type.startswith("text/html") and "<html" in body.lower(), server.name

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    run = client.create_run(client.create_experiment("ui-test"))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.txt").write_text("not a real model")
    client.log_artifacts(run.info.run_id, str(tmp_path / "model"), "model")
    client.create_registered_model("atelier-ui-test")
    for _ in range(2):
        client.create_model_version("atelier-ui-test", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("atelier-ui-test", "champion", "1")
    client.set_registered_model_alias("atelier-ui-test", "challenger", "2")

    query = urllib.parse.urlencode({"name": "atelier-ui-test"})
    status, content_type, body = get(f"{mlflow_server.url}/api/2.0/mlflow/registered-models/get?{query}")
    model = json.loads(body)["registered_model"]
    assert status == 200 and model["name"] == "atelier-ui-test"
    assert {a["alias"]: a["version"] for a in model["aliases"]} == {"champion": "1", "challenger": "2"}

    # the light registry read (registry/lookup.py, no MLflow import) gives what MLflow's client gives, over REST
    from registry import lookup, tracking

    client.set_model_version_tag("atelier-ui-test", "1", "weights_sha256", "ab" * 32)
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server.url
    try:
        for version in ("1", "2"):
            assert lookup.get_version("atelier-ui-test", version) == tracking.get_version("atelier-ui-test", version)
        assert lookup.get_version("atelier-ui-test", "1")["aliases"] == ["champion"]
        with pytest.raises(LookupError, match="no version 3"):
            lookup.get_version("atelier-ui-test", "3")
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]


def test_served_deployment_runs_when_triggered(prefect_server, workspace, tmp_path):
    api = prefect_server.url + "/api"
    env = dict(
        os.environ,
        PREFECT_API_URL=api,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    log = open(tmp_path / "serve.log", "w")
    serving = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--cron", "0 3 * * *", "--upto", "demo", "--name", "test"],
        cwd=workspace,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # cwd: the workspace's own atelier, as DVC stages use
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            deployment = None
            deadline = time.monotonic() + 300
            while deployment is None and time.monotonic() < deadline:
                assert serving.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    with get_client(sync_client=True) as client:
                        deployment = client.read_deployment_by_name("dataset-to-artwork/test")
                except Exception:  # not registered yet
                    time.sleep(1)
            assert deployment is not None, (tmp_path / "serve.log").read_text()
            assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
            assert deployment.parameters == {"upto": "demo"}

            flow_run = run_deployment("dataset-to-artwork/test", timeout=600, poll_interval=1)  # returns when done
        assert flow_run.state.is_completed(), (flow_run.state, (tmp_path / "serve.log").read_text()[-3000:])
        assert (workspace / "data/sources/demo/arr_0.png").exists()
        assert "demo" in (workspace / "dvc.lock").read_text()
    finally:
        if serving.poll() is None:
            os.killpg(serving.pid, signal.SIGTERM)
            try:
                serving.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(serving.pid, signal.SIGKILL)
                serving.wait()
        log.close()
