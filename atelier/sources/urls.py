"""URL sources: a CSV or JSON Lines list of image URLs, fetched politely and only where no opt-out signal says no.

One item per row, in file order. A row whose fingerprint (`url:<URL>`) is in `known` is yielded without bytes and is
not fetched: ingest reuses the previous run's copy, and leaves out of `known` the URLs fetched more than
`ingest.recheck_after_days` ago (or marked by `atelier sources recheck`), so their signals are checked again.
Anything that stops an image from being had is the item's `error`, "reason: detail"; nothing is dropped and the run
goes on.

Opt-out signals, each checked before the image is kept (refused images are never returned):
- robots.txt of the URL's origin (RFC 9309), for the product token of `http.user_agent` (`AtelierBot/0.1` ->
  `AtelierBot`): the agent's own groups, else the `*` groups; `*` and a final `$` in patterns; the longest matching
  rule wins, Allow on a tie. Checked before the image is requested -> `opted_out:robots_txt`.
- TDM-Rep (W3C TDM Reservation Protocol): `/.well-known/tdmrep.json` of the origin, a JSON array of
  {"location", "tdm-reservation", "tdm-policy"}; the first rule whose location (a robots-style pattern) matches the
  path decides; also checked before the request. The image response's `tdm-reservation: 1` header too.
  -> `opted_out:tdm_reservation`.
- `X-Robots-Tag` response headers (all of them) with `noai` or `noimageai`, for every agent or prefixed with our
  product token (`AtelierBot: noai`); a directive prefixed with another agent's name does not apply to us.
  -> `opted_out:x_robots_tag`.
Reservations inside the image bytes (C2PA/CAWG training-mining, XMP plus:DataMining, noai metadata) are read by the
ingest stage for every source kind alike (provenance/reservations.py), downloads included.
Redirects are followed by hand (at most 5): each hop must be http(s) (else `url_invalid`) and passes the robots.txt
and tdmrep.json checks of its own origin, so the final URL's host is checked as well.

Politeness: the `User-Agent` is `http.user_agent`; every request has `http.timeout_s` to connect and for each read
(a server that accepts and then hangs times out); timeouts, connection errors, 5xx and 429 are retried
`http.retries` times, after Retry-After seconds (at most 30) or `backoff_s * 2**(n-1)`; other 4xx are not retried.
At most `http.max_connections` requests run at once, at most `http.per_host_concurrency` per host; results are
yielded in input order with a lookahead of 4 * max_connections rows, so memory stays bounded. A body is read up to
max_file_bytes + 1 bytes, then refused as `file_too_large`. robots.txt and tdmrep.json are fetched once per origin
and run: a 4xx (or too many redirects) means no rules; 5xx, timeouts and unreachable hosts mean nothing on that origin
is fetched (RFC 9309's "complete disallow"), recorded with the failure's own reason (`http_error`, `http_timeout`,
`http_unreachable`) because no one opted out. Other failures: `http_error` (e.g. HTTP 404), `http_timeout`,
`http_unreachable`, `url_invalid` (not http(s), no host, credentials in the URL).
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Container, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.client import HTTPException, HTTPMessage
from urllib.parse import urljoin, urlsplit

from atelier.sources.item import Item, source_root
from atelier.sources.metadata import MetadataRow, iter_metadata_file

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5  # RFC 9309 asks crawlers to follow at least five for robots.txt
RETRY_AFTER_CAP_S = 30.0
POLICY_FILE_BYTES = 512 * 1024  # RFC 9309: parse at least the first 500 KiB of robots.txt
LOOKAHEAD_PER_CONNECTION = 4
X_ROBOTS_OPT_OUTS = {"noai", "noimageai"}
X_ROBOTS_VALUED = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}  # "name: value"


class Refused(Exception):
    """The item's bytes cannot be had or kept; the message is the item's error, "reason: detail"."""


# --- URLs --------------------------------------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """Why `url` cannot be fetched (completes "'<url>' ..."), or None for an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"is not an http(s) URL (scheme '{parts.scheme}')" if parts.scheme else "is not an absolute http(s) URL"
    if not parts.hostname:
        return "has no host"
    if "@" in parts.netloc:
        return "contains credentials; remove them"
    if re.search(r"[\x00-\x20\x7f]", url):
        return "contains spaces or control characters; percent-encode them"
    return None


