"""The rights holders' desk (issue 29): lookups by picture and by name over HTTP, requests with their lifecycle in the
ledger, proof of control by a token at the work's source (a local test host), the operator's queue, the transparency
report, hostile inputs, and many clients at once.

The workspace is the one of tests/test_takedown_image.py (raw and clean tables, a SQLite registry with two versions,
a ledger with artworks citing the works), with source URLs on a local test host. The rights desk runs in this
process on a free loopback port; the operator's commands run through the CLI's entry point."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from app import cli, rights_desk
from atelier import lineage, paths
from provenance import ledger, publiclog
from provenance import rights_requests as requests
from registry import tracking
from tests.browser import ARTIFACTS, webdriver_session
from tests.test_review import _click_and_wait
from tests.test_takedown_image import NAME, encoded, picture, works  # noqa: F401 (the fixture)


class SourceHost:
    """The works' source site: pages that the test fills with a verification token, or not."""

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                body = pages.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def desk(works):  # noqa: F811 (the fixture imported above)
    host = SourceHost()
    raw = pd.read_parquet(paths.RAW_RECORDS)
    raw["source_url"] = [f"{host.url}/works/{Path(u).stem}-{s}.html" for u, s in zip(raw["source_uri"], raw["source"])]
    raw["license_url"] = None
    raw.to_parquet(paths.RAW_RECORDS)
    server = rights_desk.make_server("127.0.0.1", 0, lookups_per_min=10_000, filings_per_hour=10_000)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield works | {"server": server, "host": host, "url": server.url}
    server.shutdown()
    server.server_close()
    host.stop()


