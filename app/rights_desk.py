"""`atelier rights`: the rights holders' desk (issue 29). Anyone may ask whether a work was used, and file a request
that, once verified and approved, reaches the next model.

Public pages and API (a server of its own, loopback unless told otherwise):
    GET  /                       the lookup form (a picture, or a creator's name, alias or profile URL)
    POST /lookup                 multipart form: `image` (a file) or `name`; the answer as a page with a filing form
    POST /api/lookup             the picture as the body (any image type), or GET /api/lookup?name=...: JSON
    POST /request                the filing form (one-time form token): kind, record ids, contact, message
    GET  /request/<id>           the request's page, by its unguessable link: its state, history, new version,
                                 withdrawn artworks, and how to prove control of the work
    POST /request/<id>/verify    fetch the token from the work's source and mark the request verified
    GET  /transparency, /api/transparency   counts by kind and state, median days from received to applied
The operator works from `atelier rights queue` (list, show, approve, reject, advance): approvals go through the
existing opt-out, takedown and erasure code; the next pipeline run retrains, and `advance` (run at the end of every
pipeline run) records the new version and withdraws the artworks that cite a taken-down work.

A lookup answers from the records: the exact sha256 and the perceptual hash over every ingested record of every
source (the takedown rules, duplicate groups included), or the creator identity rules of the licence stage. It says
which model versions trained on each work (and which is champion), how the work is credited, how many artworks cite
it as a nearest training image, and the requests already made about it (kind and state, never who). An uploaded
picture is never stored: only its hashes, and only when a request is filed.

Abuse: bodies over MAX_UPLOAD (pictures) or MAX_FORM (forms) get 413; a picture is decoded under the clean stage's
limits (a decompression bomb is a 400); lookups and filings are rate-limited per client address (429); every form
carries a one-time token bound to a cookie (a replayed or cross-site form is a 403); request links are 32 random
bytes and an unknown link is the same 404 as a malformed one; every value on every page is escaped.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import os
import re
import secrets
import sys
import threading
import time
from collections import deque
from html import escape
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from atelier import paths
from atelier.config import load_params
from provenance import ledger
from provenance import rights_requests as requests
from provenance.rights_requests import WorkIndex

MAX_UPLOAD = 20 * 1024 * 1024  # a picture to look up
MAX_FORM = 64 * 1024  # a filing form
MAX_DRAIN = 1024 * 1024
FORM_COOKIE = "atelier_form"
OPERATOR_COOKIE = "atelier_operator"
FORM_TTL_S = 3600
MAX_FORMS = 10_000  # one-time tokens held at once (the oldest expire first)
VERIFY_META = "atelier-rights"  # <meta name="atelier-rights" content="TOKEN"> at the work's source URL
VERIFY_WELL_KNOWN = "/.well-known/atelier-rights.txt"  # or this file on the source's host, holding the token
VERIFY_MAX_BYTES = 1024 * 1024
RECORD_ID = re.compile(r"[0-9a-f]{64}")
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{32}")  # secrets.token_urlsafe(24)
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
KIND_NAMES = {
    "opt_out": "opt out (no future training)",
    "takedown": "takedown (retrain without it, withdraw the artworks that cite it)",
    "erasure": "erasure of personal data",
    "credit": "credit correction",
}


class Refused(Exception):
    """An answer with a 4xx status and a short message; nothing was changed."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ---- what the records say about works ----


def _raw(columns: list[str]):
    from atelier.io import read_frame

    return read_frame(paths.RAW_RECORDS, columns)


def _credit(row: dict) -> str:
    """How the work is credited in the attribution lists (the licence stage's rule), or why it need not be."""
    from atelier.rights import decide, read_opt_outs

    decision = decide(row, load_params().license.policy, read_opt_outs(paths.OPT_OUT))
    who = row.get("creator") or "creator not recorded"
    where = row.get("source_url") or row.get("source_uri") or ""
    if decision.get("requires_attribution"):
        return f"credited as: {who}, {decision.get('license_spdx')}, {where}".rstrip(", ")
    return f"{decision.get('license_spdx') or 'licence unknown'}: no credit required ({who})"


