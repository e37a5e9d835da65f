"""The review page (issue 19, items 1 and 2): a tiny ledger of artworks in tmp_path, the server in-process on a free
loopback port; a real headless Chromium clicks through it, eight clients vote at once, hostile requests change
nothing."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
import sqlite3
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest
from PIL import Image

from app.review import make_server
from atelier.gallery import write_gallery
from provenance import ledger, votes
from tests.browser import ARTIFACTS, chromedriver, webdriver_session
from tests.test_manifest import FACTS

HOSTILE = "<script>alert(1)</script>"
# (prompt, seed, model version, guidance): prompt A seed 1 has three artworks (3 pairs), prompt A seed 2 two
# (1 pair: guidance differs), the hostile prompt two (1 pair), and a lone artwork with no partner.
ARTWORKS = [
    ("a blue spiral", 1, "3", 1.5),
    ("a blue spiral", 1, "4", 1.5),
    ("a blue spiral", 1, "4", 3.0),
    ("a blue spiral", 2, "4", 1.5),
    ("a blue spiral", 2, "4", 3.0),
    (f"red {HOSTILE} square", 7, "3", 1.5),
    (f"red {HOSTILE} square", 7, "4", 1.5),
    ("a lone circle", 5, "3", 1.5),
]
PAIRS = 5


def _artwork_id(i: int) -> str:
    return hashlib.sha256(f"artwork {i}".encode()).hexdigest()[:16]


def build_artworks(folder: Path, ledger_path: Path) -> list[str]:
    """ARTWORKS as ledger rows, small PNGs and sidecar manifests in `folder`, and the gallery; return their ids."""
    folder.mkdir(parents=True, exist_ok=True)
    conn = ledger.open_ledger(ledger_path)
    ids = []
    for i, (prompt, seed, version, guidance) in enumerate(ARTWORKS):
        art_id = _artwork_id(i)
        m = copy.deepcopy(FACTS)
        m["id"] = art_id
        m["artwork"] = {k: v for k, v in m["artwork"].items() if k != "id"} | {"file": f"{art_id}.png"}
        m["artwork"]["sha256_pixels"] = hashlib.sha256(art_id.encode()).hexdigest()
        m["artwork"]["generator"].update(prompt=prompt, seed=seed, guidance=guidance)
        m["model"]["version"] = version
        m["data"]["attribution"]["file"] = f"attribution/m-v{version}.md"
        m.update(checks=FACTS["checks"], rights={"disclosure": "AI-generated", "usage_terms": {"statement": "CC0"}})
        ledger.record(conn, m, None)
        Image.new("RGB", (32, 32), (30 * i, 120, 255 - 30 * i)).save(folder / f"{art_id}.png")
        (folder / f"{art_id}.provenance.json").write_text(json.dumps(m))
        ids.append(art_id)
    conn.close()
    write_gallery(folder, [])
    return ids


@pytest.fixture
def review(tmp_path):
    """The review server over a tiny ledger, serving on a free loopback port; stopped after the test."""
    artworks, ledger_path = tmp_path / "artworks", tmp_path / "ledger.sqlite"
    ids = build_artworks(artworks, ledger_path)
    server = make_server("127.0.0.1", 0, artworks=artworks, ledger_path=ledger_path, rng=random.Random(19))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, ids
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


class Client:
    """An HTTP client with its own cookie, that never follows redirects."""

    def __init__(self, url: str):
        self.url, self.cookie = url, None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, text) of one request; 4xx and 5xx are answers, not exceptions."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        if self.cookie and "Cookie" not in req.headers:
            req.add_header("Cookie", self.cookie)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(req, timeout=30) as r:
                status, hdrs, data = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, data = e.code, e.headers, e.read()
        if hdrs.get("Set-Cookie"):
            self.cookie = hdrs["Set-Cookie"].split(";")[0]
        return status, hdrs, data.decode("utf-8", "replace")

    def post(self, path: str, fields: dict | list | str | bytes, **kw):
        body = fields if isinstance(fields, bytes) else (fields if isinstance(fields, str) else urlencode(fields))
        headers = {"Content-Type": "application/x-www-form-urlencoded"} | kw.pop("headers", {})
        return self.request("POST", path, body if isinstance(body, bytes) else body.encode(), headers)

    def consent(self, pseudonym: str) -> None:
        status, hdrs, _ = self.post("/consent", {"pseudonym": pseudonym, "consent": "yes"})
        assert status == 303 and hdrs["Location"] == "/compare", status

    def form(self) -> dict:
        """The hidden fields of a fresh comparison form."""
        status, _, text = self.request("GET", "/compare")
        assert status == 200, text
        return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', text))


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _counts(ledger_path: Path) -> tuple[int, int, int, int]:
    conn = sqlite3.connect(ledger_path)
    try:
        return tuple(
            conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("votes", "reviewers", "forms", "log")
        )
    finally:
        conn.close()


def test_pairs_are_same_prompt_and_seed_with_another_version_or_guidance(tmp_path):
    ids = build_artworks(tmp_path / "a", tmp_path / "l.sqlite")
    conn = votes.open_votes(tmp_path / "l.sqlite")
    found = {frozenset((a["id"], b["id"])) for a, b in votes.pairs(conn)}
    assert found == {frozenset((ids[i], ids[j])) for i, j in ((0, 1), (0, 2), (1, 2), (3, 4), (5, 6))}
    assert len(found) == PAIRS


def test_votes_table_schema_and_one_transaction_per_vote(tmp_path):
    ids = build_artworks(tmp_path / "a", tmp_path / "l.sqlite")
    conn = votes.open_votes(tmp_path / "l.sqlite")
    log_before = ledger.log_head(conn)
    votes.register_reviewer(conn, "ann")
    form = votes.issue_form(conn, "ann", ids[1], ids[0])
    assert votes.record_vote(conn, form, "ann", ids[1], ids[0], "flag", "existing_work", ids[0]) == "recorded"
    assert votes.record_vote(conn, form, "ann", ids[1], ids[0], "left") == "duplicate"
    [v] = votes.votes(conn)
    assert (v["left_version"], v["right_version"], v["left_guidance"], v["seed"], v["prompt"]) == (
        "4",
        "3",
        1.5,
        1,
        "a blue spiral",
    )
    [f] = votes.flags(conn)
    assert f["flagged"] == ids[0] and f["flag_reason"] == "existing_work" and f["flagged_version"] == "3"
    assert votes.reviewers(conn)[0]["consent"] == votes.consent_id()
    with pytest.raises(votes.VoteRefused):  # not a pair: another prompt
        votes.issue_form(conn, "ann", ids[0], ids[7])
    with pytest.raises(votes.VoteRefused):  # a reviewer who never consented
        votes.issue_form(conn, "bob", ids[0], ids[1])
    with pytest.raises(sqlite3.IntegrityError):  # the table's own checks hold without the code's
        with ledger.transaction(conn):
            conn.execute(
                "INSERT INTO votes (form_id, reviewer, prompt, seed, left_artwork, right_artwork, "
                "left_version, right_version, left_guidance, right_guidance, choice, created_at) "
                "VALUES ('x', 'ann', 'p', 1, 'a', 'b', '1', '2', 1, 1, 'maybe', 'now')"
            )
    assert ledger.log_head(conn) == log_before and ledger.verify_ledger(conn) == []  # the chain is untouched


def test_browser_consents_compares_and_flags_by_clicking(review, tmp_path, monkeypatch, empty_store):
    """Headless Chromium through chromedriver: consent, three comparisons and a flag, all by clicking; the votes
    are in the ledger and, through the promote stage's scoring and logging, in the MLflow versions' metrics."""
    chromedriver()  # skips (outside CI) when chromium or chromedriver is absent
    server, ids = review
    with webdriver_session() as browser:
        browser.get(server.url + "/")
        browser.save_screenshot(str(_artifact("review-consent.png")))
        assert "Nothing else about you is stored" in browser.find_element("id", "statement").text
        browser.find_element("name", "pseudonym").send_keys("reviewer-7")
        browser.find_element("name", "consent").click()
        _click_and_wait(browser, "button[type=submit]")
        shown = []
        for choice in ("left", "right", "tie"):
            assert browser.title == "Atelier review: compare"
            shown.append(_shown_pair(browser))
            _click_and_wait(browser, f"button[value={choice}]")
        shown.append(_shown_pair(browser))
        widths = browser.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
        assert widths == [32, 32]  # both artworks loaded (WebDriver's script is not the page's: CSP allows none)
        browser.find_element("css selector", "select[name=flagged] option:nth-child(3)").click()  # the right one
        browser.find_element("css selector", "select[name=flag_reason] option[value=broken]").click()
        browser.save_screenshot(str(_artifact("review.png")))
        _click_and_wait(browser, "button[value=flag]")
        assert f"pair {PAIRS} of {PAIRS}" in browser.find_element("tag name", "body").text  # 4 voted, the last pair
        browser.get(server.url + f"/card/{shown[0][0]}")
        browser.save_screenshot(str(_artifact("review-card.png")))
        assert "Provenance card" in browser.page_source and HOSTILE not in browser.page_source
    conn = votes.open_votes(server.ledger_path)
    got = votes.votes(conn)
    assert [(v["reviewer"], v["left_artwork"], v["right_artwork"], v["choice"]) for v in got] == [
        ("reviewer-7", left, right, choice) for (left, right), choice in zip(shown, ("left", "right", "tie", "flag"))
    ]
    assert got[3]["flag_reason"] == "broken" and got[3]["flagged"] == shown[3][1]
    assert len({frozenset(p) for p in shown}) == 4  # never the same pair twice

    # the promote stage's Bradley-Terry scores of these votes, logged to a real MLflow registry (versions 3 and 4)
    import shutil

    from atelier.config import load_params
    from registry import tracking
    from stages import promote

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    name, c = load_params().registry.model_name, tracking.client()
    c.create_registered_model(name)
    runs = {}
    for _ in range(4):
        run = c.create_run(c.create_experiment(f"review-{len(runs)}", artifact_location=(tmp_path / "a").as_uri()))
        runs[str(c.create_model_version(name, (tmp_path / "a").as_uri(), run_id=run.info.run_id).version)] = (
            run.info.run_id
        )
    summary = promote.preference_scores(got, load_params(), "3")
    promote.log_preference(name, summary, None, "4")
    between = [v for v in got if v["choice"] != "flag" and v["left_version"] != v["right_version"]]
    assert summary["votes"] == 3 and between
    for version in ("3", "4"):
        metrics = c.get_run(runs[version]).data.metrics
        assert metrics["pref_votes"] == 3 and f"pref_score_v{version}" in metrics


def _click_and_wait(browser, selector: str) -> None:
    """Click a submit button and wait until the page it posts to has replaced this one and finished loading: a
    click returns before the navigation, and an element read from the old page goes stale under the reader."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old_page = browser.find_element("tag name", "html")
    browser.find_element("css selector", selector).click()
    wait = WebDriverWait(browser, 30)
    wait.until(expected_conditions.staleness_of(old_page))
    wait.until(lambda b: b.execute_script("return document.readyState") == "complete")


