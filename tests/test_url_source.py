"""URL sources against local web servers: every opt-out signal refuses its image with its own reason, failures are
recorded and the run goes on, items come in input order, known URLs are not fetched, and the per-host limit holds."""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from atelier.config import Columns, HttpParams, UrlSourceParams
from atelier.sources import iter_items
from stages.ingest import ingest_chunk
from tests.conftest import sign_with_training_mining

AGENT = "AtelierBot/0.1"
MAX_BYTES = 16_384

ROBOTS = b"""# our own group replaces the * group (RFC 9309)
User-agent: *
Disallow: /

User-agent: AtelierBot
Disallow: /blocked/
Allow: /blocked/ok
Disallow: /*.gif$
"""
TDMREP = b"""[{"location": "/reserved/*", "tdm-reservation": 1, "tdm-policy": "https://example.org/tdm-policy.json"},
 {"location": "/", "tdm-reservation": 0}]"""


def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buf, "PNG")
    return buf.getvalue()


def c2pa_png(colour: tuple[int, int, int], label: str, entries: dict) -> bytes:
    """A PNG signed with the test identity, carrying a training-and-mining assertion `label` with `entries`."""
    return sign_with_training_mining(png(colour), label, entries)


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    fail_first: int = 0  # answer `fail_status` (with `fail_headers`) to the first n requests
    fail_status: int = 500
    fail_headers: list[tuple[str, str]] = field(default_factory=list)
    content_length: bool = True  # False: a body delimited by closing the connection