def describe(conn, index: WorkIndex, rows: list[dict]) -> dict:
    """The answer about these raw records: per work its versions, credit, citing artworks and requests."""
    index = index.current(conn)
    works = []
    for row in rows:
        rid = row["record_id"]
        used = [
            {"version": v["version"], "champion": "champion" in v["aliases"], "aliases": v["aliases"]}
            for v in index.versions
            if v["record_ids"] is not None and rid in v["record_ids"]
        ]
        works.append(
            {
                "record_id": rid,
                "source": row.get("source"),
                "creator": row.get("creator") or None,
                "license": row.get("license_raw") or None,
                "source_url": row.get("source_url") or None,
                "match": row.get("match"),
                "credit": _credit(row) if used else "not credited: no model version trained on it",
                "versions": used,
                "champion": any(u["champion"] for u in used),
                "artworks_citing": len(index.citing.get(rid, [])),
                "quarantined_citing": len(index.quarantined.get(rid, [])),
                "requests": requests.about(conn, {rid}),
            }
        )
    unknown = [v["version"] for v in index.versions if v["record_ids"] is None]
    return {"model": index.model, "works": works, "versions_with_unknown_data": unknown}


def lookup_image(conn, index: WorkIndex, data: bytes) -> dict:
    """Works whose image is this picture (sha256, perceptual hash, duplicate groups); the picture is not kept."""
    from app import takedown

    hamming = load_params().clean.near_duplicate_hamming
    matches = takedown.matching_records(data, hamming)  # decodes under clean's limits: ValueError when it cannot
    raw = _raw(["record_id", "source", "source_uri", "creator", "license_raw", "license_url", "source_url"])
    full = raw[raw["record_id"].isin(set(matches["record_id"]))].merge(
        matches[["record_id", "source", "source_uri", "match"]], on=["record_id", "source", "source_uri"]
    )
    found = describe(conn, index, [_plain(r) for r in full.to_dict("records")])
    return found | {
        "query": {"kind": "image", "sha256": hashlib.sha256(data).hexdigest(), "phash": takedown.image_phash(data)},
        "searched": f"every ingested record's sha256 and perceptual hash (within {hamming} bits), in every source; "
        "a crop, a heavy edit or another photograph of the work may not match, so no match is not proof of no use",
    }


def lookup_name(conn, index: WorkIndex, name: str) -> dict:
    """Works of the named creator (any spelling, alias, handle or profile URL the opt-out list gives them)."""
    from atelier.rights import creator_matches, read_opt_outs

    name = " ".join(str(name).split())
    if not 2 <= len(name) <= 200:
        raise Refused(HTTPStatus.BAD_REQUEST, "a creator's name, alias or profile URL of 2 to 200 characters")
    raw = _raw(["record_id", "source", "source_uri", "creator", "license_raw", "license_url", "source_url"])
    hits = creator_matches(raw.to_dict("records"), name, read_opt_outs(paths.OPT_OUT))
    rows = [_plain(r) | {"match": "creator"} for r in raw[hits].to_dict("records")]
    return describe(conn, index, rows) | {"query": {"kind": "name", "name": name}}


def lookup_bundle(folder: Path, data: bytes | None = None, name: str | None = None, hamming: int = 4) -> dict:
    """The lookup from a published bundle alone (an outsider's copy, no workspace): the works of every training set
    whose record id is the picture's sha256 or whose perceptual hash is within `hamming` bits of it, or whose creator
    is `name` (the same normalisation as the licence stage); each with the model versions that trained on it."""
    from app import takedown
    from atelier.rights import normalise_name

    folder = Path(folder)
    versions: dict[str, list[str]] = {}  # dataset md5 -> versions trained on it
    for cred in sorted(folder.glob("models/*/v*/model-credential.json")):
        payload = json.loads(cred.read_text(encoding="utf-8"))["payload"]
        md5 = payload["training_data"]["dvc_md5"]
        versions.setdefault(md5, []).append(cred.parent.name.removeprefix("v"))
    if data is not None:
        sha, query = hashlib.sha256(data).hexdigest(), int(takedown.image_phash(data), 16)
    wanted = normalise_name(name) if name is not None else None
    found: dict[str, dict] = {}
    for works in sorted(folder.glob("datasets/*/training-works.jsonl")):
        md5 = works.parent.name
        for line in works.read_text(encoding="utf-8").splitlines():
            w = json.loads(line)
            if data is not None:
                bits = bin(int(w["phash"], 16) ^ query).count("1") if w.get("phash") else 99
                match = "the same bytes" if w["record_id"] == sha else f"perceptual hash within {bits} bits"
                if w["record_id"] != sha and bits > hamming:
                    continue
            elif not w.get("creator") or normalise_name(w["creator"]) != wanted:
                continue
            else:
                match = "creator"
            entry = found.setdefault(w["record_id"], w | {"match": match, "versions": []})
            entry["versions"] = sorted(set(entry["versions"]) | set(versions.get(md5, [])), key=int)
    return {
        "query": {"kind": "image" if data is not None else "name"},
        "works": list(found.values()),
        "searched": f"the training works of every dataset in {folder.name} by sha256 and perceptual hash (within "
        f"{hamming} bits)"
        if data is not None
        else f"the training works of every dataset in {folder.name} by creator",
    }


