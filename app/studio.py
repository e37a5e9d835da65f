"""`atelier studio`: a warm generator. It keeps the champion, the evaluator, the signing key and the ledger open, and
makes artworks on request over HTTP on loopback exactly as `atelier generate` does alone (stages/generate.py's
make_artworks: the same manifest, ledger entry and pixels for the same prompt and seed). Before each request it asks
the registry which version holds the champion alias, and loads a new one when the alias has moved.

`atelier generate` finds a running studio by `.atelier/studio.json` in the checkout (its port, pid and a random
token, readable by the owner only) and sends its request there; with no studio, or one that does not answer, it
generates alone. This module's top imports only the standard library: the CLI's client side loads no model library.

The API: `GET /health` (the model version it holds), `POST /generate` with a JSON body {prompt, seed, n, steps,
guidance, negative_prompt, candidates, out} and the header `X-Atelier-Token`. The answer is {manifests, warnings};
a refused prompt is 403, no champion 409, a bad request 400, each with {error}.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from atelier import paths
from atelier.config import MAX_CANDIDATES

DISCOVERY = Path(".atelier") / "studio.json"  # under the checkout: where a running studio listens, and its token
MAX_BODY = 64 * 1024
MAX_ARTWORKS = 64  # per request: a longer batch belongs to `atelier generate --no-studio` or the pipeline
REQUEST_TIMEOUT_S = 3600
FIELDS = {"prompt", "seed", "n", "steps", "guidance", "negative_prompt", "candidates", "out"}


class StudioError(Exception):
    """A request the studio refused: its HTTP status, the message, and the kind (refused, no_champion, bad_request)."""

    def __init__(self, status: HTTPStatus, message: str, kind: str):
        super().__init__(message)
        self.status, self.kind = status, kind


def discovery_file(root: Path | None = None) -> Path:
    return (root or paths.ROOT) / DISCOVERY


# ---- the client side (`atelier generate`): standard library only ----


def find(root: Path | None = None) -> dict | None:
    """The running studio of this checkout ({url, token, pid, version}), or None when there is none or its process is
    gone (a stale file from a killed studio is ignored, never trusted)."""
    file = discovery_file(root)
    try:
        found = json.loads(file.read_text(encoding="utf-8"))
        os.kill(int(found["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found


def request(found: dict, body: dict) -> dict:
    """POST a generation to the studio; return its answer. Raise StudioError for a refusal it gave, ConnectionError
    when it does not answer (the caller then generates alone)."""
    req = urllib.request.Request(
        found["url"] + "/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Atelier-Token": found["token"]},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read())
        except ValueError:
            answer = {"error": f"the studio answered {exc.code} {exc.reason}", "kind": "bad_request"}
        raise StudioError(HTTPStatus(exc.code), answer.get("error", ""), answer.get("kind", "bad_request")) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"the studio at {found['url']} did not answer ({exc})") from None


# ---- the server side ----


class Studio:
    """The open model, ledger and parameters; `generate` makes artworks as stages/generate.py does alone."""

    def __init__(self) -> None:
        from atelier.config import load_params
        from provenance import ledger
        from provenance.keys import ensure_signing_identity

        self.params = load_params()
        ensure_signing_identity()  # created (or checked) once, before the first request
        self.conn = ledger.open_ledger()
        self.champ = None
        self.current()  # the champion now, or NoChampion at start: a studio with nothing to serve says so

    def current(self):
        """The champion's loaded model, reloaded when the alias has moved (or its weights differ) since the last
        request. Every request asks the registry: the alias is moved from the MLflow UI, by a person, at any time."""
        from registry import tracking
        from stages.generate import load_champion

        name = self.params.registry.model_name
        info = tracking.version_by_alias(name, tracking.CHAMPION)
        if info is None or info["tags"].get("takedown"):
            self.champ = None
            return load_champion(name)  # raises NoChampion with the reason and what to do
        held = self.champ
        moved = held is None or (held.info["version"], held.weights_sha256) != (
            info["version"],
            info["tags"].get("weights_sha256"),
        )
        if moved:
            self.champ = None  # the old model is released before the new one loads
            self.champ = load_champion(name)
            print(f"studio: champion {name} version {self.champ.info['version']} loaded", file=sys.stderr, flush=True)
        return self.champ

    def generate(self, body: dict) -> dict:
        from atelier.config import load_params
        from stages.generate import check_prompt, make_artworks, opted_out_creators

        req = _validated(body)
        self.params = load_params()  # params.yaml as it is now, like a fresh `atelier generate`
        check_prompt(req["prompt"], opted_out_creators(paths.OPT_OUT))  # the opt-outs as they are now
        champ = self.current()
        warnings: list[str] = []
        manifests = make_artworks(
            champ,
            [req["prompt"]],
            req["seed"],
            n=req["n"],
            steps=req["steps"],
            guidance=req["guidance"],
            negative_prompt=req["negative_prompt"],
            out_dir=Path(req["out"]) if req["out"] else None,
            candidates=req["candidates"],
            params=self.params,
            conn=self.conn,
            warn=lambda prompt, text: warnings.append(f"warning for {prompt!r}: {text}"),
        )
        return {"manifests": manifests, "warnings": warnings}

    def close(self) -> None:
        self.conn.close()


def _validated(body: dict) -> dict:
    """The request's fields with their types checked; anything else is a 400 naming the field."""
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
        raise StudioError(
            HTTPStatus.BAD_REQUEST, "the body must be a JSON object with a string 'prompt'", "bad_request"
        )
    unknown = set(body) - FIELDS
    if unknown:
        raise StudioError(
            HTTPStatus.BAD_REQUEST, f"unknown fields {sorted(unknown)}; known: {sorted(FIELDS)}", "bad_request"
        )
    req = {k: body.get(k) for k in FIELDS}
    req["seed"] = 0 if req["seed"] is None else req["seed"]
    req["n"] = 1 if req["n"] is None else req["n"]
    for key in ("seed", "n", "steps", "candidates"):
        if req[key] is not None and (not isinstance(req[key], int) or isinstance(req[key], bool)):
            raise StudioError(HTTPStatus.BAD_REQUEST, f"'{key}' must be an integer", "bad_request")
    if not 1 <= req["n"] <= MAX_ARTWORKS:
        raise StudioError(HTTPStatus.BAD_REQUEST, f"'n' must be 1 to {MAX_ARTWORKS}", "bad_request")
    if req["candidates"] is not None and not 1 <= req["candidates"] <= MAX_CANDIDATES:
        raise StudioError(HTTPStatus.BAD_REQUEST, f"'candidates' must be 1 to {MAX_CANDIDATES}", "bad_request")
    if req["steps"] is not None and req["steps"] < 1:
        raise StudioError(HTTPStatus.BAD_REQUEST, "'steps' must be at least 1", "bad_request")
    if req["guidance"] is not None and not isinstance(req["guidance"], (int, float)):
        raise StudioError(HTTPStatus.BAD_REQUEST, "'guidance' must be a number", "bad_request")
    if req["negative_prompt"] is not None and not isinstance(req["negative_prompt"], str):
        raise StudioError(HTTPStatus.BAD_REQUEST, "'negative_prompt' must be a string", "bad_request")
    if req["out"] is not None and not (isinstance(req["out"], str) and Path(req["out"]).is_absolute()):
        raise StudioError(HTTPStatus.BAD_REQUEST, "'out' must be an absolute folder path", "bad_request")
    return req


