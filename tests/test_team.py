"""A team, not a checkout (issue 27), end to end on real services that the test starts and stops itself: PostgreSQL,
SeaweedFS's S3 gateway, an MLflow server (PostgreSQL backend, artifacts in S3) and a Prefect server.

Clone A runs the toy pipeline in team mode while clone B (another folder, standing for another machine) tries to run
too and is refused, naming A. B then pulls A's data byte for byte from the DVC remote, a new version is made champion
through the MLflow API (as the MLflow UI does), and B's artworks come from it; A and B generate at once into the
shared ledger on PostgreSQL, whose chain verifies from both; B publishes a bundle that an outsider's audit accepts.
Faults: a push to a stopped S3 store leaves the run unpublished and the next run publishes it; each service stopped
in turn stops `atelier run` before any work, with an error naming it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e import TOY
from tests.team import services
from tests.workspace import copy_project, edit_params

PROMPTS = ["a red sailboat on a calm sea at dusk"]


@pytest.fixture(scope="module")
def team():
    with services(only=("postgres", "s3", "mlflow", "prefect")) as team:
        yield team


def env_of(team) -> dict[str, str]:
    """A process environment in team mode: the team.env file, and nothing of the embedded stores."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "PREFECT_API", "ATELIER_LEDGER"))
    }
    env.update(ATELIER_TEAM_ENV=str(team.env_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    return env


def cli(root: Path, team, *args: str, wait: bool = True):
    cmd = [sys.executable, "-m", "app.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=root, env=env_of(team), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(cmd, cwd=root, env=env_of(team), capture_output=True, text=True, timeout=900)


def python(root: Path, team, code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", "from atelier import team; team.load_env_file()\n" + code],
        cwd=root,
        env=env_of(team),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def lock_holder(team) -> dict:
    import psycopg2

    conn = psycopg2.connect(team.env()["ATELIER_LEDGER_URL"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('run_lock') IS NOT NULL")
            if not cur.fetchone()[0]:
                return {}
            cur.execute("SELECT holder FROM run_lock WHERE id = 1")
            row = cur.fetchone()
        return json.loads(row[0]) if row else {}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def clones(team, tmp_path_factory):
    """(A, B): A ran the toy pipeline in team mode; B, started meanwhile, was refused (its CompletedProcess is
    returned too); B then received A's dvc.lock as a git pull would bring it."""
    a = copy_project(tmp_path_factory.mktemp("clone-a"))
    edit_params(a, **TOY)
    edit_params(a, promote={"min_clip_score_fraction": 100.0})  # the gate refuses: a model owner decides (below)
    b = tmp_path_factory.mktemp("clone-b")
    shutil.copytree(a, b, dirs_exist_ok=True)
    run_a = cli(a, team, "run", wait=False)
    deadline = time.monotonic() + 300
    while lock_holder(team).get("checkout") != str(a) and run_a.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    refused = cli(b, team, "run")
    out, err = run_a.communicate(timeout=1200)
    assert run_a.returncode == 0, err.decode()[-4000:]
    for rel in ["dvc.lock", *git_kept(a)]:  # what a commit in A and a git pull in B would carry
        if (a / rel).is_file():
            (b / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(a / rel, b / rel)
    return a, b, refused


def git_kept(root: Path) -> set[str]:
    """Outputs that git keeps (reports, summaries), not the DVC remote: dvc.yaml says `cache: false`."""
    return {
        next(iter(o))
        for stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values()
        for o in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", [])
        if isinstance(o, dict) and next(iter(o.values())).get("cache") is False
    }


def test_a_second_run_against_the_same_services_is_refused_naming_the_first(clones):
    a, b, refused = clones
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "another pipeline run holds the team's run lock" in refused.stderr and str(a) in refused.stderr
    assert not (b / "data" / "clean").exists() and not (b / "artworks").exists()  # B ran no stage


def tree_digests(root: Path, rel: str) -> dict[str, str]:
    base = root / rel
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_second_clone_pulls_the_same_bytes(clones, team):
    a, b, _ = clones
    pulled = cli(b, team, "data", "pull")
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    uncached = git_kept(a)
    outs = [
        o["path"]
        for stage in yaml.safe_load((a / "dvc.lock").read_text())["stages"].values()
        for o in stage.get("outs", [])
        if o["path"] not in uncached
    ]
    assert {"data/clean", "data/licensed/train.parquet", "models/diffusion"} <= set(outs)
    for rel in outs:
        assert tree_digests(b, rel) == tree_digests(a, rel), rel
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=b, capture_output=True, text=True)
    assert status.stdout.strip() == "promote:\n\talways changed", status.stdout  # the gate always runs; nothing else


PROMOTE_IN_MLFLOW = """
import os
from mlflow import MlflowClient
from atelier.config import load_params
uri = os.environ["MLFLOW_TRACKING_URI"]  # the team's server, from team.env
print({k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}, file=__import__("sys").stderr)
c = MlflowClient(tracking_uri=uri, registry_uri=uri)
name = load_params().registry.model_name
challenger = c.get_model_version_by_alias(name, "challenger")
c.set_registered_model_alias(name, "champion", challenger.version)  # what the MLflow UI's alias editor calls
print(challenger.version)
"""


@pytest.fixture(scope="module")
def promoted(clones, team):
    """The version A's run registered (the gate refused it), made champion through the MLflow API from B, as a model
    owner does in the MLflow UI."""
    a, b, _ = clones
    assert "no_champion" in (a / "reports" / "generate.json").read_text()  # A's run made no artwork: no champion
    return python(b, team, PROMOTE_IN_MLFLOW).strip()


def test_a_promotion_in_mlflow_is_what_both_clones_generate_from_at_once_into_one_ledger(clones, team, promoted):
    """A and B generate at the same time: both from the version promoted in MLflow, every ledger entry stored once,
    the chain verifying from both clones."""
    a, b, _ = clones
    before = json.loads(python(a, team, VERIFY))
    runs = [
        cli(root, team, "generate", PROMPTS[0], "--seed", seed, wait=False) for root, seed in ((a, "21"), (b, "31"))
    ]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err.decode()[-3000:]
    for root in (a, b):
        manifests = [json.loads(p.read_text()) for p in (root / "artworks").glob("*.provenance.json")]
        assert len(manifests) == 1 and manifests[0]["model"]["version"] == promoted
        after = json.loads(python(root, team, VERIFY))
        assert after["problems"] == [] and after["seqs"] == list(range(1, after["entries"] + 1))
        assert after["entries"] == before["entries"] + 2 and len(set(after["keys"])) == len(after["keys"])
        assert after["by_version"] == {promoted: 2}  # the ledger shows both artworks from both clones


VERIFY = """
import json
from atelier.config import load_params
from provenance import ledger
conn = ledger.open_ledger()
log = ledger.log_entries(conn)
name = load_params().registry.model_name
versions = {e["entry"]["model_version"] for e in log if e["kind"] == "artwork"}
print(json.dumps({"problems": ledger.verify_ledger(conn), "entries": len(log), "seqs": [e["seq"] for e in log],
                  "keys": [e["key"] for e in log if e["kind"] == "artwork"],
                  "by_version": {v: len(ledger.by_model_version(conn, name, v)) for v in versions}}))
"""


def test_an_outsider_audits_the_bundle_of_the_shared_ledger(clones, team, promoted, tmp_path):
    _, b, _ = clones
    published = cli(b, team, "publish", str(tmp_path / "bundle"))
    assert published.returncode == 0, published.stderr[-3000:]
    outside = tmp_path / "outside"
    shutil.copytree(tmp_path / "bundle", outside / "bundle")
    pngs = sorted((b / "artworks").glob("*.png"))
    assert pngs
    for png in pngs:
        shutil.copy(png, outside / png.name)
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "audit", "--bundle", "bundle", "--json", *(p.name for p in pngs)],
        cwd=outside,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    failed = [
        (r.get("file"), r["status"], [c for c in r.get("checks", []) if not c["ok"]])
        for r in json.loads(proc.stdout or "[]")
        if r["status"] != "verified"
    ]
    assert proc.returncode == 0 and not failed, (failed, proc.stderr[-3000:])


PUSH_AT_THE_END_OF_A_RUN = """
from atelier import dvc
try:
    dvc.push()
except dvc.PushFailed as e:
    print(e)
"""


def test_a_failed_push_is_published_by_the_next_run(clones, team):
    a, _, _ = clones
    marker = a / ".atelier" / "unpublished.json"
    team.stop("s3")
    try:
        refused = cli(a, team, "data", "push")  # the command checks the services first
        assert refused.returncode == 2 and "the S3 store (the DVC remote" in refused.stderr
        # the end of a run whose S3 store went away after the check: the push itself fails
        said = python(a, team, PUSH_AT_THE_END_OF_A_RUN)
        assert "the run finished but is marked unpublished" in said.lower()
        assert "pushing this run's data and models" in json.loads(marker.read_text())["reason"]
    finally:
        team.up(only=("s3",))
    again = cli(a, team, "run", "--upto", "demo")  # any run: it publishes the pending push before its stages
    assert again.returncode == 0, again.stderr[-3000:]
    assert not marker.exists()
    assert "publishing the previous run first" in again.stdout + again.stderr


@pytest.mark.parametrize(
    "service, named",
    [
        ("prefect", "Prefect (the flow runs) at http://127.0.0.1:"),
        ("mlflow", "MLflow (the model registry) at http://127.0.0.1:"),
        ("s3", "the S3 store (the DVC remote, http://127.0.0.1:"),
        ("postgres", "PostgreSQL (the ledger, postgresql://atelier@127.0.0.1:"),
    ],
)
def test_a_stopped_service_stops_the_run_before_any_work_naming_it(clones, team, service, named):
    a, _, _ = clones
    lock_before = (a / "dvc.lock").read_bytes()
    team.stop(service)  # stopped in turn, in this order, and left stopped: the last test stops the last service
    refused = cli(a, team, "run")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert named in refused.stderr and "atelier services up" in refused.stderr
    assert "nothing was run" in refused.stderr and team.secrets()["db_password"] not in refused.stderr
    assert (a / "dvc.lock").read_bytes() == lock_before