class Client:
    """A browser's worth of HTTP: keeps the form cookie, reads the one-time form token from each page."""

    def __init__(self, base: str):
        self.base, self.cookie, self.jar = base, None, {}

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        if self.cookie:
            req.add_header("Cookie", self.cookie)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(req, timeout=60) as resp:
                status, got, text = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            status, got, text = exc.code, exc.headers, exc.read()
        for header in got.get_all("Set-Cookie") or []:
            self.jar.update({k: m.value for k, m in SimpleCookie(header).items()})
        self.cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items()) or None
        return status, got, text.decode("utf-8", "replace")

    def form_token(self, page: str) -> str:
        return page.split('name="form" value="', 1)[1].split('"', 1)[0]

    def lookup(self, image: bytes | None = None, name: str | None = None) -> tuple[int, str]:
        _, _, home = self.call("GET", "/")
        boundary = "atelierboundary"
        parts = [("form", self.form_token(home).encode(), None)]
        if image is not None:
            parts.append(("image", image, "work.png"))
        if name is not None:
            parts.append(("name", name.encode(), None))
        body = b""
        for key, value, filename in parts:
            disposition = f'form-data; name="{key}"' + (f'; filename="{filename}"' if filename else "")
            body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        status, _, page = self.call(
            "POST", "/lookup", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        return status, page

    def post_form(self, path: str, fields: list[tuple[str, str]], headers: dict | None = None):
        body = urllib.parse.urlencode(fields).encode()
        return self.call("POST", path, body, {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})

    def file(self, page: str, kind: str = "takedown", contact: str = "ana@example.org", **extra) -> tuple[int, str]:
        ids = page.split('name="record_id" value="')[1:]
        fields = [("form", self.form_token(page)), ("kind", kind), ("contact", contact), ("message", "my work")]
        fields += [("record_id", i.split('"', 1)[0]) for i in ids]
        fields += list(extra.items())
        status, got, _ = self.post_form("/request", fields)
        return status, got.get("Location", "")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


def api(base: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(base + path, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def declared_only(base: str, path: str, length: int) -> int:
    """The status of a POST that declares a body of `length` bytes and sends none: answered from the headers."""
    import http.client

    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def opt_outs() -> str:
    return paths.OPT_OUT.read_text() if paths.OPT_OUT.exists() else ""


def register_retrained_version(without: str) -> str:
    """What the next pipeline run does after an approval: a new registered version whose recorded training set (in
    the DVC cache, by md5) lacks the work. Returns its version."""
    clean = pd.read_parquet(paths.CLEAN_RECORDS)
    trained = clean[clean["record_id"] != without]
    md5 = hashlib.md5(b"retrained").hexdigest()
    lineage.cache_path(md5).parent.mkdir(parents=True, exist_ok=True)
    trained.to_parquet(lineage.cache_path(md5))
    c = tracking.client()
    v1 = tracking.get_version(NAME, "1")
    mv = c.create_model_version(NAME, v1["source"], run_id=v1["run_id"])
    c.set_model_version_tag(NAME, mv.version, "dataset_md5", md5)
    return str(mv.version)


def test_lookups_find_the_work_its_versions_and_citing_artworks_and_nothing_for_a_foreign_picture(desk):
    copy = desk["copy"].read_bytes()  # the rights holder's resized JPEG
    status, found = api(desk["url"], "/api/lookup", copy)
    assert status == 200
    by_id = {w["record_id"]: w for w in found["works"]}
    assert set(by_id) == {desk["ana"], desk["scrape"]}
    ana = by_id[desk["ana"]]
    assert [(v["version"], v["champion"]) for v in ana["versions"]] == [("1", True)]
    assert ana["artworks_citing"] == 1 and ana["quarantined_citing"] == 1 and ana["requests"] == []
    assert ana["credit"].startswith("credited as") or "no credit required" in ana["credit"]
    status, by_name = api(desk["url"], "/api/lookup?name=" + urllib.parse.quote("ANA  ruiz"))
    assert status == 200 and desk["ana"] in {w["record_id"] for w in by_name["works"]}
    foreign = encoded(picture(77), "PNG")
    status, nothing = api(desk["url"], "/api/lookup", foreign)
    assert status == 200 and nothing["works"] == [] and "not proof" in nothing["searched"]
    assert not requests.listed(ledger.open_ledger())  # a lookup files nothing and keeps no picture


def test_a_verified_takedown_is_approved_applied_retrained_and_its_artworks_withdrawn(desk, capsys):
    browser = Client(desk["url"])
    status, page = browser.lookup(image=desk["copy"].read_bytes())
    assert status == 200 and "champion" in page and desk["ana"][:16] in page
    status, location = browser.file(page)
    assert status == 303 and location.startswith("/request/")
    _, _, request_page = browser.call("GET", location)
    token = request_page.split('id="token">', 1)[1].split("<", 1)[0]
    assert requests.TOKEN_PREFIX in token and "Prove that the work is yours" in request_page
    link = location.split("?")[0]

    # the rights holder places the token on the source page of one of the works
    desk["host"].pages["/works/ana-museum.html"] = (
        f'<html><head><meta name="atelier-rights" content="{token}">'.encode()
    )
    status, _, _ = browser.post_form(f"{link}/verify", [("form", browser.form_token(request_page))])
    assert status == 303
    _, _, verified = browser.call("GET", link)
    assert 'id="state">verified' in verified

    conn = ledger.open_ledger()
    (request,) = requests.listed(conn)
    assert cli.main(["rights", "queue", "approve", request["ref"], "--reason", "proved", "--by", "operator-1"]) == 0
    assert f"{request['ref']}: applied" in capsys.readouterr().out
    assert desk["ana"] in opt_outs() and "takedown" in tracking.get_version(NAME, "1")["tags"]

    new = register_retrained_version(without=desk["ana"])
    assert cli.main(["rights", "queue", "advance"]) == 0
    out = capsys.readouterr().out
    assert "retrained" in out and "withdrawn" in out
    _, _, done = browser.call("GET", link)
    assert 'id="state">withdrawn' in done and f"version {new} was trained without it" in done
    assert "art1-ana" in done.split('id="withdrawn"', 1)[1]
    assert ledger.verify_ledger(conn) == []
    public = json.dumps(publiclog.public_entries(conn))
    assert "ana@example.org" not in public and token not in public and request["id"] not in public
    report = requests.transparency(conn)
    assert report["by_kind_and_state"]["takedown"]["withdrawn"] == 1 and report["applied"] == 1
    conn.close()


def test_an_unverified_takedown_changes_nothing_until_approved_and_a_rejected_one_never(desk, capsys):
    before = (opt_outs(), tracking.get_version(NAME, "1")["tags"])
    browser = Client(desk["url"])
    _, page = browser.lookup(name="Ben Ode")
    status, location = browser.file(page)
    assert status == 303
    _, _, request_page = browser.call("GET", location)
    status, _, answer = browser.post_form(
        location.split("?")[0] + "/verify", [("form", browser.form_token(request_page))]
    )
    assert status == 409 and "not verified" in answer  # no token on the source pages
    conn = ledger.open_ledger()
    (request,) = requests.listed(conn)
    assert request["state"] == "received"
    assert cli.main(["rights", "queue", "approve", request["ref"]]) == 2  # not verified: the operator must say so
    assert "not verified" in capsys.readouterr().err
    assert cli.main(["rights", "queue", "reject", request["ref"], "--reason", "no proof and no reply"]) == 0
    assert cli.main(["rights", "queue", "approve", request["ref"], "--unverified"]) == 2  # rejected stays rejected
    assert (opt_outs(), tracking.get_version(NAME, "1")["tags"]) == before
    assert cli.main(["rights", "queue", "advance"]) == 0
    assert requests.listed(conn)[0]["state"] == "rejected" and ledger.verify_ledger(conn) == []
    conn.close()


def test_hostile_inputs_get_4xx_and_change_nothing(desk):
    base = desk["url"]
    browser = Client(base)
    _, page = browser.lookup(name="Ana Ruiz")
    status = declared_only(base, "/api/lookup", rights_desk.MAX_UPLOAD + 1)  # refused before a byte is read
    assert status == 413
    bomb = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(bomb, "PNG")  # 144 Mpx, a few hundred KB: over clean's max_pixels
    status, answer = api(base, "/api/lookup", bomb.getvalue())
    assert status == 400 and "cannot be read" in answer["error"]
    status, answer = api(base, "/api/lookup", b"not an image at all")
    assert status == 400
    script = "<script>alert(1)</script>"
    status, shown = browser.lookup(name=script)
    assert status == 200 and script not in shown and "&lt;script&gt;" in shown
    for wrong in ("/request/abc", "/request/" + "A" * 32, "/request/../../etc/passwd", "/request/%00"):
        status, _, _ = browser.call("GET", wrong)
        assert status == 404, wrong
    ids = [("record_id", desk["ana"])]
    good = [("kind", "takedown"), ("contact", "x@example.org")]
    cases = [  # "<token>": the fresh page's own token
        ([("form", "<token>")] + good + ids, {"Origin": "https://evil.example"}, 403),  # cross-site
        ([("form", "forged-token-0000000000")] + good + ids, {}, 403),  # a token it never issued
        ([("form", "<token>")] + good + [("record_id", "zz")], {}, 400),
        ([("form", "<token>"), ("kind", "nonsense"), ("contact", "x")] + ids, {}, 400),
        ([("form", "<token>"), ("kind", "takedown"), ("contact", "")] + ids, {}, 400),
        ([("form", "<token>")] + good + ids + [("admin", "1")], {}, 400),
        ([("form", "<token>")] + good + [("record_id", "f" * 64)], {}, 400),  # not in the records
        ([("form", "<token>")] + good + ids + [("contact", "twice")], {}, 400),
        ([("form", "<token>"), ("kind", "takedown"), ("contact", "x" * 400)] + ids, {}, 400),
    ]
    for fields, headers, expected in cases:
        fresh = Client(base)
        _, fresh_page = fresh.lookup(name="Ana Ruiz")
        fields = [(k, fresh.form_token(fresh_page) if v == "<token>" else v) for k, v in fields]
        status, _, _ = fresh.post_form("/request", fields, headers)
        assert status == expected, (fields, headers, status)
    status, _ = browser.file(page)  # the page's own token: filed once
    assert status == 303
    status, _ = browser.file(page)  # the same form again: a replay
    assert status == 403
    stranger = Client(base)  # a token from another visitor's page, without that visitor's cookie
    _, other_page = Client(base).lookup(name="Ana Ruiz")
    status, _ = stranger.file(other_page)
    assert status == 403
    conn = ledger.open_ledger()
    assert len(requests.listed(conn)) == 1 and ledger.verify_ledger(conn) == []  # only the one good filing
    conn.close()

    limited = rights_desk.make_server("127.0.0.1", 0, lookups_per_min=3, filings_per_hour=1)
    threading.Thread(target=limited.serve_forever, daemon=True).start()
    try:
        codes = [api(limited.url, "/api/lookup?name=Ana%20Ruiz")[0] for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    finally:
        limited.shutdown()
        limited.server_close()


def test_fifty_lookups_and_ten_filings_at_once_lose_nothing(desk):
    base = desk["url"]
    copy = desk["copy"].read_bytes()
    pages = []
    for _ in range(10):  # each filer loads the lookup page first (its own cookie and form)
        client = Client(base)
        pages.append((client, client.lookup(name="Ana Ruiz")[1]))

    def lookup(i: int) -> int:
        return api(base, "/api/lookup", copy)[0] if i % 2 else api(base, "/api/lookup?name=Ben%20Ode")[0]

    def filing(pair) -> int:
        client, page = pair
        return client.file(page, kind="opt_out", contact=f"filer{id(client)}@example.org")[0]

    with ThreadPoolExecutor(max_workers=30) as pool:
        looked = list(pool.map(lookup, range(50)))
        filed = list(pool.map(filing, pages))
    assert looked == [200] * 50 and filed == [303] * 10
    conn = ledger.open_ledger()
    assert len(requests.listed(conn)) == 10 and ledger.verify_ledger(conn) == []
    status, report = api(base, "/api/transparency")
    assert status == 200 and report["by_kind_and_state"]["opt_out"]["received"] == 10
    conn.close()


def test_a_rights_holder_in_a_browser_looks_up_files_and_follows_a_request(desk):
    """Headless Chromium: the lookup form by picture, the answer, the filing form, the request's page, the
    transparency report (screenshots under test-artifacts/)."""
    ARTIFACTS.mkdir(exist_ok=True)
    with webdriver_session() as browser:
        browser.get(desk["url"] + "/")
        browser.save_screenshot(str(ARTIFACTS / "rights-lookup.png"))
        browser.find_element("id", "image").send_keys(str(desk["copy"]))
        _click_and_wait(browser, "form button")
        answer = browser.find_element("id", "answer").text
        assert desk["ana"][:16] in answer and "champion" in answer
        browser.save_screenshot(str(ARTIFACTS / "rights-found.png"))
        browser.find_element("id", "contact").send_keys("ana@example.org")
        _click_and_wait(browser, "form[action='/request'] button")
        assert "Prove that the work is yours" in browser.page_source, browser.page_source[-1500:]
        assert browser.find_element("id", "state").text.lower() == "received"
        token = browser.find_element("id", "token").text
        browser.save_screenshot(str(ARTIFACTS / "rights-request.png"))
        desk["host"].pages["/works/ana-museum.html"] = f'<meta name="atelier-rights" content="{token}">'.encode()
        _click_and_wait(browser, "form[action$='/verify'] button")
        assert browser.find_element("id", "state").text.lower() == "verified"
        browser.get(desk["url"] + "/")
        browser.find_element("id", "image").send_keys(str(_foreign(desk)))
        _click_and_wait(browser, "form button")
        assert "No match found" in browser.find_element("id", "answer").text
        browser.get(desk["url"] + "/transparency")
        browser.save_screenshot(str(ARTIFACTS / "rights-transparency.png"))
        assert "1 requests" in browser.find_element("tag name", "body").text


def _foreign(desk) -> Path:
    path = desk["copy"].parent / "foreign.png"
    path.write_bytes(encoded(picture(99), "PNG"))
    return path


def test_the_operators_page_needs_the_token_and_decides_as_the_cli_does(desk):
    browser = Client(desk["url"])
    _, page = browser.lookup(name="Ben Ode")
    assert browser.file(page, kind="opt_out")[0] == 303
    assert browser.call("GET", "/operator")[0] == 404  # no token: the page does not admit it exists
    assert browser.call("GET", "/operator", headers={"Authorization": "Bearer wrong"})[0] == 404
    operator = Client(desk["url"])
    status, got, _ = operator.call("GET", "/operator?token=" + desk["server"].operator_token)
    assert status == 303 and got["Location"] == "/operator"  # the token leaves the address, a cookie keeps it
    status, _, queue = operator.call("GET", "/operator")
    assert status == 200 and "ana@example.org" in queue
    ref = requests.listed(ledger.open_ledger())[0]["ref"]
    fields = [("form", operator.form_token(queue)), ("ref", ref), ("action", "approve"), ("reason", "by page")]
    status, _, _ = operator.post_form("/operator/decide", fields)
    assert status == 303
    assert requests.by_ref(ledger.open_ledger(), ref)["state"] == "applied"
    assert desk["ben"] in opt_outs()