def _plain(row: dict) -> dict:
    return {k: (None if v != v else v) for k, v in row.items()}  # NaN -> None


def format_lookup(found: dict) -> str:
    """The lookup's answer as plain text."""
    if not found["works"]:
        said = found.get("searched", "the ingested records by creator")
        return f"no match found; searched {said}" if found["query"]["kind"] == "image" else "no work of that creator"
    lines = [f"{len(found['works'])} record(s) of model {found['model']}:"]
    for w in found["works"]:
        used = ", ".join(f"v{v['version']}" + (" (champion)" if v["champion"] else "") for v in w["versions"])
        lines.append(
            f"  {w['record_id'][:16]} {w['creator'] or 'creator not recorded'} ({w['license'] or 'licence unknown'}): "
            f"trained {used or 'no version'}; {w['artworks_citing']} artworks cite it; {w['credit']}"
        )
        lines += [f"    request: {r['kind']} {r['state']} (filed {r['filed']})" for r in w["requests"]]
    return "\n".join(lines)


# ---- proof of control, and the operator's decisions ----


def source_urls(record_ids: list[str]) -> list[str]:
    """The source URLs the records name (where a requester proves control)."""
    raw = _raw(["record_id", "source_url"])
    return sorted({u for u in raw[raw["record_id"].isin(set(record_ids))]["source_url"] if isinstance(u, str) and u})


def verify(request: dict, client=None) -> tuple[bool, str]:
    """Whether the request's token is at a source URL one of its records names: in a <meta name="atelier-rights">
    of the page, or in /.well-known/atelier-rights.txt on its host. Fetched with the URL sources' client (user
    agent, timeouts, retries); redirects followed by hand and only on the same host."""
    from atelier.config import HttpParams
    from atelier.sources.urls import Client, url_problem
    from atelier.sources.urls import Refused as FetchRefused

    client = client or Client(HttpParams())
    token = request["verify_token"]
    tried = []
    for url in source_urls(request["record_ids"]):
        if url_problem(url):
            tried.append(f"{url}: {url_problem(url)}")
            continue
        parts = urlsplit(url)
        for candidate, how in ((url, "meta"), (f"{parts.scheme}://{parts.netloc}{VERIFY_WELL_KNOWN}", "file")):
            try:
                body = _fetch_same_host(client, candidate, parts.hostname)
            except FetchRefused as exc:
                tried.append(f"{candidate}: {exc}")
                continue
            text = body.decode("utf-8", "replace")
            if how == "meta" and _meta_token(text) == token or how == "file" and token in text.split():
                return True, f"token found at {candidate}"
            tried.append(f"{candidate}: no token")
    return False, "; ".join(tried) or "the records name no source URL: an operator decides"


def _fetch_same_host(client, url: str, host: str | None) -> bytes:
    from atelier.sources.urls import REDIRECTS
    from atelier.sources.urls import Refused as FetchRefused

    for _ in range(5):
        response = client.get(url, VERIFY_MAX_BYTES)
        if response.status in REDIRECTS:
            target = response.headers.get("Location") or ""
            from urllib.parse import urljoin

            url = urljoin(url, target)
            if urlsplit(url).hostname != host or urlsplit(url).scheme not in ("http", "https"):
                raise FetchRefused(f"redirected off the work's host ({host}) to {url}")
            continue
        if response.status != 200:
            raise FetchRefused(f"HTTP {response.status}")
        if response.declared_too_large or len(response.body) > VERIFY_MAX_BYTES:
            raise FetchRefused("too large")
        return response.body
    raise FetchRefused("too many redirects")


def _meta_token(html: str) -> str | None:
    for tag in re.findall(r"<meta\b[^>]*>", html, flags=re.IGNORECASE):
        attrs = dict(
            (k.lower(), v1 or v2) for k, v1, v2 in re.findall(r'([A-Za-z-]+)\s*=\s*(?:"([^"]*)"|\'([^\']*)\')', tag)
        )
        if attrs.get("name", "").lower() == VERIFY_META:
            return attrs.get("content", "").strip()
    return None