class Site:
    """A web server on 127.0.0.1 in a thread, serving `routes` (404 elsewhere) and recording its requests."""

    def __init__(self, routes: dict[str, Route]):
        self.routes = routes
        self.hits: Counter = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.agents: set[str] = set()
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                site.answer(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        with self.lock:
            self.hits[path] += 1
            n = self.hits[path]
            self.times[path].append(time.monotonic())
            self.agents.add(handler.headers["User-Agent"])
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        route = self.routes.get(path)
        if route and route.delay:
            self.stop.wait(route.delay)
        with self.lock:  # before answering: the client cannot free its slot before this
            self.active -= 1
        if route is None:
            route = Route(status=404)
        failing = n <= route.fail_first
        status = route.fail_status if failing else route.status
        body = route.body if status == 200 else b""
        try:
            handler.send_response(status)
            for name, value in route.fail_headers if failing else route.headers:
                handler.send_header(name, value)
            if route.content_length:
                handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:  # the client gave up (timeouts)
            pass

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve(monkeypatch):
    """Start Sites; all are shut down after the test. No proxy from the environment gets in the way."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    sites = []

    def start(routes: dict[str, Route]) -> Site:
        sites.append(Site(routes))
        return sites[-1]

    yield start
    for site in sites:
        site.close()


def url_source(tmp_path, urls: list[str], **http) -> UrlSourceParams:
    path = tmp_path / "urls.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "title"])
        for i, url in enumerate(urls):
            writer.writerow([url, f"image {i}"])
    settings = {"timeout_s": 2.0, "retries": 1, "backoff_s": 0.05} | http  # hang.png waits 3 s
    return UrlSourceParams(name="web", kind="urls", path=str(tmp_path / "urls.csv"), http=HttpParams(**settings))


def policy_routes() -> dict[str, Route]:
    return {"/robots.txt": Route(ROBOTS), "/.well-known/tdmrep.json": Route(TDMREP)}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_signal_refuses_its_image_and_the_rest_is_fetched_in_order(tmp_path, serve):
    images = {
        name: png((i * 9, 255 - i * 9, (i * 67) % 256))
        for i, name in enumerate(
            [
                "plain",
                "noai",
                "otherbot",
                "ourbot",
                "multi",
                "unavailable",
                "tdm",
                "reserved",
                "blocked",
                "ok",
                "gif",
                "flaky",
                "busy",
                "c",
                "b",
            ]
        )
    }
    images["c2pa"] = c2pa_png(
        (1, 2, 3),
        "c2pa.training-mining",
        {"c2pa.ai_training": {"use": "notAllowed"}, "c2pa.data_mining": {"use": "allowed"}},
    )
    images["cawg"] = c2pa_png(
        (4, 5, 6),
        "cawg.training-mining",
        {
            "cawg.ai_training": {"use": "allowed"},
            "cawg.ai_inference": {"use": "constrained", "constraint_info": "ask first"},
        },
    )
    images["cawg_ok"] = c2pa_png(
        (7, 8, 9), "cawg.training-mining", {e: {"use": "allowed"} for e in ("cawg.ai_training", "cawg.data_mining")}
    )
    big = bytes(range(256)) * 80  # 20480 bytes > MAX_BYTES
    a = serve(
        policy_routes()
        | {
            "/img/plain.png": Route(images["plain"]),
            "/img/noai.png": Route(images["noai"], headers=[("X-Robots-Tag", "noai")]),
            "/img/otherbot.png": Route(images["otherbot"], headers=[("X-Robots-Tag", "otherbot: noimageai")]),
            "/img/ourbot.png": Route(images["ourbot"], headers=[("X-Robots-Tag", "AtelierBot: noimageai")]),
            "/img/multi.png": Route(images["multi"], headers=[("X-Robots-Tag", "noindex"), ("X-Robots-Tag", "NoAI")]),
            "/img/unavailable.png": Route(
                images["unavailable"], headers=[("X-Robots-Tag", "unavailable_after: 25 Jun 2010 15:00:00 PST")]
            ),
            "/img/tdm.png": Route(
                images["tdm"], headers=[("tdm-reservation", "1"), ("tdm-policy", "https://example.org/p.json")]
            ),
            "/reserved/a.png": Route(images["reserved"]),
            "/blocked/a.png": Route(images["blocked"]),
            "/blocked/ok.png": Route(images["ok"]),
            "/img/anim.gif": Route(images["gif"]),
            "/img/c2pa.png": Route(images["c2pa"]),
            "/img/cawg.png": Route(images["cawg"]),
            "/img/cawg-ok.png": Route(images["cawg_ok"]),
            "/flaky.png": Route(images["flaky"], fail_first=1, fail_status=500),
            "/busy.png": Route(images["busy"], fail_first=1, fail_status=429, fail_headers=[("Retry-After", "1")]),
            "/down.png": Route(status=503),
            "/hang.png": Route(images["plain"], delay=3.0),
            "/big.png": Route(big),
            "/big-stream.png": Route(big, content_length=False),
            "/redirect.png": Route(status=302, headers=[("Location", "/img/plain.png")]),
            "/redirect-ftp.png": Route(status=302, headers=[("Location", "ftp://127.0.0.1/x.png")]),
            "/redirect-blocked.png": Route(status=301, headers=[("Location", "/blocked/b.png")]),
        }
    )
    b = serve({"/robots.txt": Route(status=503), "/b.png": Route(images["b"])})  # robots.txt down: fail closed
    c = serve({"/c.png": Route(images["c"])})  # no robots.txt, no tdmrep.json (404): everything allowed
    dead = f"http://127.0.0.1:{closed_port()}/x.png"
    expected = [  # (url, bytes or reason code)
        (f"{a.url}/img/plain.png", images["plain"]),
        (f"{a.url}/img/noai.png", "opted_out:x_robots_tag"),
        (f"{a.url}/img/otherbot.png", images["otherbot"]),
        (f"{a.url}/img/ourbot.png", "opted_out:x_robots_tag"),
        (f"{a.url}/img/multi.png", "opted_out:x_robots_tag"),
        (f"{a.url}/img/unavailable.png", images["unavailable"]),
        (f"{a.url}/img/tdm.png", "opted_out:tdm_reservation"),
        (f"{a.url}/reserved/a.png", "opted_out:tdm_reservation"),
        (f"{a.url}/blocked/a.png", "opted_out:robots_txt"),
        (f"{a.url}/blocked/ok.png", images["ok"]),
        (f"{a.url}/img/anim.gif", "opted_out:robots_txt"),
        (f"{a.url}/img/c2pa.png", images["c2pa"]),  # fetched; the ingest stage reads the reservation (below)
        (f"{a.url}/img/cawg.png", images["cawg"]),
        (f"{a.url}/img/cawg-ok.png", images["cawg_ok"]),
        (f"{a.url}/missing.png", "http_error"),
        (f"{a.url}/flaky.png", images["flaky"]),
        (f"{a.url}/busy.png", images["busy"]),
        (f"{a.url}/down.png", "http_error"),
        (f"{a.url}/hang.png", "http_timeout"),
        (f"{a.url}/big.png", "file_too_large"),
        (f"{a.url}/big-stream.png", "file_too_large"),
        (f"{a.url}/redirect.png", images["plain"]),
        (f"{a.url}/redirect-ftp.png", "url_invalid"),
        (f"{a.url}/redirect-blocked.png", "opted_out:robots_txt"),
        (f"{b.url}/b.png", "http_error"),
        (f"{b.url}/b.png?again", "http_error"),
        (f"{c.url}/c.png", images["c"]),
        (dead, "http_unreachable"),
        ("file:///etc/passwd", "url_invalid"),
        ("javascript:alert(1)", "url_invalid"),
        ("http:///nohost.png", "url_invalid"),
        ("", "url_invalid"),
    ]
    source = url_source(tmp_path, [u for u, _ in expected])
    with (tmp_path / "urls.csv").open("a", encoding="utf-8") as fh:
        fh.write("a,row,with,too,many,fields\n")

    started = time.monotonic()
    items = list(iter_items(source, max_file_bytes=MAX_BYTES))
    elapsed = time.monotonic() - started

    assert [i.row for i in items] == list(range(2, len(expected) + 3))
    by_url = {i.uri: i for i in items}
    assert "declares Content-Length" in by_url[f"{a.url}/big.png"].error  # refused before the body was read
    assert "reading stopped" in by_url[f"{a.url}/big-stream.png"].error
    assert [i.uri for i in items[:-2]] == [u for u, _ in expected[:-1]]
    for item, (url, want) in zip(items, expected):
        if isinstance(want, bytes):
            assert item.error is None, url
            assert item.data == want, url
            assert item.fingerprint == f"url:{url}"
        else:
            assert item.data is None, url
            assert item.error.partition(": ")[0] == want, (url, item.error)
    assert items[-1].error.startswith("metadata_malformed: ")
    assert elapsed < 30

    # refused before the request: robots.txt and tdmrep.json are checked first, for every redirect hop too
    for path in ("/reserved/a.png", "/blocked/a.png", "/img/anim.gif", "/blocked/b.png"):
        assert a.hits[path] == 0, path
    assert b.hits["/b.png"] == 0 and b.hits["/b.png?again"] == 0
    # fetched once per origin, however many URLs and threads; retried only where it may help
    assert a.hits["/robots.txt"] == 1 and a.hits["/.well-known/tdmrep.json"] == 1
    assert b.hits["/robots.txt"] == 2 and c.hits["/robots.txt"] == 1
    assert a.hits["/missing.png"] == 1 and a.hits["/down.png"] == 2 and a.hits["/hang.png"] == 2
    assert a.hits["/flaky.png"] == 2 and a.hits["/busy.png"] == 2
    first, second = a.times["/busy.png"]
    assert second - first >= 0.9  # Retry-After: 1 honoured
    assert a.agents == {AGENT}

    errors = {url: item.error for item, (url, _) in zip(items, expected)}
    assert "header 'X-Robots-Tag: noai'" in errors[f"{a.url}/img/noai.png"]
    assert "tdmrep.json" in errors[f"{a.url}/reserved/a.png"]
    assert "header 'tdm-reservation: 1'" in errors[f"{a.url}/img/tdm.png"]
    assert "robots.txt" in errors[f"{b.url}/b.png"] and "HTTP 503" in errors[f"{b.url}/b.png"]
    assert "HTTP 404" in errors[f"{a.url}/missing.png"]

    # reservations inside the image bytes are read by ingest, as for every source kind (provenance/reservations.py)
    records = {
        r["source_uri"]: r
        for r in ingest_chunk(items, "web", Columns().model_dump(), str(tmp_path / "packs"), (MAX_BYTES, 10_000), {})
    }
    assert records[f"{a.url}/img/c2pa.png"]["ingest_error"].startswith("opted_out:c2pa_training_mining: ")
    assert "'c2pa.ai_training' is 'notAllowed'" in records[f"{a.url}/img/c2pa.png"]["ingest_error"]
    assert "'cawg.ai_inference' is 'constrained'" in records[f"{a.url}/img/cawg.png"]["ingest_error"]
    assert records[f"{a.url}/img/cawg-ok.png"]["ingest_error"] is None
    for url, want in expected:
        if url and not isinstance(want, bytes):
            assert records[url]["ingest_error"].partition(": ")[0] == want, url


def test_known_urls_are_not_fetched_again(tmp_path, serve):
    site = serve(policy_routes() | {f"/{n}.png": Route(png((n * 40, 0, 0))) for n in range(3)})
    urls = [f"{site.url}/{n}.png" for n in range(3)]
    items = list(iter_items(url_source(tmp_path, urls), known={f"url:{urls[1]}"}, max_file_bytes=MAX_BYTES))

    assert [i.uri for i in items] == urls
    assert items[1].data is None and items[1].error is None and items[1].fingerprint == f"url:{urls[1]}"
    assert items[0].data == png((0, 0, 0)) and items[2].data == png((80, 0, 0))
    assert site.hits["/1.png"] == 0 and site.hits["/0.png"] == 1 and site.hits["/2.png"] == 1


def test_per_host_concurrency_is_never_exceeded(tmp_path, serve):
    site = serve(policy_routes() | {f"/slow/{n}.png": Route(png((n * 20, 100, 50)), delay=0.2) for n in range(12)})
    urls = [f"{site.url}/slow/{n}.png" for n in range(12)]
    source = url_source(tmp_path, urls, per_host_concurrency=2, max_connections=8)
    items = list(iter_items(source, max_file_bytes=MAX_BYTES))

    assert [i.uri for i in items] == urls
    assert [i.data for i in items] == [png((n * 20, 100, 50)) for n in range(12)]
    assert site.max_active == 2
    assert site.hits["/robots.txt"] == 1 and site.hits["/.well-known/tdmrep.json"] == 1


def test_downloads_run_a_bounded_window_ahead(tmp_path, serve):
    site = serve(policy_routes() | {f"/{n}.png": Route(png((n, n, n))) for n in range(100)})
    source = url_source(tmp_path, [f"{site.url}/{n}.png" for n in range(100)], max_connections=2)
    items = iter_items(source, max_file_bytes=MAX_BYTES)
    assert next(items).data == png((0, 0, 0))
    time.sleep(0.3)
    images = sum(n for path, n in site.hits.items() if path.endswith(".png"))
    assert images <= 4 * 2  # the lookahead window, not the whole list
    items.close()
