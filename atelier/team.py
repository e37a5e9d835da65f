"""Team mode (docs/team.md): which services hold the stores, whether they answer, and the run lock they hold.

Two modes, one code path. `embedded` (the default) keeps every store in the checkout: MLflow on SQLite, the DVC
cache, the ledger file, Prefect's temporary server. `team` (ATELIER_MODE=team) names a service for each, in the
environment, never in params.yaml or git:

    ATELIER_LEDGER_URL     postgresql://user:password@host:port/db   the ledger (provenance/ledger_pg.py), the run lock
    MLFLOW_TRACKING_URI    http://host:port                          runs, the model registry, artifacts (proxied)
    PREFECT_API_URL        http://host:port/api                      flow runs, the work pool
    ATELIER_S3_ENDPOINT    http://host:port                          the S3 store of the DVC remote
    ATELIER_DVC_REMOTE     s3://bucket/prefix                        where runs push their data and models
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY                         the S3 keys (DVC reads them from here)
    ATELIER_DASK_SCHEDULER tcp://host:port (optional)                the data stages' Dask cluster

ATELIER_TEAM_ENV may name a file of `export NAME=value` lines (what `atelier services up` writes, mode 0600, outside
the repository) that fills in whatever the environment does not set. Secrets never reach a message: URLs are shown
without their password.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

MODE, ENV_FILE = "ATELIER_MODE", "ATELIER_TEAM_ENV"
REQUIRED = ("ATELIER_LEDGER_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "ATELIER_S3_ENDPOINT", "ATELIER_DVC_REMOTE")
RUN_LOCK_KEY = 0x41544C51  # the advisory lock a pipeline run holds on the team's database ("ATLQ")
START_HINT = "start the team's services (atelier services up) or fix the address in the team's environment"


class TeamError(RuntimeError):
    """Team mode is misconfigured, or one of its services does not answer; the message names it and what to do."""


class TeamBusy(TeamError):
    """Another pipeline run holds the team's run lock."""


def load_env_file(path: Path | str | None = None) -> Path | None:
    """Fill os.environ from the team's env file (ATELIER_TEAM_ENV unless `path`), without overriding what is set;
    refuse a file that other users can read. Returns the file read, or None when none is named."""
    path = path or os.environ.get(ENV_FILE)
    if not path:
        return None
    path = Path(path).expanduser()
    if not path.is_file():
        raise TeamError(f"{ENV_FILE}={path}: no such file; `atelier services up` writes it, or unset {ENV_FILE}")
    if path.stat().st_mode & 0o077:
        raise TeamError(f"{path} holds secrets but other users can read it: chmod 600 {path}")
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not name.strip().isidentifier():
            raise TeamError(f"{path}, line {number}: expected `export NAME=value`")
        os.environ.setdefault(name.strip(), value.strip().strip("'\""))
    return path


@dataclass(frozen=True)
class Team:
    """The services of team mode, as the environment names them."""

    ledger_url: str
    mlflow_uri: str
    prefect_api: str
    s3_endpoint: str
    dvc_remote: str
    dask_scheduler: str | None = None

    @property
    def bucket(self) -> str:
        return urlsplit(self.dvc_remote).netloc


def mode() -> str:
    """'team' or 'embedded' (ATELIER_MODE; embedded when unset); anything else is an error."""
    value = os.environ.get(MODE, "embedded").strip().lower() or "embedded"
    if value not in ("embedded", "team"):
        raise TeamError(f"{MODE}={value!r}: choose embedded (the default) or team")
    return value


def current() -> Team | None:
    """The team's services in team mode (every required variable set, else TeamError naming the missing ones), or
    None in embedded mode."""
    load_env_file()
    if mode() != "team":
        return None
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        raise TeamError(
            f"{MODE}=team but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; "
            f"`atelier services up` writes them to a team.env file: export {ENV_FILE}=that file"
        )
    if not urlsplit(os.environ["ATELIER_DVC_REMOTE"]).scheme == "s3":
        raise TeamError(f"ATELIER_DVC_REMOTE={os.environ['ATELIER_DVC_REMOTE']!r} is not an s3://bucket/prefix URL")
    return Team(
        ledger_url=os.environ["ATELIER_LEDGER_URL"],
        mlflow_uri=os.environ["MLFLOW_TRACKING_URI"],
        prefect_api=os.environ["PREFECT_API_URL"],
        s3_endpoint=os.environ["ATELIER_S3_ENDPOINT"],
        dvc_remote=os.environ["ATELIER_DVC_REMOTE"],
        dask_scheduler=os.environ.get("ATELIER_DASK_SCHEDULER") or None,
    )