def apply(conn, request: dict, by: str, reason: str) -> dict:
    """Approve `request` and apply it through the existing code (opt-out list, takedown marks, erasure); returns
    the request, now applied (a credit correction stays approved until the operator marks it applied by hand)."""
    from app import forget, takedown

    request = requests.move(conn, request["id"], "approved", by, reason)
    if request["kind"] == "credit":
        return request
    why = f"rights request {request['ref']} ({request['kind']}): {reason}".strip()
    if request["kind"] == "erasure":
        for rid in request["record_ids"]:
            forget.forget(rid, reason=why, by=by)
    else:
        for rid in request["record_ids"]:
            if request["kind"] == "takedown":
                takedown.takedown(rid, reason=why)
            else:
                takedown.add_opt_out("record_id", rid, why)
        if request["creator"] and not request["record_ids"]:
            takedown.add_opt_out("creator", request["creator"], why)
    index = WorkIndex(load_params().registry.model_name).current(conn)
    facts = {
        "versions_at_apply": [v["version"] for v in index.versions],
        "citing_at_apply": sorted({a["id"] for rid in request["record_ids"] for a in index.citing.get(rid, [])}),
    }
    return requests.move(conn, request["id"], "applied", by, "policy updated; the next run retrains", facts)


# ---- the HTTP face ----


class RateLimit:
    """At most `limit` events per `window_s` per key (a client address), in a sliding window."""

    def __init__(self, limit: int, window_s: float):
        self.limit, self.window_s = limit, window_s
        self.lock = threading.Lock()
        self.events: dict[str, deque] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self.lock:
            q = self.events.setdefault(key, deque())
            while q and now - q[0] > self.window_s:
                q.popleft()
            if len(q) >= self.limit:
                return False
            q.append(now)
            return True


class RightsServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, lookups_per_min: int = 120, filings_per_hour: int = 30):
        self.index = WorkIndex(load_params().registry.model_name)
        self.forms: dict[str, tuple[str, float]] = {}  # one-time form token -> (cookie, issued at)
        self.forms_lock = threading.Lock()
        self.lookups = RateLimit(lookups_per_min, 60)
        self.filings = RateLimit(filings_per_hour, 3600)
        self.operator_token = secrets.token_urlsafe(32)  # the operator's pages: `Authorization: Bearer <token>`
        conn = ledger.open_ledger()  # created once, with the requests table
        conn.close()
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def issue_form(self, cookie: str) -> str:
        token = secrets.token_urlsafe(16)
        with self.forms_lock:
            if len(self.forms) >= MAX_FORMS:
                for old in sorted(self.forms, key=lambda t: self.forms[t][1])[: MAX_FORMS // 10]:
                    del self.forms[old]
            self.forms[token] = (cookie, time.monotonic())
        return token

    def use_form(self, token: str, cookie: str | None) -> bool:
        with self.forms_lock:
            found = self.forms.pop(token, None)
        return (
            found is not None
            and cookie is not None
            and secrets.compare_digest(found[0], cookie)
            and (time.monotonic() - found[1] < FORM_TTL_S)
        )


class Handler(BaseHTTPRequestHandler):
    server: RightsServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (no addresses are logged)
        pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        self._set_cookie = None
        try:
            status, ctype, body, headers = self._route(method)
        except Refused as exc:
            status, ctype, headers = exc.status, "text/html; charset=utf-8", {}
            if self.path.startswith("/api/"):
                ctype, body = "application/json", json.dumps({"error": exc.message}).encode()
            else:
                body = _page("Not done", f'<p class="error">{escape(exc.message)}</p><p><a href="/">Back</a></p>')
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "same-origin")  # no-referrer would make a browser send Origin: null
        self.send_header("Cache-Control", "no-store")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method: str):
        parts = urlsplit(self.path)
        path, query = parts.path, dict(parse_qsl(parts.query))
        if method == "GET" and path == "/":
            return self._html(_home(self._form()))
        if method == "GET" and path == "/transparency":
            return self._html(_transparency_page(self._with(requests.transparency)))
        if method == "GET" and path == "/api/transparency":
            return self._json(self._with(requests.transparency))
        if path == "/api/lookup":
            self._limit(self.server.lookups, "lookups")
            if method == "GET":
                return self._json(self._with(lambda c: lookup_name(c, self.server.index, query.get("name", ""))))
            data = self._body(MAX_UPLOAD)
            return self._json(self._with(lambda c: self._lookup_image(c, data)))
        if method == "POST" and path == "/lookup":
            self._limit(self.server.lookups, "lookups")
            fields = self._multipart()
            image, name = fields.get("image"), fields.get("name")
            if image:
                found = self._with(lambda c: self._lookup_image(c, image))
            elif name:
                found = self._with(lambda c: lookup_name(c, self.server.index, name.decode("utf-8", "replace")))
            else:
                raise Refused(HTTPStatus.BAD_REQUEST, "send a picture or a creator's name")
            return self._html(_results(found, self._form()))
        if method == "POST" and path == "/request":
            return self._file()
        if path in ("/operator", "/operator/decide"):
            return self._operator(method, path, query.get("token"))
        match = re.fullmatch(r"/request/([^/]+)(/verify)?", path)
        if match:
            request_id = match.group(1)
            if not REQUEST_ID.fullmatch(request_id):
                raise Refused(HTTPStatus.NOT_FOUND, "no such request")
            if method == "GET" and not match.group(2):
                found = self._with(lambda c: requests.get(c, request_id))
                if found is None:
                    raise Refused(HTTPStatus.NOT_FOUND, "no such request")
                return self._html(_request_page(found, self._form(), fresh=query.get("new") == "1"))
            if method == "POST" and match.group(2):
                return self._verify(request_id)
        raise Refused(HTTPStatus.NOT_FOUND, "no such page")

    # -- helpers --

    def _with(self, fn):
        conn = ledger.open_ledger()
        try:
            return fn(conn)
        finally:
            conn.close()

    def _lookup_image(self, conn, data: bytes) -> dict:
        try:
            return lookup_image(conn, self.server.index, data)
        except ValueError as exc:
            raise Refused(HTTPStatus.BAD_REQUEST, str(exc)) from None

    def _limit(self, limit: RateLimit, what: str) -> None:
        if not limit.allow(self.client_address[0]):
            raise Refused(HTTPStatus.TOO_MANY_REQUESTS, f"too many {what} from your address; wait a while")

    def _body(self, limit: int) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise Refused(HTTPStatus.BAD_REQUEST, "a bad Content-Length") from None
        if length > limit:
            if length <= MAX_DRAIN:
                self.rfile.read(length)
            self.close_connection = True
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {limit} bytes")
        if length <= 0:
            raise Refused(HTTPStatus.BAD_REQUEST, "an empty body")
        return self.rfile.read(length)

    def _multipart(self) -> dict[str, bytes]:
        ctype = self.headers.get("Content-Type") or ""
        if not ctype.startswith("multipart/form-data"):
            raise Refused(HTTPStatus.BAD_REQUEST, "the lookup form is sent as multipart/form-data")
        data = self._body(MAX_UPLOAD)
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + data
        )
        if not message.is_multipart():
            raise Refused(HTTPStatus.BAD_REQUEST, "a malformed multipart body")
        fields = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name in ("image", "name") and name not in fields:
                fields[name] = part.get_payload(decode=True) or b""
        return fields

    def _cookie(self) -> str | None:
        try:
            jar = SimpleCookie(self.headers.get("Cookie") or "")
        except CookieError:
            return None
        found = jar.get(FORM_COOKIE)
        return found.value if found and re.fullmatch(r"[A-Za-z0-9_-]{22,64}", found.value) else None

    def _form(self) -> str:
        cookie = self._cookie()
        if cookie is None:
            cookie = secrets.token_urlsafe(24)
            self._set_cookie = f"{FORM_COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/"
        return self.server.issue_form(cookie)

    def _html(self, text: str):
        headers = {}
        if getattr(self, "_set_cookie", None):
            headers["Set-Cookie"] = self._set_cookie
        return HTTPStatus.OK, "text/html; charset=utf-8", text.encode(), headers

    def _json(self, value: dict):
        return HTTPStatus.OK, "application/json", json.dumps(value, indent=2).encode(), {}

    def _checked_form(self) -> dict[str, str]:
        origin = self.headers.get("Origin")
        if origin and origin != self.server.url and urlsplit(origin).netloc != self.headers.get("Host"):
            raise Refused(HTTPStatus.FORBIDDEN, "a form from another site")
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise Refused(HTTPStatus.BAD_REQUEST, "the form is sent as application/x-www-form-urlencoded")
        try:
            pairs = parse_qsl(self._body(MAX_FORM).decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise Refused(HTTPStatus.BAD_REQUEST, "a malformed form") from None
        fields: dict[str, str] = {}
        for k, v in pairs:
            if k != "record_id" and k in fields:
                raise Refused(HTTPStatus.BAD_REQUEST, f"the field {k} appears twice")
            fields[k] = fields[k] + "\n" + v if k == "record_id" and k in fields else v
        if not self.server.use_form(fields.get("form", ""), self._cookie()):
            raise Refused(HTTPStatus.FORBIDDEN, "this form has expired or was already sent; load the page again")
        return fields

    def _file(self):
        fields = self._checked_form()
        self._limit(self.server.filings, "requests")
        known = {"form", "kind", "record_id", "contact", "message", "creator", "image_sha256", "image_phash"}
        if set(fields) - known:
            raise Refused(HTTPStatus.BAD_REQUEST, f"unknown fields {sorted(set(fields) - known)}")
        ids = [i for i in fields.get("record_id", "").split("\n") if i]
        if any(not RECORD_ID.fullmatch(i) for i in ids):
            raise Refused(HTTPStatus.BAD_REQUEST, "a record id is 64 hex characters")
        for key, pattern in (("image_sha256", r"[0-9a-f]{64}"), ("image_phash", r"[0-9a-f]{16}")):
            if fields.get(key) and not re.fullmatch(pattern, fields[key]):
                raise Refused(HTTPStatus.BAD_REQUEST, f"a malformed {key}")

        def filed(conn):
            raw = set(_raw(["record_id"])["record_id"])
            if any(i not in raw for i in ids):
                raise Refused(HTTPStatus.BAD_REQUEST, "a record id that is not in the records; look the work up first")
            try:
                return requests.file(
                    conn,
                    fields.get("kind", ""),
                    ids,
                    fields.get("contact", ""),
                    fields.get("message", ""),
                    creator=fields.get("creator") or None,
                    image_sha256=fields.get("image_sha256") or None,
                    image_phash=fields.get("image_phash") or None,
                )
            except requests.RequestError as exc:
                raise Refused(HTTPStatus.BAD_REQUEST, str(exc)) from None

        made = self._with(filed)
        return HTTPStatus.SEE_OTHER, "text/plain", b"filed", {"Location": f"/request/{made['id']}?new=1"}

    def _operator(self, method: str, path: str, in_url: str | None):
        """The operator's queue as a page: only with the server's operator token (kept 0600 in
        .atelier/rights-operator.json), as `Authorization: Bearer <token>`, or opened once as /operator?token=...
        (which sets an HttpOnly cookie and drops the token from the address); the same decisions as the CLI's."""
        token = self.server.operator_token
        if in_url is not None and secrets.compare_digest(in_url, token):
            cookie = f"{OPERATOR_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/operator"
            return HTTPStatus.SEE_OTHER, "text/plain", b"", {"Location": "/operator", "Set-Cookie": cookie}
        try:
            jar = SimpleCookie(self.headers.get("Cookie") or "")
        except CookieError:
            jar = SimpleCookie()
        given = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip() or (
            jar[OPERATOR_COOKIE].value if OPERATOR_COOKIE in jar else ""
        )
        if not given or not secrets.compare_digest(given, token):
            raise Refused(HTTPStatus.NOT_FOUND, "no such page")  # the operator's pages do not admit they exist
        if method == "GET" and path == "/operator":
            return self._html(_operator_page(self._with(requests.listed), self._form()))
        if method != "POST":
            raise Refused(HTTPStatus.NOT_FOUND, "no such page")
        fields = self._checked_form()
        ref, action, reason = fields.get("ref", ""), fields.get("action"), fields.get("reason", "")

        def decided(conn):
            found = requests.by_ref(conn, ref)
            if found is None:
                raise Refused(HTTPStatus.NOT_FOUND, "no such request")
            try:
                if action == "approve":
                    return apply(conn, found, "operator (page)", reason)
                if action == "reject":
                    return requests.move(conn, found["id"], "rejected", "operator (page)", reason)
            except requests.RequestError as exc:
                raise Refused(HTTPStatus.CONFLICT, str(exc)) from None
            raise Refused(HTTPStatus.BAD_REQUEST, "approve or reject")

        self._with(decided)
        return HTTPStatus.SEE_OTHER, "text/plain", b"decided", {"Location": "/operator"}

    def _verify(self, request_id: str):
        self._checked_form()
        self._limit(self.server.filings, "requests")

        def checked(conn):
            found = requests.get(conn, request_id)
            if found is None:
                raise Refused(HTTPStatus.NOT_FOUND, "no such request")
            if found["state"] != "received":
                return found
            ok, detail = verify(found)
            return (
                requests.move(conn, request_id, "verified", "verification", detail)
                if ok
                else found | {"verify_failed": detail}
            )

        found = self._with(checked)
        if found.get("verify_failed"):
            raise Refused(HTTPStatus.CONFLICT, f"not verified: {found['verify_failed']}")
        return HTTPStatus.SEE_OTHER, "text/plain", b"verified", {"Location": f"/request/{request_id}"}


# ---- pages ----

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:920px;background:#f6f5f2;
color:#222;padding:0 1rem} nav a{margin-right:1rem} .box{background:#fff;border-radius:8px;padding:1rem 1.3rem;
box-shadow:0 1px 3px #0002;margin:1rem 0} .error{color:#922b21} table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e6e6e6;vertical-align:top} .mono{font-family:
monospace;word-break:break-all} .state{font-weight:700;text-transform:uppercase;color:#1f4e79} label{display:block;
margin:.5rem 0 .2rem} input[type=text],textarea,select{width:100%;box-sizing:border-box;padding:.4rem}
button{margin-top:.7rem;padding:.45rem 1.1rem;border-radius:6px;border:1px solid #1f4e79;background:#1f4e79;color:#fff}
.champion{color:#1e7b45;font-weight:700} .muted{color:#666}
"""


def _page(title: str, body: str) -> bytes:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} - Atelier rights desk'
        f'</title><style>{STYLE}</style></head><body><nav><a href="/">Look up a work</a><a href="/transparency">'
        f"Transparency report</a></nav><h1>{escape(title)}</h1>{body}</body></html>"
    ).encode()


def _home(form: str) -> str:
    return _page(
        "Was my work used?",
        '<div class="box"><p>Upload a picture of your work, or give your name, an alias or a profile URL. We answer '
        "from our records: which datasets and model versions used it, how it is credited, and how many artworks cite "
        "it. The picture is not stored.</p>"
        '<form method="post" action="/lookup" enctype="multipart/form-data">'
        '<label for="image">A picture of the work</label><input type="file" id="image" name="image" accept="image/*">'
        '<label for="name">or a creator\'s name, alias or profile URL</label>'
        '<input type="text" id="name" name="name" maxlength="200">'
        f'<input type="hidden" name="form" value="{escape(form)}"><button type="submit">Look up</button></form></div>',
    ).decode()


def _results(found: dict, form: str) -> str:
    works = found["works"]
    query = found["query"]
    if not works:
        said = (
            f"No match found. Searched: {escape(found.get('searched', 'the ingested records by creator'))}."
            if query["kind"] == "image"
            else f"No work of {escape(query['name'])} is in our records."
        )
        return _page("No match found", f'<div class="box"><p id="answer">{said}</p></div>').decode()
    rows = "".join(
        f'<tr><td class="mono">{escape(w["record_id"][:16])}</td><td>{escape(str(w["creator"] or "not recorded"))}'
        f"</td><td>{escape(str(w['license'] or 'unknown'))}</td><td>"
        + (
            ", ".join(
                f"version {escape(v['version'])}"
                + (' <span class="champion">(champion)</span>' if v["champion"] else "")
                for v in w["versions"]
            )
            or "no model version"
        )
        + f"</td><td>{escape(w['credit'])}</td><td>{int(w['artworks_citing'])}</td><td>"
        + (", ".join(f"{escape(r['kind'])}: {escape(r['state'])}" for r in w["requests"]) or "none")
        + "</td></tr>"
        for w in works
    )
    hidden = "".join(f'<input type="hidden" name="record_id" value="{escape(w["record_id"])}">' for w in works)
    if query["kind"] == "image":
        hidden += f'<input type="hidden" name="image_sha256" value="{escape(query["sha256"])}">'
        hidden += f'<input type="hidden" name="image_phash" value="{escape(query["phash"])}">'
    options = "".join(f'<option value="{k}">{escape(v)}</option>' for k, v in KIND_NAMES.items())
    return _page(
        "Your work in our records",
        f'<div class="box" id="answer"><p>{len(works)} record(s) of model {escape(found["model"])}:</p>'
        "<table><tr><th>Record</th><th>Creator</th><th>Licence</th><th>Trained</th><th>Credit</th>"
        f"<th>Artworks citing it</th><th>Requests</th></tr>{rows}</table></div>"
        '<div class="box"><h2>Make a request about these works</h2>'
        '<form method="post" action="/request">'
        f'<label for="kind">What you ask</label><select id="kind" name="kind">{options}</select>'
        '<label for="contact">How to reach you (never published)</label>'
        '<input type="text" id="contact" name="contact" maxlength="320" required>'
        '<label for="message">Anything we should know</label><textarea id="message" name="message" maxlength="4000">'
        f'</textarea>{hidden}<input type="hidden" name="form" value="{escape(form)}">'
        '<button type="submit">File the request</button></form></div>',
    ).decode()


def _request_page(r: dict, form: str, fresh: bool) -> str:
    history = "".join(
        f'<tr><td>{escape(h["at"])}</td><td class="state">{escape(h["state"])}</td><td>{escape(h["reason"])}</td></tr>'
        for h in r["history"]
    )
    facts = r["facts"]
    outcome = ""
    if facts.get("retrained_version"):
        outcome += (
            f'<p id="retrained">Model version {escape(str(facts["retrained_version"]))} was trained without it.</p>'
        )
    if "withdrawn_artworks" in facts:
        listed = ", ".join(escape(a) for a in facts["withdrawn_artworks"]) or "none cited it"
        outcome += f'<p id="withdrawn">Artworks withdrawn: {listed}</p>'
    prove = ""
    if r["state"] == "received":
        urls = "".join(f'<li class="mono">{escape(u)}</li>' for u in source_urls(r["record_ids"])) or (
            "<li>the records name no source URL: an operator will decide</li>"
        )
        prove = (
            '<div class="box"><h2>Prove that the work is yours</h2><p>Place this token at the work\'s source, as '
            f'<code>&lt;meta name="{VERIFY_META}" content="{escape(r["verify_token"])}"&gt;</code> in the page, or '
            f"as the content of <code>{VERIFY_WELL_KNOWN}</code> on its host:</p>"
            f'<p class="mono" id="token">{escape(r["verify_token"])}</p><ul>{urls}</ul>'
            f'<form method="post" action="/request/{escape(r["id"])}/verify">'
            f'<input type="hidden" name="form" value="{escape(form)}"><button type="submit">Check now</button></form>'
            '<p class="muted">Without it, an operator decides; an unverified request never changes a model by '
            "itself.</p></div>"
        )
    note = (
        '<p class="box">Filed. Keep this page\'s address: it is the only way to follow the request.</p>'
        if fresh
        else ""
    )
    return _page(
        f"Request {r['ref']}",
        note + f'<div class="box"><p>{escape(KIND_NAMES[r["kind"]])} for {len(r["record_ids"])} work(s). State: '
        f'<span class="state" id="state">{escape(r["state"])}</span></p>{outcome}'
        f"<table><tr><th>When</th><th>State</th><th>Why</th></tr>{history}</table></div>{prove}",
    ).decode()


def _operator_page(listed: list[dict], form: str) -> str:
    rows = "".join(
        f'<tr><td class="mono">{escape(r["ref"])}</td><td>{escape(r["kind"])}</td><td class="state">'
        f"{escape(r['state'])}</td><td>{len(r['record_ids'])}</td><td>{escape(r['contact'])}</td>"
        f"<td>{escape(r['message'][:300])}</td><td>"
        + (
            f'<form method="post" action="/operator/decide"><input type="hidden" name="form" value="{escape(form)}">'
            f'<input type="hidden" name="ref" value="{escape(r["ref"])}"><input type="text" name="reason" '
            'placeholder="reason" maxlength="500"><button name="action" value="approve">approve</button>'
            '<button name="action" value="reject">reject</button></form>'
            if r["state"] in ("received", "verified")
            else ""
        )
        + "</td></tr>"
        for r in listed
    )
    return _page(
        "Operator's queue",
        '<div class="box"><p>One form per page load: reload after each decision.</p><table><tr><th>Ref</th>'
        f"<th>Kind</th><th>State</th><th>Works</th><th>Contact</th><th>Message</th><th></th></tr>{rows}</table></div>",
    ).decode()


def _transparency_page(t: dict) -> str:
    from provenance.rights_requests import KINDS, STATES

    head = "".join(f"<th>{escape(s)}</th>" for s in STATES)
    rows = "".join(
        f"<tr><td>{escape(k)}</td>" + "".join(f"<td>{t['by_kind_and_state'][k][s]}</td>" for s in STATES) + "</tr>"
        for k in KINDS
    )
    median = t["median_days_received_to_applied"]
    return _page(
        "Transparency report",
        f'<div class="box"><p>{t["requests"]} requests. Median time from received to applied: '
        f"{'none applied yet' if median is None else f'{median:.2f} days'}.</p>"
        f"<table><tr><th>kind</th>{head}</tr>{rows}</table></div>",
    ).decode()


def make_server(host: str = "127.0.0.1", port: int = 0, **limits) -> RightsServer:
    return RightsServer(host, port, **limits)


def main(host: str, port: int, public: bool) -> int:
    from app.serving import serve_until_stopped

    if host not in ("127.0.0.1", "localhost", "::1") and not public:
        print(f"atelier: rights serve binds loopback unless --public (got --host {host})", file=sys.stderr)
        return 2
    server = make_server(host, port)
    keep = paths.ROOT / ".atelier" / "rights-operator.json"
    keep.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": server.url + "/operator", "token": server.operator_token}, f)
    print(
        f"rights desk on {server.url}/ (Ctrl-C stops); the operator's queue: {server.url}/operator with the bearer "
        f"token in {paths.relative(keep)}",
        flush=True,
    )
    serve_until_stopped(server)
    return 0