def _shown_pair(browser) -> tuple[str, str]:
    return (
        browser.find_element("name", "left").get_attribute("value"),
        browser.find_element("name", "right").get_attribute("value"),
    )


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def test_eight_clients_vote_at_once_and_replays_count_once(review):
    server, _ = review
    clients = [Client(server.url) for _ in range(8)]
    for i, c in enumerate(clients):
        c.consent(f"r{i}")
    forms = [c.form() for c in clients]
    barrier = threading.Barrier(24)

    def vote(k: int) -> int:
        c, f = clients[k % 8], forms[k % 8]
        barrier.wait()
        return c.post("/vote", f | {"choice": "left", "flag_reason": "", "flagged": ""})[0]

    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(vote, range(24)))  # each form sent three times, all at once
    assert sorted(statuses) == [303] * 8 + [409] * 16
    conn = votes.open_votes(server.ledger_path)
    got = votes.votes(conn)
    assert sorted(v["form_id"] for v in got) == sorted(f["form_id"] for f in forms)
    assert {v["reviewer"] for v in got} == {f"r{i}" for i in range(8)}
    # a second round: the next pair for each, again concurrently
    forms = [c.form() for c in clients]
    barrier = threading.Barrier(8)
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda k: vote(k), range(8))) == [303] * 8
    assert len(votes.votes(conn)) == 16
    assert all(len(votes.voted_pairs(conn, f"r{i}")) == 2 for i in range(8))