def redacted(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


def check(team: Team) -> list[str]:
    """One problem per service that does not answer, naming it, its address and what to do; [] when all answer."""
    problems = []
    try:
        import psycopg2

        psycopg2.connect(team.ledger_url, connect_timeout=5).close()
    except Exception as e:  # noqa: BLE001 - any failure to connect is reported, with the driver's first line
        problems.append(f"PostgreSQL (the ledger, {redacted(team.ledger_url)}): {_first_line(e)}; {START_HINT}")
    for name, url in (
        ("MLflow (the model registry)", team.mlflow_uri.rstrip("/") + "/health"),
        ("Prefect (the flow runs)", team.prefect_api.rstrip("/") + "/health"),
    ):
        reason = _http_problem(url)
        if reason:
            problems.append(f"{name} at {url.rsplit('/', 1)[0]}: {reason}; {START_HINT}")
    reason = _s3_problem(team)
    if reason:
        problems.append(
            f"the S3 store (the DVC remote, {team.s3_endpoint}, bucket {team.bucket}): {reason}; {START_HINT}"
        )
    return problems


def require(team: Team) -> None:
    """TeamError listing every service that does not answer; nothing when all do. Call before any work."""
    problems = check(team)
    if problems:
        raise TeamError("team mode: a service does not answer, so nothing was run:\n  - " + "\n  - ".join(problems))


@contextmanager
def run_lock(team: Team, purpose: str, where: Path) -> Iterator[None]:
    """Hold the team's run lock for the block: one pipeline run at a time against the same services, on any machine.
    TeamBusy, naming the holder (host, checkout, pid, since), when another run holds it. The lock is a PostgreSQL
    session advisory lock: it ends with its holder's connection, so a killed run leaves no stale lock."""
    import psycopg2

    try:
        conn = psycopg2.connect(team.ledger_url, connect_timeout=10, application_name="atelier-run-lock")
    except psycopg2.Error as e:
        raise TeamError(
            f"PostgreSQL (the run lock, {redacted(team.ledger_url)}): {_first_line(e)}; {START_HINT}"
        ) from None
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS run_lock (id INTEGER PRIMARY KEY, holder TEXT NOT NULL)")
            cur.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,))
            if not cur.fetchone()[0]:
                cur.execute("SELECT holder FROM run_lock WHERE id = 1")
                row = cur.fetchone()
                info = json.loads(row[0]) if row else {}
                raise TeamBusy(
                    f"another pipeline run holds the team's run lock ({info.get('purpose', 'a run')} on "
                    f"{info.get('host', '?')} in {info.get('checkout', '?')}, pid {info.get('pid', '?')}, since "
                    f"{info.get('since', '?')}); two runs against the same services would interleave their "
                    "registry and ledger writes: wait for it to finish, then run again"
                )
            holder = {
                "purpose": purpose,
                "host": socket.gethostname(),
                "checkout": str(where),
                "pid": os.getpid(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            cur.execute(
                "INSERT INTO run_lock (id, holder) VALUES (1, %s) "
                "ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder",
                (json.dumps(holder),),
            )
        yield
    finally:
        conn.close()  # ends the session: the advisory lock is released


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _http_problem(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return None if response.status == 200 else f"answered HTTP {response.status}"
    except urllib.error.HTTPError as e:
        return f"answered HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"does not answer ({getattr(e, 'reason', e)})"


def _s3_problem(team: Team) -> str | None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=team.s3_endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 1}),
    )
    try:
        s3.head_bucket(Bucket=team.bucket)
    except ClientError as e:
        return f"the bucket answered {e.response.get('Error', {}).get('Code', 'an error')}"
    except (BotoCoreError, OSError) as e:
        return f"does not answer ({_first_line(e)})"
    return None
