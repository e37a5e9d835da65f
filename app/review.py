"""`atelier review`: the review page (issue 19). A local web server (stdlib, threaded) where a reviewer consents once
under a pseudonym and then compares pairs of artworks made for the same prompt and seed by different model versions
or guidance settings: left, right, tie, or flag (with a reason). Votes go to the ledger database through
provenance/votes.py; this module only speaks HTTP and HTML.

Pages (plain server-rendered HTML with forms; no scripts anywhere, enforced by Content-Security-Policy):
    GET  /               what is stored, and the consent + pseudonym form
    POST /consent        pseudonym, consent=yes: records the consent, sets a cookie holding the pseudonym
    GET  /compare        a random pair this reviewer has not voted on, sides randomised, with a one-time form
    POST /vote           form_id, left, right, choice, flag_reason, flagged: counted once, then back to /compare
    GET  /image/<id>     an artwork's PNG, found by artwork id in the ledger (never a path from the request)
    GET  /card/<id>      an artwork's provenance manifest as an HTML page
    GET  /gallery/...    the static gallery (artworks/index.html) and the files it links to, from a listing

Anything else, and any bad request (a body over 16 KiB, an unknown, repeated or missing field, a value outside its
pattern, a wrong id, another reviewer's or a used form), gets a 4xx with a short message and changes nothing. The
server logs no IP addresses.
"""

from __future__ import annotations

import random
import re
import sys
from html import escape
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from app.serving import serve_until_stopped
from atelier import paths
from provenance import ledger, votes

MAX_BODY = 16 * 1024
MAX_DRAIN = 1024 * 1024  # an oversized body up to this size is read and discarded, so the client sees the 413
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
ARTWORK_ID = re.compile(r"[0-9a-f]{16}")  # the first 16 hex digits of the pixel sha256 (stages/generate.py)
FORM_ID = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16)
COOKIE = "reviewer"
FIELDS = {
    "/consent": ({"pseudonym", "consent"}, set()),
    "/vote": ({"form_id", "left", "right", "choice"}, {"flag_reason", "flagged"}),
}  # (required, optional)
GALLERY_FILES = ("index.html", "*.png", "*.provenance.json", "attribution/*.html", "attribution/*.md", "plots/*.png")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json",
    ".md": "text/plain; charset=utf-8",
}
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:980px;
     background:#f6f5f2;color:#222;padding:0 1rem}