def origin_of(url: str) -> str:
    """scheme://host[:port] of an http(s) URL: robots.txt and tdmrep.json apply per origin."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme.lower()}://{host}" + (f":{parts.port}" if parts.port else "")


def target_of(url: str) -> str:
    """The path and query that robots.txt and tdmrep.json patterns are matched against."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def pattern_regex(pattern: str) -> re.Pattern:
    """A robots.txt-style path pattern: a prefix, where `*` matches any characters and a final `$` ends the path."""
    anchored = pattern.endswith("$")
    body = pattern[:-1] if anchored else pattern
    return re.compile(".*".join(map(re.escape, body.split("*"))) + (r"\Z" if anchored else ""), re.DOTALL)


# --- HTTP --------------------------------------------------------------------------------------------------------

READ_CHUNK = 1 << 16
READ_DEADLINE_FACTOR = 10  # a body must arrive within 10 x http.timeout_s in all


@dataclass
class Response:
    """One HTTP answer; `body` holds at most `limit` + 1 bytes (empty for errors and redirects)."""

    url: str
    status: int
    reason: str
    headers: HTTPMessage
    body: bytes = b""
    declared_too_large: bool = False  # Content-Length over the limit: the body was not read


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Hand redirects back as responses: the fetcher follows them itself, checking each hop."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Client:
    """HTTP GET with the source's user agent, timeout, retries and per-host concurrency limit (thread-safe)."""

    def __init__(self, http):
        self.http = http
        self.opener = urllib.request.build_opener(_NoRedirects())
        self.lock = threading.Lock()
        self.slots: dict[str, threading.BoundedSemaphore] = {}

    def get(self, url: str, limit: int) -> Response:
        """The answer for `url` (redirects not followed), retrying timeouts, connection errors, 5xx and 429; raises
        Refused (http_timeout, http_unreachable or http_error) when every attempt failed."""
        attempts = self.http.retries + 1
        for attempt in range(1, attempts + 1):
            wait = None
            try:
                response = self._once(url, limit)
            except (OSError, HTTPException) as exc:  # URLError, timeouts, resets, TLS errors, broken responses
                failure = self._failure(exc, url)
            else:
                if response.status != 429 and response.status < 500:
                    return response
                failure = f"http_error: HTTP {response.status} {response.reason} on {url}"
                wait = retry_after(response.headers)
            if attempt < attempts:
                time.sleep(wait if wait is not None else self.http.backoff_s * 2 ** (attempt - 1))
        raise Refused(f"{failure} ({attempts} attempt{'s' if attempts > 1 else ''})")

    def _once(self, url: str, limit: int) -> Response:
        request = urllib.request.Request(url, headers={"User-Agent": self.http.user_agent})
        with self._slot(urlsplit(url).hostname):
            try:
                response = self.opener.open(request, timeout=self.http.timeout_s)
            except urllib.error.HTTPError as exc:  # 3xx, 4xx, 5xx: the status is the answer
                exc.close()
                return Response(url, exc.code, str(exc.reason), exc.headers)
            except ValueError as exc:  # http.client.InvalidURL and the like
                raise Refused(f"url_invalid: '{url}' cannot be requested ({exc})") from exc
            with response:
                declared = (response.headers.get("Content-Length") or "").strip()
                if declared.isdigit() and int(declared) > limit:
                    return Response(url, response.status, response.reason, response.headers, declared_too_large=True)
                return Response(
                    url,
                    response.status,
                    response.reason,
                    response.headers,
                    _read_within(response, limit + 1, READ_DEADLINE_FACTOR * self.http.timeout_s, url),
                )

    def _slot(self, host: str) -> threading.BoundedSemaphore:
        with self.lock:
            return self.slots.setdefault(host, threading.BoundedSemaphore(self.http.per_host_concurrency))

    def _failure(self, exc: Exception, url: str) -> str:
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(cause, TimeoutError):
            return f"http_timeout: no answer from {url} within timeout_s={self.http.timeout_s}"
        if isinstance(exc, HTTPException):
            return f"http_error: broken response from {url} ({type(exc).__name__}: {exc})"
        return f"http_unreachable: {url} ({cause})"