def _write_private(file: Path, value: dict) -> None:
    """Write `value` as JSON readable by its owner only, atomically (the token is never readable by others)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    tmp.replace(file)


class StudioServer(HTTPServer):
    """One request at a time (one model, one ledger connection, one thread): requests queue in the listen backlog."""

    def __init__(self, host: str, port: int, studio: Studio, token: str):
        super().__init__((host, port), Handler)
        self.studio, self.token = studio, token

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class Handler(BaseHTTPRequestHandler):
    server: StudioServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass

    def do_GET(self) -> None:
        if self.path != "/health":
            return self._send(HTTPStatus.NOT_FOUND, {"error": "unknown path; the studio serves /health and /generate"})
        champ = self.server.studio.champ
        self._send(HTTPStatus.OK, {"model": None if champ is None else {k: champ.info[k] for k in ("name", "version")}})

    def do_POST(self) -> None:
        from stages.generate import NoChampion, PromptRefused

        try:
            if self.path != "/generate":
                raise StudioError(HTTPStatus.NOT_FOUND, "unknown path; POST /generate", "bad_request")
            if not hmac.compare_digest(self.headers.get("X-Atelier-Token", ""), self.server.token):
                raise StudioError(HTTPStatus.FORBIDDEN, "missing or wrong X-Atelier-Token", "bad_request")
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                raise StudioError(HTTPStatus.BAD_REQUEST, f"the body must be 1 to {MAX_BODY} bytes", "bad_request")
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                raise StudioError(HTTPStatus.BAD_REQUEST, "the body is not JSON", "bad_request") from None
            self._send(HTTPStatus.OK, self.server.studio.generate(body))
        except StudioError as exc:
            self._send(exc.status, {"error": str(exc), "kind": exc.kind})
        except PromptRefused as exc:
            self._send(HTTPStatus.FORBIDDEN, {"error": str(exc), "kind": "refused"})
        except NoChampion as exc:
            self._send(HTTPStatus.CONFLICT, {"error": str(exc), "kind": "no_champion"})

    def _send(self, status: HTTPStatus, value: dict) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(host: str, port: int) -> int:
    """Load the champion, listen on loopback, write the discovery file, serve until Ctrl-C or SIGTERM."""
    from app.serving import serve_until_stopped

    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"atelier: studio serves loopback only (got --host {host}); it writes files as you", file=sys.stderr)
        return 2
    if (other := find()) is not None:
        print(
            f"atelier: a studio already runs for this checkout at {other['url']} (pid {other['pid']})", file=sys.stderr
        )
        return 2
    studio = Studio()
    token = secrets.token_urlsafe(32)
    server = StudioServer(host, port, studio, token)
    file = discovery_file()
    _write_private(
        file,
        {
            "url": server.url,
            "pid": os.getpid(),
            "token": token,
            "version": studio.champ.info["version"],
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    print(
        f"studio: {studio.champ.info['name']} version {studio.champ.info['version']} at {server.url}; "
        "`atelier generate` uses it (Ctrl-C to stop)",
        flush=True,
    )
    try:
        serve_until_stopped(server)
    finally:
        file.unlink(missing_ok=True)
        studio.close()
    return 0