def test_hostile_inputs_get_4xx_and_change_nothing(review):
    server, ids = review
    ann, eve = Client(server.url), Client(server.url)
    ann.consent("ann")
    form = ann.form()
    good = form | {"choice": "left", "flag_reason": "", "flagged": ""}
    before = _counts(server.ledger_path)
    other = [i for i in ids if i not in (form["left"], form["right"])][0]
    refused = [
        ("POST", "/consent", {"pseudonym": HOSTILE, "consent": "yes"}, {}),
        ("POST", "/consent", {"pseudonym": "x" * 41, "consent": "yes"}, {}),
        ("POST", "/consent", {"pseudonym": "", "consent": "yes"}, {}),
        ("POST", "/consent", {"pseudonym": "ann", "consent": "no"}, {}),
        ("POST", "/consent", {"pseudonym": "ann"}, {}),
        ("POST", "/consent", {"pseudonym": "ann", "consent": "yes", "email": "a@b.c"}, {}),
        ("POST", "/consent", [("pseudonym", "ann"), ("pseudonym", "bob"), ("consent", "yes")], {}),
        ("POST", "/consent", b"pseudonym=\xff\xfe&consent=yes", {}),
        ("POST", "/consent", {"pseudonym": "ann", "consent": "yes"}, {"Content-Type": "text/plain"}),
        ("POST", "/consent", {"pseudonym": "ann", "consent": "yes"}, {"Origin": "http://evil.example"}),
        ("POST", "/consent", {"pseudonym": "ann", "consent": "yes"}, {"Host": "evil.example"}),
        ("POST", "/vote", good | {"choice": HOSTILE}, {}),
        ("POST", "/vote", good | {"choice": "flag"}, {}),  # a flag without reason or artwork
        ("POST", "/vote", good | {"choice": "flag", "flag_reason": HOSTILE, "flagged": form["left"]}, {}),
        ("POST", "/vote", good | {"choice": "flag", "flag_reason": "broken", "flagged": other}, {}),
        ("POST", "/vote", good | {"flag_reason": "offensive"}, {}),  # a reason without the flag button
        ("POST", "/vote", good | {"form_id": HOSTILE}, {}),
        ("POST", "/vote", good | {"form_id": "A" * 22}, {}),  # well-formed, never issued
        ("POST", "/vote", good | {"left": other}, {}),  # a forged pair
        ("POST", "/vote", good | {"left": form["right"], "right": form["left"]}, {}),  # sides swapped
        ("POST", "/vote", good | {"left": f"../{HOSTILE}"}, {}),
        ("POST", "/vote", good | {"extra": "1"}, {}),
        ("POST", "/vote", {k: v for k, v in good.items() if k != "choice"}, {}),
        ("POST", "/vote", urlencode(good) + "&pad=" + "x" * (17 * 1024), {}),  # oversized
        ("POST", "/vote", good, {"Cookie": "reviewer=mallory"}),  # never consented
        ("POST", "/vote", good, {"Cookie": f"reviewer={HOSTILE}"}),
        ("POST", "/nowhere", good, {}),
        ("GET", "/image/" + "0" * 16, None, {}),
        ("GET", "/image/../../etc/passwd", None, {}),
        ("GET", "/image/..%2F..%2Fledger.sqlite", None, {}),
        ("GET", f"/card/{HOSTILE}", None, {}),
        ("GET", "/gallery/../ledger.sqlite", None, {}),
        ("GET", "/gallery/%2e%2e/ledger.sqlite", None, {}),
        ("GET", "/gallery/quarantine/x.png", None, {}),
        ("GET", f"/{HOSTILE}", None, {}),
        ("PUT", "/vote", b"", {}),
        ("DELETE", "/", None, {}),
    ]
    for method, path, fields, headers in refused:
        client = ann
        if method == "POST":
            status, hdrs, text = client.post(path, fields, headers=headers)
        else:
            status, hdrs, text = client.request(method, path, None, headers)
        assert 400 <= status < 500, (method, path, fields, headers, status, text[:300])
        assert HOSTILE not in text and "<script" not in text, (path, fields)
        assert (
            "script-src" not in hdrs["Content-Security-Policy"]
            and "default-src 'none'" in hdrs["Content-Security-Policy"]
        )
    assert _counts(server.ledger_path) == before  # nothing stored, not even a form
    # without a cookie, /vote is refused and /compare sends to consent
    assert eve.post("/vote", good)[0] == 403 and eve.request("GET", "/compare")[0] == 303
    try:  # a body over 1 MiB is not even read: the client sees the 413, or a reset while still sending
        assert eve.post("/vote", urlencode(good) + "&pad=" + "x" * (2 * 1024 * 1024))[0] == 413
    except (ConnectionError, urllib.error.URLError):
        pass
    # the real vote is still accepted once, and its replay refused
    assert ann.post("/vote", good)[0] == 303 and ann.post("/vote", good)[0] == 409
    assert len(votes.votes(votes.open_votes(server.ledger_path))) == 1
    # every page escapes what it shows: the hostile prompt appears only escaped
    for path in ["/", "/compare", f"/card/{ids[5]}", "/gallery/"]:
        status, hdrs, text = ann.request("GET", path)
        assert status == 200 and "<script" not in text, path
    status, _, text = ann.request("GET", f"/card/{ids[5]}")
    assert "red &lt;script&gt;alert(1)&lt;/script&gt; square" in text
    for path in (f"/image/{ids[0]}", f"/gallery/{ids[0]}.png"):
        status, hdrs, _ = ann.request("GET", path)
        assert status == 200 and hdrs["Content-Type"] == "image/png", path
    assert ann.request("GET", "/gallery/attribution/m-v3.md")[0] == 404  # listed only if the folder holds it


def test_cli_review_command_parses_port_host_and_export():
    from app.cli import build_parser, cmd_review

    args = build_parser().parse_args(["review", "--port", "0"])
    assert (args.func, args.port, args.host, args.action) == (cmd_review, 0, "127.0.0.1", None)
    args = build_parser().parse_args(["review", "export", "out"])
    assert (args.action, args.folder) == ("export", "out")