nav{margin-bottom:1rem;color:#666} nav a{margin-right:1rem}
.pair{display:flex;gap:1.5rem;justify-content:center}
figure{margin:0;background:#fff;border-radius:8px;padding:.8rem;box-shadow:0 1px 3px #0002;text-align:center}
figure img{width:320px;height:320px;image-rendering:pixelated;border:1px solid #ddd;display:block}
figcaption{margin-top:.4rem}
.choices{display:flex;gap:.8rem;justify-content:center;margin:1.2rem 0}
button{font-size:1rem;padding:.5rem 1.2rem;border-radius:6px;border:1px solid #888;background:#fff;cursor:pointer}
button.main{background:#1f4e79;color:#fff;border-color:#1f4e79}
fieldset{border:1px solid #ccc;border-radius:6px;max-width:780px;margin:0 auto}
.statement{background:#fff;border-left:3px solid #1f4e79;padding:.6rem 1rem} .error{color:#922b21}
dl{margin:.2rem 0 .2rem 1rem} dt{font-weight:600;color:#555} dd{margin:0 0 .3rem 1rem;overflow-wrap:anywhere}
"""


class Refused(Exception):
    """A request answered with a 4xx status and a short message."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ReviewServer(ThreadingHTTPServer):
    """The review page's server: where the artworks and the ledger are, and the randomness that picks pairs."""

    daemon_threads = True
    request_queue_size = 64  # the listen backlog (5 by default): several reviewers submitting at once are queued

    def __init__(self, host: str, port: int, artworks: Path, ledger_path: Path, rng: random.Random):
        self.artworks, self.ledger_path, self.rng = Path(artworks), Path(ledger_path), rng
        votes.open_votes(self.ledger_path).close()  # create the ledger and the vote tables once
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(
    host: str = "127.0.0.1",
    port: int = 0,
    artworks: Path | None = None,
    ledger_path: Path | None = None,
    rng: random.Random | None = None,
) -> ReviewServer:
    """A review server bound to host:port (0: any free port; see .url), not yet serving: call serve_forever()."""
    return ReviewServer(host, port, artworks or paths.ARTWORKS, ledger_path or paths.LEDGER, rng or random.Random())


def serve(
    host: str = "127.0.0.1", port: int = 8000, artworks: Path | None = None, ledger_path: Path | None = None
) -> None:
    """Serve the review page until Ctrl-C, printing its address."""
    server = make_server(host, port, artworks, ledger_path)
    print(
        f"review page on {server.url}/ (artworks: {server.artworks}, votes: {server.ledger_path}); Ctrl-C stops",
        flush=True,
    )
    serve_until_stopped(server)


def page(title: str, body: str, reviewer: str | None = None) -> bytes:
    """A whole HTML page: escaped title, the given (already escaped) body, the navigation."""
    who = f" · reviewing as <b>{escape(reviewer)}</b>" if reviewer else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<style>{STYLE}</style></head><body><nav><a href="/">Consent</a><a href="/compare">Compare</a>'
        f'<a href="/gallery/">Gallery</a>{who}</nav>{body}</body></html>'
    ).encode()


def consent_page(reviewer: str | None) -> bytes:
    """The statement of what is stored, and the consent + pseudonym form."""
    again = (
        f'<p>You have consented as <b>{escape(reviewer)}</b>: <a href="/compare">continue comparing</a>, or '
        "consent under another pseudonym below.</p>"
        if reviewer
        else ""
    )
    return page(
        "Atelier review: consent",
        f"""<h1>Review artworks</h1>{again}
<p>You will see two artworks made for the same prompt and seed, by different model versions or settings, and say
which is better, call it a tie, or flag one.</p>
<h2>What is stored</h2><p class="statement" id="statement">{escape(votes.CONSENT_STATEMENT)}</p>
<p><small>Statement {escape(votes.consent_id())}</small></p>
<form method="post" action="/consent">
  <p><label>Pseudonym (1–40 letters, digits, <code>-</code>, <code>_</code>, <code>.</code>)
    <input name="pseudonym" required maxlength="40" pattern="[A-Za-z0-9._\\-]{{1,40}}" autocomplete="off"></label></p>
  <p><label><input type="checkbox" name="consent" value="yes" required> I agree that the above is stored</label></p>
  <p><button class="main" type="submit">Consent and start</button></p>
</form>""",
        reviewer,
    )


def compare_page(reviewer: str, left: dict, right: dict, form_id: str, done: int, total: int) -> bytes:
    """The comparison form for one pair, left and right as given."""
    gen = left["manifest"]["artwork"]["generator"]
    sides = ""
    for side, art in (("left", left), ("right", right)):
        aid = escape(art["id"])
        sides += (
            f'<figure class="{side}"><img src="/image/{aid}" alt="{side} artwork" width="320" height="320">'
            f'<figcaption>{side.capitalize()} · <a href="/card/{aid}" target="_blank" rel="noopener">'
            "provenance card</a></figcaption></figure>"
        )
    reasons = "".join(f'<option value="{escape(k)}">{escape(v)}</option>' for k, v in votes.FLAG_REASONS.items())
    return page(
        "Atelier review: compare",
        f"""<h1>Which is better?</h1>
<p>Prompt: <b class="prompt">{escape(gen["prompt"])}</b> · seed {int(gen["seed"])} · pair {done + 1} of {total}</p>
<form method="post" action="/vote">
  <input type="hidden" name="form_id" value="{escape(form_id)}">
  <input type="hidden" name="left" value="{escape(left["id"])}">
  <input type="hidden" name="right" value="{escape(right["id"])}">
  <div class="pair">{sides}</div>
  <div class="choices">
    <button class="main" type="submit" name="choice" value="left">Left is better</button>
    <button type="submit" name="choice" value="tie">Tie</button>
    <button class="main" type="submit" name="choice" value="right">Right is better</button>
  </div>
  <fieldset><legend>Or flag an artwork</legend>
    <label>Which <select name="flagged"><option value="">choose…</option>
      <option value="{escape(left["id"])}">the left artwork</option>
      <option value="{escape(right["id"])}">the right artwork</option></select></label>
    <label>Why <select name="flag_reason"><option value="">choose…</option>{reasons}</select></label>
    <button type="submit" name="choice" value="flag">Flag</button>
  </fieldset>
</form>
<p><small>The provenance cards name each side's model version and setting: open them after you choose.</small></p>""",
        reviewer,
    )


def _tree(value: object) -> str:
    """A manifest value as nested HTML lists, every value escaped."""
    if isinstance(value, dict):
        return "<dl>" + "".join(f"<dt>{escape(str(k))}</dt><dd>{_tree(v)}</dd>" for k, v in value.items()) + "</dl>"
    if isinstance(value, list):
        return "<ul>" + "".join(f"<li>{_tree(v)}</li>" for v in value) + "</ul>" if value else "(none)"
    return escape("—" if value is None else str(value))


def card_page(art: dict, reviewer: str | None) -> bytes:
    """One artwork's provenance manifest as a page."""
    aid, gen = escape(art["id"]), art["manifest"]["artwork"]["generator"]
    return page(
        f"Provenance card {art['id']}",
        f"""<h1>Provenance card</h1>
<p><img src="/image/{aid}" alt="artwork {aid}" width="256" height="256"></p>
<p>Artwork <code>{aid}</code>: <b>{escape(gen["prompt"])}</b>, seed {int(gen["seed"])}, guidance
{float(gen["guidance"])}; model {escape(art["model_name"])} version {escape(art["model_version"])}.</p>
<p><small>The manifest as the ledger recorded it; the PNG carries it signed (C2PA): check a copy with
<code>atelier audit FILE</code>.</small></p>{_tree(art["manifest"])}""",
        reviewer,
    )


def gallery_files(artworks: Path) -> dict[str, Path]:
    """The files /gallery/ may serve: a listing of the artworks folder (quarantine/ and symlinks never)."""
    return {
        p.relative_to(artworks).as_posix(): p
        for pattern in GALLERY_FILES
        for p in artworks.glob(pattern)
        if p.is_file() and not p.is_symlink()
    }


class Handler(BaseHTTPRequestHandler):
    """One request: route, check, answer; a Refused becomes a short 4xx page."""

    server: ReviewServer
    server_version = "atelier-review"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        """Log nothing: the default would write the client's IP address."""

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _not_allowed(self) -> None:
        def refuse():
            raise Refused(HTTPStatus.METHOD_NOT_ALLOWED, "use GET or POST")

        self._handle(refuse)

    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _handle(self, route) -> None:
        conn = None
        try:
            self._check_host()
            conn = votes.connect(self.server.ledger_path)
            self.conn = conn
            status, headers, body = route()
        except Refused as exc:
            status, headers = exc.status, {"Content-Type": "text/html; charset=utf-8"}
            body = page(
                f"{exc.status.value} {exc.status.phrase}",
                f"<h1>{exc.status.value} {exc.status.phrase}</h1>"
                f'<p class="error">{escape(exc.message)}</p><p><a href="/compare">Back to comparing</a></p>',
            )
        finally:
            if conn is not None:
                conn.close()
        self.send_response(status)
        for name, value in {
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",
            "Content-Length": str(len(body)),
            **headers,
        }.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _check_host(self) -> None:
        """Only our own Host (no DNS rebinding) and, on POST, our own Origin (no cross-site forms)."""
        port = self.server.server_address[1]
        hosts = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]", self.server.server_address[0])}
        if self.headers.get("Host") not in hosts:
            raise Refused(HTTPStatus.BAD_REQUEST, "wrong Host header: open the address the server printed")
        origin = self.headers.get("Origin")
        if self.command == "POST" and origin not in (None, "null") and origin.removeprefix("http://") not in hosts:
            raise Refused(HTTPStatus.FORBIDDEN, "forms are accepted only from this site")

    def _reviewer(self) -> str | None:
        """The consented pseudonym in the cookie, or None."""
        try:
            morsel = SimpleCookie(self.headers.get("Cookie") or "").get(COOKIE)
        except CookieError:
            return None
        name = morsel.value if morsel else None
        return name if name and votes.PSEUDONYM.fullmatch(name) and votes.reviewer(self.conn, name) else None

    def _get(self) -> tuple[HTTPStatus, dict, bytes]:
        path = urlsplit(self.path).path
        html = {"Content-Type": "text/html; charset=utf-8"}
        if path == "/":
            return HTTPStatus.OK, html, consent_page(self._reviewer())
        if path == "/compare":
            return self._compare()
        if path.startswith("/image/"):
            art = self._artwork(path.removeprefix("/image/"))
            file = self.server.artworks / f"{art['id']}.png"
            if not file.is_file():
                raise Refused(HTTPStatus.NOT_FOUND, "that artwork's image is not in the artworks folder")
            return HTTPStatus.OK, {"Content-Type": "image/png"}, file.read_bytes()
        if path.startswith("/card/"):
            return HTTPStatus.OK, html, card_page(self._artwork(path.removeprefix("/card/")), self._reviewer())
        if path == "/gallery":
            return HTTPStatus.MOVED_PERMANENTLY, {"Location": "/gallery/"}, b""
        if path.startswith("/gallery/"):
            name = unquote(path.removeprefix("/gallery/"), errors="strict") or "index.html"
            file = gallery_files(self.server.artworks).get(name)
            if file is None:
                raise Refused(
                    HTTPStatus.NOT_FOUND,
                    "no such gallery file (run `atelier generate` to make the gallery)"
                    if name == "index.html"
                    else "no such gallery file",
                )
            return HTTPStatus.OK, {"Content-Type": CONTENT_TYPES[file.suffix]}, file.read_bytes()
        raise Refused(HTTPStatus.NOT_FOUND, "no such page")

    def _artwork(self, artwork_id: str) -> dict:
        art = ledger.get(self.conn, artwork_id) if ARTWORK_ID.fullmatch(artwork_id) else None
        if art is None:
            raise Refused(HTTPStatus.NOT_FOUND, "no artwork with that id in the ledger")
        return art

    def _pairs(self) -> list[tuple[dict, dict]]:
        """The comparable artworks: from the team's ledger in team mode (votes stay in the embedded file)."""
        if not ledger.is_team():
            return votes.pairs(self.conn)
        team = ledger.open_read_only()
        try:
            return votes.pairs(team) if team is not None else []
        finally:
            if team is not None:
                team.close()

    def _compare(self) -> tuple[HTTPStatus, dict, bytes]:
        reviewer = self._reviewer()
        if reviewer is None:
            return HTTPStatus.SEE_OTHER, {"Location": "/"}, b""
        seen = votes.voted_pairs(self.conn, reviewer)
        shown = [
            (a, b)
            for a, b in self._pairs()
            if (self.server.artworks / f"{a['id']}.png").is_file()
            and (self.server.artworks / f"{b['id']}.png").is_file()
        ]
        left = [p for p in shown if frozenset((p[0]["id"], p[1]["id"])) not in seen]
        if not left:
            body = (
                f"<h1>Nothing left to compare</h1><p>You have voted on all {len(shown)} pairs: thank you. "
                "New pairs appear when artworks are made for the same prompt and seed by another model version "
                "or guidance setting.</p>"
                if shown
                else "<h1>No pairs yet</h1><p>The ledger holds no two artworks for the same prompt and seed from "
                "different model versions or guidance settings.</p>"
            )
            return HTTPStatus.OK, {"Content-Type": "text/html; charset=utf-8"}, page("Atelier review", body, reviewer)
        a, b = self.server.rng.choice(left)
        if self.server.rng.random() < 0.5:
            a, b = b, a
        form_id = votes.issue_form(self.conn, reviewer, a["id"], b["id"])
        return (
            HTTPStatus.OK,
            {"Content-Type": "text/html; charset=utf-8"},
            compare_page(reviewer, a, b, form_id, len(shown) - len(left), len(shown)),
        )

    def _form(self, path: str) -> dict[str, str]:
        """The POSTed form's fields: urlencoded, at most 16 KiB, each field known and given once."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "a form needs a Content-Length")
        if int(length) > MAX_BODY:
            if int(length) <= MAX_DRAIN:
                self.rfile.read(int(length))  # read it, so the client is not reset before it sees the answer
            self.close_connection = True
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a form is at most {MAX_BODY // 1024} KiB")
        body = self.rfile.read(int(length))
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the form as application/x-www-form-urlencoded")
        try:
            items = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=bool(body),
                errors="strict",
                max_num_fields=10,
            )
        except (UnicodeDecodeError, ValueError):
            raise Refused(HTTPStatus.BAD_REQUEST, "the form is not valid urlencoded UTF-8") from None
        required, optional = FIELDS[path]
        names = [k for k, _ in items]
        unknown = sorted(set(names) - required - optional)
        if unknown:
            raise Refused(HTTPStatus.BAD_REQUEST, f"unknown field(s): {', '.join(unknown)}")
        if len(names) != len(set(names)):
            raise Refused(HTTPStatus.BAD_REQUEST, "a field was sent twice")
        missing = sorted(required - set(names))
        if missing:
            raise Refused(HTTPStatus.BAD_REQUEST, f"missing field(s): {', '.join(missing)}")
        return dict(items)

    def _post(self) -> tuple[HTTPStatus, dict, bytes]:
        path = urlsplit(self.path).path
        if path not in FIELDS:
            raise Refused(HTTPStatus.NOT_FOUND, "no such form")
        form = self._form(path)
        if path == "/consent":
            if form["consent"] != "yes":
                raise Refused(HTTPStatus.BAD_REQUEST, "tick the consent box to take part")
            try:
                name = votes.register_reviewer(self.conn, form["pseudonym"])["pseudonym"]
            except votes.VoteRefused as exc:
                raise Refused(HTTPStatus.BAD_REQUEST, str(exc)) from None
            return (
                HTTPStatus.SEE_OTHER,
                {"Location": "/compare", "Set-Cookie": f"{COOKIE}={name}; Path=/; HttpOnly; SameSite=Strict"},
                b"",
            )
        reviewer = self._reviewer()
        if reviewer is None:
            raise Refused(HTTPStatus.FORBIDDEN, "consent first: open the start page and give a pseudonym")
        if not (
            FORM_ID.fullmatch(form["form_id"])
            and ARTWORK_ID.fullmatch(form["left"])
            and ARTWORK_ID.fullmatch(form["right"])
        ):
            raise Refused(HTTPStatus.BAD_REQUEST, "malformed form or artwork id")
        try:
            outcome = votes.record_vote(
                self.conn,
                form["form_id"],
                reviewer,
                form["left"],
                form["right"],
                form["choice"],
                form.get("flag_reason") or None,
                form.get("flagged") or None,
            )
        except votes.VoteRefused as exc:
            raise Refused(HTTPStatus.BAD_REQUEST, str(exc)) from None
        if outcome == "duplicate":
            raise Refused(HTTPStatus.CONFLICT, "this form was counted already; here is the next pair")
        return HTTPStatus.SEE_OTHER, {"Location": "/compare"}, b""


def main(host: str, port: int) -> int:
    """`atelier review`: serve until Ctrl-C (a host other than loopback is allowed, with a warning)."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"atelier: warning: serving the review page on {host}: anyone who can reach it can vote", file=sys.stderr)
    serve(host, port)
    return 0


def prepare(versions: list[str] | None, guidances: list[float] | None) -> dict:
    """Artworks of each version (default: champion and challenger) at each guidance for the generate prompts and
    seed, so that reviewers have pairs (same prompt and seed, another version or guidance) to compare. Returns what
    was made ({versions, guidances, artworks, pairs}); ValueError when there is nothing to compare."""
    from atelier.config import load_params

    params = load_params()
    name, g = params.registry.model_name, params.generate
    if not versions:
        from registry import tracking

        found = [tracking.version_by_alias(name, alias) for alias in (tracking.CHAMPION, tracking.CHALLENGER)]
        versions = [info["version"] for info in found if info is not None]
    versions = list(dict.fromkeys(str(v) for v in versions))
    guidances = list(dict.fromkeys(guidances or [g.guidance]))
    if len(versions) * len(guidances) < 2:  # said before the models are loaded
        raise ValueError(
            f"nothing to compare (versions {versions or 'none'}, guidance {guidances}); name two "
            "versions with --version, or two settings with --guidance"
        )
    from stages.generate import generate_artworks, opted_out_creators, screen_prompts

    prompts, _ = screen_prompts(g.prompts, opted_out_creators(paths.OPT_OUT))
    made = 0
    for version in versions:
        for guidance in guidances:
            # candidates=1: reviewers compare models on the same seed, never on each model's best of K
            made += len(generate_artworks(prompts, seed=g.seed, guidance=guidance, version=version, candidates=1))
    conn = ledger.open_read_only()
    try:
        found = len(votes.pairs(conn)) if conn is not None else 0
    finally:
        if conn is not None:
            conn.close()
    return {"versions": versions, "guidances": guidances, "artworks": made, "pairs": found}
