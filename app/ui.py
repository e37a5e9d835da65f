"""`atelier ui` (`make ui`): the Prefect server (flow runs, schedules, run summaries) and the MLflow server (runs,
registered models, aliases) on the loopback interface, until Ctrl-C."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from atelier import paths

HOST = "127.0.0.1"
PREFECT_PORT = 4200
MLFLOW_PORT = 5000
PREFECT_HOME = paths.ROOT / ".prefect"
MLARTIFACTS = paths.MLARTIFACTS  # where registry/ puts run artifacts


@dataclass
class Server:
    """A server process started in its own session, so that stop() ends it and every process it started."""

    name: str
    url: str
    health_url: str
    process: subprocess.Popen
    log_path: Path
    _log: object = field(repr=False, default=None)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server wrote."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """Send SIGTERM to the server's process group, then SIGKILL if it is still running after `timeout` s."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log:
            self._log.close()
            self._log = None


def port_free(port: int) -> bool:
    """Whether nothing listens on HOST:`port`."""
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on HOST that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _start(
    name: str, cmd: list[str], env: dict[str, str], port: int, health_path: str, log_path: Path | None, timeout: float
) -> Server:
    if not port_free(port):
        raise RuntimeError(f"{name}: port {port} on {HOST} is in use (a server already running?); choose another port")
    if log_path is None:
        fd, tmp = tempfile.mkstemp(prefix=f"atelier-{name.lower()}-{port}-", suffix=".log")
        os.close(fd)
        log_path = Path(tmp)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed by Server.stop)
    process = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://{HOST}:{port}"
    server = Server(name, url, url + health_path, process, log_path, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(
                f"{name} exited with status {process.returncode} before answering {server.health_url}; "
                f"its log ({log_path}) ends:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(server.health_url, timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError, http.client.HTTPException):  # not up yet (or a half-open answer)
            pass
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(
        f"{name} did not answer {server.health_url} within {timeout:.0f} s; its log ({log_path}) "
        f"ends:\n{server.log_tail()}"
    )


def start_prefect_server(
    port: int = PREFECT_PORT, home: Path = PREFECT_HOME, log_path: Path | None = None, timeout: float = 90.0
) -> Server:
    """Start `prefect server start` on HOST:`port` with its database in `home`; return once /api/health answers."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the server's UI talks to its own API
    env.update(
        PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_API_URL=f"http://{HOST}:{port}/api"
    )
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    return _start("Prefect", cmd, env, port, "/api/health", log_path or home / f"server-{port}.log", timeout)


def start_mlflow_server(
    port: int = MLFLOW_PORT,
    db: Path = paths.MLFLOW_DB,
    artifacts: Path = MLARTIFACTS,
    log_path: Path | None = None,
    timeout: float = 90.0,
) -> Server:
    """Start `mlflow server` on HOST:`port` over the sqlite store `db`; return once /health answers."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{Path(db).resolve()}",
        "--default-artifact-root",
        str(Path(artifacts).resolve()),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return _start("MLflow", cmd, env, port, "/health", log_path, timeout)


def run_ui(prefect_port: int = PREFECT_PORT, mlflow_port: int = MLFLOW_PORT) -> int:
    """Start both servers, print their URLs, and keep them running until Ctrl-C (or one of them stops)."""
    servers: list[Server] = []
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or `kill`: stop both servers (the finally below)
        signal.signal(signum, signal.default_int_handler)
    try:
        print(
            f"Starting the Prefect server (database in {PREFECT_HOME}) and the MLflow server ({paths.MLFLOW_DB}) ...",
            flush=True,
        )
        servers.append(start_prefect_server(prefect_port))
        servers.append(start_mlflow_server(mlflow_port))
        pf, ml = servers
        print(
            f"\nPrefect UI: {pf.url}  (flow runs, schedules, the run summary artifact)\n"
            f"MLflow UI:  {ml.url}  (runs, registered models, champion/challenger aliases)\n\n"
            f"To send runs and schedules to this Prefect server, in another shell:\n"
            f"  export PREFECT_API_URL={pf.url}/api\n"
            f"  .venv/bin/atelier serve --cron '0 3 * * *'\n"
            f"Logs: {pf.log_path}, {ml.log_path}\nCtrl-C stops both.",
            flush=True,
        )
        while True:
            for server in servers:
                if server.process.poll() is not None:
                    print(
                        f"atelier ui: the {server.name} server stopped (status {server.process.returncode}); "
                        f"its log ends:\n{server.log_tail()}",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping both servers ...", flush=True)
        return 0
    except (RuntimeError, TimeoutError) as exc:  # a port in use, or a server that would not start
        print(f"atelier ui: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            server.stop()
