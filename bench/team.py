"""Team mode's costs (issue 27): the services of `atelier services up` in a scratch folder, measured in one run.

- DVC push and pull throughput to the S3 remote (SeaweedFS) of 200 files of 256 KiB (50 MiB, random bytes), against a
  plain copy of the same files (shutil.copytree);
- registry latency: resolving `models:/NAME@champion` (what generate does first) on the MLflow server against the
  embedded SQLite store, 50 calls each after one warm-up;
- ledger latency: recording an artwork (a write transaction with its chain entry) and reading one back, on
  PostgreSQL against the SQLite file, 200 each.

It needs Debian's PostgreSQL (make installs it) and takes about a minute."""

from __future__ import annotations

import copy
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES, FILE_BYTES = 200, 256 * 1024
CALLS, ARTWORKS = 50, 200


def _dvc(root: Path, *args: str, env: dict) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, check=True, capture_output=True)


def transfer(team, tmp: Path) -> dict:
    from atelier import dvc

    env = dict(os.environ, **team.env())
    repo = tmp / "repo"
    (repo / "data").mkdir(parents=True)
    for i in range(FILES):
        (repo / "data" / f"{i:04d}.bin").write_bytes(os.urandom(FILE_BYTES))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, "init", "-q", env=env)
    _dvc(repo, "add", "data", env=env)
    for args in (
        ["remote", "add", "--local", "-d", dvc.REMOTE, env["ATELIER_DVC_REMOTE"] + "/bench"],
        ["remote", "modify", "--local", dvc.REMOTE, "endpointurl", env["ATELIER_S3_ENDPOINT"]],
    ):
        _dvc(repo, *args, env=env)
    start = time.perf_counter()
    _dvc(repo, "push", env=env)
    push = time.perf_counter() - start
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data")
    start = time.perf_counter()
    _dvc(repo, "pull", env=env)
    pull = time.perf_counter() - start
    start = time.perf_counter()
    shutil.copytree(repo / "data", tmp / "copy")
    copy_s = time.perf_counter() - start
    mib = FILES * FILE_BYTES / 2**20
    return {
        "push_mib_s": mib / push,
        "pull_mib_s": mib / pull,
        "copy_mib_s": mib / copy_s,
        "push_vs_copy": copy_s / push,
        "pull_vs_copy": copy_s / pull,
    }


def _alias_latency(uri: str, tmp: Path) -> float:
    """Median seconds of get_model_version_by_alias on the store at `uri`, after registering one small version."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = "bench-model"
    if uri.startswith("sqlite"):
        exp = client.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
    else:
        exp = client.create_experiment("bench")
    (tmp / "weights.bin").write_bytes(os.urandom(64 * 1024))
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_artifact(str(tmp / "weights.bin"), "model")
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    client.get_model_version_by_alias(name, "champion")
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        client.get_model_version_by_alias(name, "champion")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ledger_latency(location) -> tuple[float, float]:
    """Median seconds per record() and per get() on the ledger at `location`."""
    from provenance import ledger
    from tests.test_ledger import manifest

    conn = ledger.open_ledger(location)
    writes, reads = [], []
    for i in range(ARTWORKS):
        m = copy.deepcopy(manifest(f"{i:016x}"))
        start = time.perf_counter()
        ledger.record(conn, m, ledger.watermark_id_for(conn, f"source-{i}"))
        writes.append(time.perf_counter() - start)
    for i in range(ARTWORKS):
        start = time.perf_counter()
        ledger.get(conn, f"{i:016x}")
        reads.append(time.perf_counter() - start)
    conn.close()
    return statistics.median(writes), statistics.median(reads)


def main() -> dict:
    from tests.team import fresh_database, services

    with tempfile.TemporaryDirectory() as tmp, services(only=("postgres", "s3", "mlflow")) as team:
        tmp = Path(tmp)
        result = transfer(team, tmp)
        (tmp / "embedded").mkdir()
        (tmp / "team").mkdir()
        embedded_alias = _alias_latency(f"sqlite:///{tmp / 'embedded' / 'mlflow.db'}", tmp / "embedded")
        team_alias = _alias_latency(team.env()["MLFLOW_TRACKING_URI"], tmp / "team")
        embedded_write, embedded_read = _ledger_latency(tmp / "embedded" / "ledger.sqlite")
        team_write, team_read = _ledger_latency(fresh_database(team))
    for key, team_s, embedded_s in (
        ("registry_alias_ms", team_alias, embedded_alias),
        ("ledger_record_ms", team_write, embedded_write),
        ("ledger_get_ms", team_read, embedded_read),
    ):
        result[key] = {"team": team_s * 1e3, "embedded": embedded_s * 1e3, "ratio": team_s / embedded_s}
    print(
        f"team: push {result['push_mib_s']:.1f} MiB/s, pull {result['pull_mib_s']:.1f} MiB/s, plain copy "
        f"{result['copy_mib_s']:.0f} MiB/s (push {result['push_vs_copy']:.3f}x, "
        f"pull {result['pull_vs_copy']:.3f}x of a copy)"
    )
    for key in ("registry_alias_ms", "ledger_record_ms", "ledger_get_ms"):
        r = result[key]
        print(f"team: {key}: team {r['team']:.2f} ms, embedded {r['embedded']:.2f} ms ({r['ratio']:.2f}x)")
    return result


if __name__ == "__main__":
    main()