def _read_within(response, limit: int, seconds: float, url: str) -> bytes:
    """At most `limit` bytes of the body, in chunks; a server trickling bytes past `seconds` is a timeout (the socket
    timeout alone applies to each read, so a slow trickle could hold a connection for ever)."""
    deadline, chunks, size = time.monotonic() + seconds, [], 0
    while size < limit:
        chunk = response.read(min(READ_CHUNK, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: body not read within {seconds:.0f} s")
    return b"".join(chunks)


def retry_after(headers: HTTPMessage) -> float | None:
    """Seconds a Retry-After header asks for (delay or HTTP date), capped at RETRY_AFTER_CAP_S; None if absent."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - datetime.now(UTC)).total_seconds(), 0.0), RETRY_AFTER_CAP_S)


# --- robots.txt and tdmrep.json ------------------------------------------------------------------------------------


@dataclass
class Rule:
    """One robots.txt Allow/Disallow line, or one tdmrep.json entry."""

    pattern: str
    allow: bool
    policy: str | None = None  # tdm-policy
    regex: re.Pattern = field(init=False)

    def __post_init__(self):
        self.regex = pattern_regex(self.pattern)


def parse_robots(text: str, product: str) -> list[Rule]:
    """The rules of robots.txt that apply to `product` (RFC 9309): its own groups, else the `*` groups."""
    groups: list[tuple[set[str], list[Rule]]] = []
    reading_agents = False
    for line in text.splitlines():
        key, colon, value = line.split("#", 1)[0].partition(":")
        key, value = key.strip().lower(), value.strip()
        if not colon:
            continue
        if key == "user-agent":
            if not reading_agents:
                groups.append((set(), []))
            groups[-1][0].add(value.split("/")[0].strip().lower())
            reading_agents = True
        elif key in ("allow", "disallow"):
            reading_agents = False
            if groups and value:  # an empty Disallow allows everything: no rule
                groups[-1][1].append(Rule(value, allow=key == "allow"))
    mine = [rules for agents, rules in groups if product.lower() in agents]
    if not mine:
        mine = [rules for agents, rules in groups if "*" in agents]
    return [rule for rules in mine for rule in rules]


def robots_disallows(rules: list[Rule], target: str) -> Rule | None:
    """The Disallow rule that decides `target`, or None if allowed (longest match wins, Allow on a tie)."""
    matches = [r for r in rules if r.regex.match(target)]
    if not matches:
        return None
    best = max(matches, key=lambda r: (len(r.pattern), r.allow))
    return None if best.allow else best


def parse_tdmrep(data: bytes) -> list[Rule]:
    """tdmrep.json's rules in file order (`allow` is False where TDM rights are reserved); [] when it is not valid."""
    try:
        entries = json.loads(data)
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    return [
        Rule(e["location"], allow=e.get("tdm-reservation") not in (1, "1"), policy=e.get("tdm-policy"))
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("location"), str)
    ]


@dataclass
class OriginRules:
    """What one origin's robots.txt and tdmrep.json say, or why they could not be fetched."""

    origin: str
    robots: list[Rule] = field(default_factory=list)
    tdm: list[Rule] = field(default_factory=list)
    failure: str | None = None  # "reason: detail": nothing on this origin may be fetched

    def check(self, url: str, agent: str) -> None:
        """Raise Refused if robots.txt or tdmrep.json say `url` may not be fetched for training."""
        if self.failure:
            raise Refused(self.failure)
        target = target_of(url)
        rule = robots_disallows(self.robots, target)
        if rule:
            raise Refused(
                f"opted_out:robots_txt: {self.origin}/robots.txt disallows '{target}' for {agent} "
                f"(Disallow: {rule.pattern})"
            )
        rule = next((r for r in self.tdm if r.regex.match(target)), None)
        if rule and not rule.allow:
            raise Refused(
                f"opted_out:tdm_reservation: {self.origin}/.well-known/tdmrep.json reserves TDM rights on "
                f"'{target}' (location '{rule.pattern}', tdm-policy {rule.policy or 'none'})"
            )


# --- response checks -----------------------------------------------------------------------------------------------


def header_opt_out(response: Response, product: str) -> str | None:
    """The error for an opt-out in the image response's headers (X-Robots-Tag, tdm-reservation), or None."""
    for value in response.headers.get_all("X-Robots-Tag") or []:
        agent, directives = _x_robots_scope(value)
        if agent in (None, "*", product.lower()) and X_ROBOTS_OPT_OUTS & directives:
            return f"opted_out:x_robots_tag: header 'X-Robots-Tag: {value}' on {response.url}"
    if (response.headers.get("tdm-reservation") or "").strip() == "1":
        policy = response.headers.get("tdm-policy") or "none"
        return f"opted_out:tdm_reservation: header 'tdm-reservation: 1' (tdm-policy {policy}) on {response.url}"
    return None


def _x_robots_scope(value: str) -> tuple[str | None, set[str]]:
    """(agent the value is for, or None for every agent; its lower-case directives)."""
    head, colon, rest = value.partition(":")
    head = head.strip().lower()
    if colon and re.fullmatch(r"[\w.*-]+", head) and head not in X_ROBOTS_VALUED:
        return head, {d.strip().lower() for d in rest.split(",")}
    return None, {d.strip().lower() for d in value.split(",")}


# --- fetching ------------------------------------------------------------------------------------------------------


class Fetcher:
    """Fetches image URLs for one source, honouring opt-outs; robots.txt and tdmrep.json cached per origin."""

    def __init__(self, http, max_file_bytes: int):
        self.client = Client(http)
        self.agent = http.user_agent
        self.product = http.user_agent.split("/")[0].strip()
        self.max_file_bytes = max_file_bytes
        self.lock = threading.Lock()
        self.origins: dict[str, tuple[threading.Lock, list[OriginRules]]] = {}

    def fetch(self, url: str) -> bytes:
        """The image at `url` (following redirects); raises Refused with the item's error."""
        start = url
        for _ in range(MAX_REDIRECTS + 1):
            self.rules(url).check(url, self.agent)
            response = self.client.get(url, self.max_file_bytes)
            location = response.headers.get("Location")
            if response.status in REDIRECTS and location:
                url = self._next_hop(url, location)
                continue
            if not 200 <= response.status < 300:
                raise Refused(f"http_error: HTTP {response.status} {response.reason} on {url}")
            return self._checked(response)
        raise Refused(f"http_error: more than {MAX_REDIRECTS} redirects from {start}")

    def _next_hop(self, url: str, location: str) -> str:
        target = urljoin(url, location)
        problem = url_problem(target)
        if problem:
            raise Refused(f"url_invalid: {url} redirects to '{target}', which {problem}")
        return target

    def _checked(self, response: Response) -> bytes:
        error = header_opt_out(response, self.product)
        if error is None and response.declared_too_large:
            error = (
                f"file_too_large: {response.url} declares Content-Length {response.headers['Content-Length']}, "
                f"over ingest.max_file_bytes={self.max_file_bytes}; not downloaded"
            )
        elif error is None and len(response.body) > self.max_file_bytes:
            error = (
                f"file_too_large: {response.url} has more than ingest.max_file_bytes={self.max_file_bytes} "
                "bytes; reading stopped there"
            )
        if error:
            raise Refused(error)
        return response.body

    def rules(self, url: str) -> OriginRules:
        """The origin's robots.txt and tdmrep.json rules, fetched on first use (once, whatever the threads)."""
        origin = origin_of(url)
        with self.lock:
            lock, cached = self.origins.setdefault(origin, (threading.Lock(), []))
        with lock:
            if not cached:
                cached.append(self._load_rules(origin))
            return cached[0]

    def _load_rules(self, origin: str) -> OriginRules:
        rules = OriginRules(origin)
        for name in ("robots.txt", ".well-known/tdmrep.json"):
            try:
                data = self._policy_file(f"{origin}/{name}")
            except Refused as exc:
                reason, _, detail = str(exc).partition(": ")
                rules.failure = (
                    f"{reason}: {origin}/{name} could not be fetched, so nothing on {origin} is "
                    f"fetched (fail closed): {detail}"
                )
                return rules
            if data and name == "robots.txt":
                text = data.decode("utf-8", errors="replace")
                if len(data) == POLICY_FILE_BYTES:  # cut short: drop the partial last line
                    text = text.rsplit("\n", 1)[0]
                rules.robots = parse_robots(text, self.product)
            elif data:
                rules.tdm = parse_tdmrep(data)
        return rules

    def _policy_file(self, url: str) -> bytes | None:
        """The first POLICY_FILE_BYTES of robots.txt or tdmrep.json; None when unavailable (4xx, odd redirects)."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self.client.get(url, POLICY_FILE_BYTES)  # raises Refused after 5xx, timeouts, errors
            location = response.headers.get("Location")
            if response.status in REDIRECTS and location:
                url = urljoin(url, location)
                if url_problem(url):
                    return None
                continue
            return response.body[:POLICY_FILE_BYTES] if 200 <= response.status < 300 else None
        return None


# --- the source ----------------------------------------------------------------------------------------------------


def row_item(row: MetadataRow, column: str) -> Item:
    """The item of one metadata row, with `url_invalid` set when its URL cannot be fetched."""
    if row.error:
        return Item(row=row.line, uri=f"<line {row.line}>", fields=row.fields, error=row.error)
    raw = row.fields.get(column)
    url = raw.strip() if isinstance(raw, str) else ""
    item = Item(
        row=row.line, uri=url or f"<line {row.line}>", fields=row.fields, fingerprint=f"url:{url}" if url else ""
    )
    if not url:
        item.error = f"url_invalid: line {row.line} has no '{column}' value"
    elif problem := url_problem(url):
        item.error = f"url_invalid: line {row.line} '{url}' {problem}"
    return item


def finished(item: Item, future: Future | None) -> Item:
    """`item` with its download's bytes, or its error."""
    if future is not None:
        try:
            item.data = future.result()
        except Refused as exc:
            item.error = str(exc)
        item.fetched_at = time.time()  # when robots.txt, TDM-Rep and the headers were last checked for this URL
    return item


def iter_urls(source, known: Container[str], max_file_bytes: int) -> Iterator[Item]:
    """One item per row of the URL list, in file order; downloads run ahead in a thread pool, a bounded window."""
    path = source_root(source.path)
    if not path.is_file():
        raise FileNotFoundError(f"source '{source.name}': URL list {path} does not exist (params.yaml ingest.sources)")
    http = source.http
    fetcher = Fetcher(http, max_file_bytes)
    window = LOOKAHEAD_PER_CONNECTION * http.max_connections
    pending: deque[tuple[Item, Future | None]] = deque()
    pool = ThreadPoolExecutor(max_workers=http.max_connections, thread_name_prefix=f"urls-{source.name}")
    try:
        for row in iter_metadata_file(path):
            item = row_item(row, source.columns.url)
            fetch = item.error is None and item.fingerprint not in known
            pending.append((item, pool.submit(fetcher.fetch, item.uri) if fetch else None))
            if len(pending) >= window:
                yield finished(*pending.popleft())
        while pending:
            yield finished(*pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
