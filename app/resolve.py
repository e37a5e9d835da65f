"""`atelier resolve serve`: the query part of the C2PA Soft Binding Resolution API over the ledger, so that a platform
that finds Atelier's watermark (or only has the picture) can ask for the artwork's manifest.

    GET  /matches/byBinding?alg=&value=[&maxResults=N]   (also POST, JSON body {"alg", "value"})
    POST /matches/byContent[?maxResults=N]                body: the image (Content-Type image/*), or multipart/form-data
                                                          with one file
    GET  /manifests/{manifestId}                          the artwork's C2PA manifest store (application/c2pa)
    GET  /services/supportedAlgorithms                    {"watermarks": [{"alg"}], "fingerprints": [{"alg"}]}

A match is {"manifestId": the artwork id, "similarityScore": 0-100, "foundBy": "watermark" | "phash"}, plus the
perceptual hash distance in bits ("phashDistance") when found that way. byBinding knows the watermark (watermark.ALG,
value: base64 of the 8-byte id) and the perceptual hash (PHASH_ALG, value: base64 of its 8 bytes). byContent reads
the watermark (version 2 `watermark.read`: an exact id; else a version 1 mark, the nearest version 1 id as
ledger.by_watermark matches, confirmed by perceptual hash as the audit does), then looks the perceptual hash up within
PHASH_MAX_BITS (the audit's threshold for a match by hash alone). No match is 200 with {"matches": []}.

/manifests/{id}: the ledger keeps the Atelier provenance manifest (JSON), not the C2PA manifest store, so the store
is read from the signed artwork `<artworks>/<id>.png` (its caBX chunk: the JUMBF store as c2pa embeds it in a PNG)
and served as application/c2pa, which is what the API returns. When the signed PNG is not in the artworks folder,
the ledger's JSON manifest is served instead as application/json (a 200 whose Content-Type says which).

Safety: the ledger is opened read-only (SQLite `mode=ro`) for each request; the server binds to loopback unless
told otherwise; an upload is bounded (MAX_UPLOAD bytes: 413; MAX_PIXELS decoded pixels: 413, before decoding);
anything not a decodable PNG, JPEG, WebP, GIF, BMP or TIFF is 400, another Content-Type 415; every error is JSON
{"error": ...} (404 unknown path, 405 wrong method, 500 without a traceback). No client address is logged.

Scale: a lookup by binding is one indexed SQLite query (watermark_id is UNIQUE); the perceptual hashes live in
memory as a numpy uint64 array (XOR + popcount over all of them: a few ms at a million), refreshed before each
lookup with the rows added since (by rowid). See bench/resolution_scale.py.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import io
import json
import re
import sqlite3
import sys
import threading
import traceback
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

from app.audit import PHASH_CONFIRM_BITS, PHASH_ONLY_BITS
from app.serving import serve_until_stopped
from atelier import paths
from atelier.hashing import phash
from provenance import ledger, watermark

PHASH_ALG = "local.atelier.phash.1"  # imagehash's 64-bit DCT pHash (atelier.hashing.phash), Hamming distance
PHASH_MAX_BITS = PHASH_ONLY_BITS
MAX_UPLOAD = 20 * 1024 * 1024  # bytes of an uploaded image
MAX_JSON = 64 * 1024  # bytes of a byBinding JSON body
MAX_PIXELS = 40_000_000  # decoded pixels of an upload (a decompression bomb is refused before decoding)
DEFAULT_RESULTS, MAX_RESULTS = 10, 100
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
ARTWORK_ID = re.compile(r"[0-9a-f]{16}")  # the first 16 hex digits of the pixel sha256 (stages/generate.py)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Refused(Exception):
    """A request answered with a 4xx status and a JSON {"error": message}."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class PhashIndex:
    """Every artwork's perceptual hash as one uint64 array (and the version 1 watermark ids, few), refreshed from the
    ledger with the rows added since."""

    def __init__(self) -> None:
        self.entries: tuple[np.ndarray, list[str]] = (np.empty(0, dtype=np.uint64), [])  # hashes and their artworks
        self.v1_ids: dict[int, str] = {}  # version 1 watermark id -> artwork id
        self.last_rowid = 0
        self._lock = threading.Lock()

    def refresh(self, conn: sqlite3.Connection) -> int:
        """Load the rows whose rowid is above the last seen (an upsert keeps its rowid and, as the artwork id is its
        pixel hash, its phash and watermark id); return how many were added. A watermark id is version 2 when the
        ledger reserved it as its own seq (ledger.v1_watermark_ids's rule)."""
        with self._lock:
            rows = conn.execute(
                "SELECT a.rowid, a.id, a.phash, a.watermark_id, w.seq IS NOT NULL FROM artworks a "
                "LEFT JOIN watermarks w ON w.seq = a.watermark_id AND w.watermark_id = w.seq "
                "WHERE a.rowid > ? ORDER BY a.rowid",
                (self.last_rowid,),
            ).fetchall()
            if rows:
                added = np.frombuffer(bytes.fromhex("".join(r[2] for r in rows)), dtype=">u8").astype(np.uint64)
                hashes, ids = self.entries
                # replaced whole, never edited: a lookup in another thread keeps the pair it took
                self.entries = (np.concatenate([hashes, added]), ids + [r[1] for r in rows])
                self.v1_ids = self.v1_ids | {r[3]: r[1] for r in rows if r[3] is not None and not r[4]}
                self.last_rowid = rows[-1][0]
            return len(rows)

    def near(self, h: str, max_bits: int, limit: int) -> list[tuple[str, int]]:
        """(artwork id, Hamming distance) of the hashes within `max_bits` of `h`, nearest first, at most `limit`."""
        hashes, ids = self.entries
        distances = np.bitwise_count(hashes ^ np.uint64(int(h, 16)))
        hits = np.flatnonzero(distances <= max_bits)
        order = hits[np.lexsort((hits, distances[hits]))][:limit]
        return [(ids[i], int(distances[i])) for i in order]


def supported_algorithms() -> dict:
    """The algorithms this service resolves, in the API's shape."""
    return {"watermarks": [{"alg": watermark.ALG}], "fingerprints": [{"alg": PHASH_ALG}]}


def by_binding(conn: sqlite3.Connection, index: PhashIndex, alg: str, value: str, max_results: int) -> dict:
    """Matches for a soft binding value: the watermark id (an indexed lookup) or a perceptual hash."""
    if alg == watermark.ALG:
        try:
            wm_id = watermark.id_from_binding(value)
        except ValueError as exc:
            raise Refused(
                HTTPStatus.BAD_REQUEST, f"value is not a {alg} binding (base64 of the 8-byte watermark id): {exc}"
            ) from None
        row = ledger.by_watermark_id(conn, wm_id)
        return {"matches": [_match(row["id"], 100, "watermark")] if row else []}
    if alg == PHASH_ALG:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 8:
            raise Refused(HTTPStatus.BAD_REQUEST, f"value is not a {alg} binding: base64 of the hash's 8 bytes")
        index.refresh(conn)
        near = index.near(raw.hex(), PHASH_MAX_BITS, max_results)
        return {"matches": [_phash_match(i, d) for i, d in near]}
    supported = [a["alg"] for group in supported_algorithms().values() for a in group]
    raise Refused(HTTPStatus.BAD_REQUEST, f"unknown alg {alg!r}: this service resolves {', '.join(supported)}")


def by_content(conn: sqlite3.Connection, index: PhashIndex, image: Image.Image, max_results: int) -> dict:
    """Matches for an image: its watermark (v2, then v1 confirmed by perceptual hash), then its perceptual hash."""
    rgb = image.convert("RGB")
    h = phash(rgb)
    matches: list[dict] = []
    index.refresh(conn)
    reading = watermark.read(rgb) if min(rgb.size) >= watermark.MIN_READ else None
    row = ledger.by_watermark_id(conn, reading.id) if reading and reading.id is not None else None
    if row is not None:
        matches.append(_match(row["id"], _score(reading.confidence), "watermark"))
    elif index.v1_ids and min(rgb.size) >= watermark.MIN_SIDE:
        # a version 1 mark: the clear nearest id (as ledger.by_watermark), confirmed by perceptual hash (as the audit)
        found = watermark.nearest(watermark.decode(rgb), list(index.v1_ids))
        row = ledger.get(conn, index.v1_ids[found.id]) if found.id is not None else None
        if row is not None and watermark.hamming(int(h, 16), int(row["phash"], 16)) <= PHASH_CONFIRM_BITS:
            matches.append(_match(row["id"], _score(1 - found.distance / watermark.BITS), "watermark"))
    seen = {m["manifestId"] for m in matches}
    matches += [_phash_match(i, d) for i, d in index.near(h, PHASH_MAX_BITS, max_results) if i not in seen]
    return {"matches": matches[:max_results]}


def manifest_store(conn: sqlite3.Connection, artworks: Path, manifest_id: str) -> tuple[str, bytes]:
    """(Content-Type, bytes) of an artwork's manifest: the C2PA store from its signed PNG, else the ledger's JSON."""
    row = ledger.get(conn, manifest_id) if ARTWORK_ID.fullmatch(manifest_id) else None
    if row is None:
        raise Refused(HTTPStatus.NOT_FOUND, f"no artwork {manifest_id!r} in the ledger")
    signed = Path(artworks) / f"{manifest_id}.png"
    store = c2pa_store(signed.read_bytes()) if signed.is_file() else None
    if store is not None:
        return "application/c2pa", store
    return "application/json", json.dumps(row["manifest"], sort_keys=True, ensure_ascii=False).encode("utf-8")


def c2pa_store(png: bytes) -> bytes | None:
    """The C2PA manifest store (JUMBF) a PNG carries in its caBX chunk, or None."""
    pos = 8
    while pos + 8 <= len(png):
        length, kind = int.from_bytes(png[pos : pos + 4], "big"), png[pos + 4 : pos + 8]
        if kind == b"caBX":
            return png[pos + 8 : pos + 8 + length]
        if kind == b"IEND":
            return None
        pos += 12 + length
    return None


def open_image(data: bytes) -> Image.Image:
    """The uploaded image, decoded; Refused for a bomb (413) or anything not a whole image of a known format (400)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            if image.width * image.height > MAX_PIXELS:
                raise Refused(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"the image is {image.width}x{image.height} pixels; at most {MAX_PIXELS:,} are decoded",
                )
            image.load()
    except Refused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Refused(HTTPStatus.BAD_REQUEST, f"not a decodable {'/'.join(FORMATS)} image ({exc})") from None
    return image


def _match(artwork_id: str, score: int, how: str) -> dict:
    return {"manifestId": artwork_id, "similarityScore": score, "foundBy": how}


def _phash_match(artwork_id: str, distance: int) -> dict:
    return _match(artwork_id, _score(1 - distance / 64), "phash") | {"phashDistance": distance}


def _score(fraction: float) -> int:
    return max(0, min(100, round(100 * float(fraction))))


# The HTTP layer: routes, bodies and errors; the lookups above do the work.


class ResolveServer(ThreadingHTTPServer):
    """The resolution service: where the ledger and the signed artworks are, and the in-memory phash index."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, host: str, port: int, ledger_path: Path, artworks: Path):
        self.ledger_path, self.artworks, self.index = Path(ledger_path), Path(artworks), PhashIndex()
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class Handler(BaseHTTPRequestHandler):
    """One request: route, read the body within its bound, look up, answer JSON (or the manifest store)."""

    server: ResolveServer
    server_version = "atelier-resolve"
    sys_version = ""
    ROUTES = {
        "/matches/byBinding": ("GET", "POST"),
        "/matches/byContent": ("POST",),
        "/services/supportedAlgorithms": ("GET",),
    }

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        """Log nothing: the default would write the client's IP address."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_GET

    def _handle(self) -> None:
        conn = None
        try:
            url = urlsplit(self.path)
            allowed = ("GET",) if url.path.startswith("/manifests/") else self.ROUTES.get(url.path)
            if allowed is None:
                raise Refused(HTTPStatus.NOT_FOUND, f"no such resource {url.path!r}; see /services/supportedAlgorithms")
            if self.command not in allowed:
                raise Refused(HTTPStatus.METHOD_NOT_ALLOWED, f"{url.path} answers {' and '.join(allowed)}")
            query = self._query(url.query)
            if url.path == "/services/supportedAlgorithms":
                status, ctype, body = HTTPStatus.OK, "application/json", _json(supported_algorithms())
            else:
                payload = self._body() if self.command == "POST" else b""
                conn = ledger.open_read_only(self.server.ledger_path)
                if conn is None:
                    raise Refused(
                        HTTPStatus.SERVICE_UNAVAILABLE,
                        f"no ledger at {self.server.ledger_path.name}: generate artworks first",
                    )
                status, ctype, body = HTTPStatus.OK, *self._route(url.path, query, payload, conn)
        except Refused as exc:
            status, ctype, body = exc.status, "application/json", _json({"error": exc.message})
            self.close_connection = True  # a body may be left unread
        except Exception:  # noqa: BLE001 (the client gets a plain 500; the operator's terminal gets the traceback)
            traceback.print_exc(file=sys.stderr)
            status, ctype, body = (
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "application/json",
                _json({"error": "internal error; the server's log has the details"}),
            )
        finally:
            if conn is not None:
                conn.close()
        self.send_response(status)
        for name, value in {
            "Content-Type": ctype,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self, path: str, query: dict, payload: bytes, conn: sqlite3.Connection) -> tuple[str, bytes]:
        if path.startswith("/manifests/"):
            return manifest_store(conn, self.server.artworks, path.removeprefix("/manifests/"))
        limit = _max_results(query)
        if path == "/matches/byBinding":
            request = query if self.command == "GET" else self._json_body(payload)
            missing = [k for k in ("alg", "value") if not isinstance(request.get(k), str) or not request.get(k)]
            if missing:
                raise Refused(HTTPStatus.BAD_REQUEST, f"byBinding needs {' and '.join(missing)} (strings)")
            return "application/json", _json(
                by_binding(conn, self.server.index, request["alg"], request["value"], limit)
            )
        return "application/json", _json(by_content(conn, self.server.index, open_image(self._image(payload)), limit))

    def _query(self, text: str) -> dict:
        try:
            query = parse_qs(text, strict_parsing=bool(text), max_num_fields=16)
        except ValueError:
            raise Refused(HTTPStatus.BAD_REQUEST, "malformed query string") from None
        repeated = sorted(k for k, v in query.items() if len(v) > 1)
        if repeated:
            raise Refused(HTTPStatus.BAD_REQUEST, f"repeated query parameter {', '.join(repeated)}")
        return {k: v[0] for k, v in query.items()}

    def _body(self) -> bytes:
        """The request body, at most MAX_UPLOAD bytes (413 beyond, without reading it)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not chunked")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length") from None
        if length < 0 or length > MAX_UPLOAD:
            self.close_connection = True  # answered before the body is read; the connection closes after it
            raise Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body is {length:,} bytes; at most {MAX_UPLOAD:,} are accepted",
            )
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
            raise Refused(HTTPStatus.BAD_REQUEST, f"the body ended after {len(data)} of {length} bytes")
        return data

    def _json_body(self, payload: bytes) -> dict:
        if len(payload) > MAX_JSON:
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a byBinding body is at most {MAX_JSON:,} bytes")
        if self.headers.get_content_type() != "application/json":
            raise Refused(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                'POST /matches/byBinding takes application/json {"alg": ..., "value": ...}',
            )
        try:
            request = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            raise Refused(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
        if not isinstance(request, dict):
            raise Refused(HTTPStatus.BAD_REQUEST, 'the body must be a JSON object {"alg": ..., "value": ...}')
        return request

    def _image(self, payload: bytes) -> bytes:
        """The image bytes of a byContent body: the body itself (image/*) or the one file of a multipart form."""
        ctype = self.headers.get_content_type()
        if ctype.startswith("image/"):
            return payload
        if ctype == "multipart/form-data":
            head = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode("latin-1")
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + payload)
            files = [p for p in message.iter_parts() if p.get_filename()] if message.is_multipart() else []
            if len(files) != 1:
                raise Refused(
                    HTTPStatus.BAD_REQUEST, f"a multipart upload must hold exactly one file, not {len(files)}"
                )
            return files[0].get_payload(decode=True) or b""
        raise Refused(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"POST /matches/byContent takes image/* (or multipart/form-data with one file), not {ctype}",
        )


def _max_results(query: dict) -> int:
    text = query.get("maxResults", str(DEFAULT_RESULTS))
    if not text.isdigit() or not 1 <= int(text) <= MAX_RESULTS:
        raise Refused(HTTPStatus.BAD_REQUEST, f"maxResults must be an integer from 1 to {MAX_RESULTS}")
    return int(text)


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def make_server(
    host: str = "127.0.0.1", port: int = 0, ledger_path: Path | None = None, artworks: Path | None = None
) -> ResolveServer:
    """A resolution server bound to host:port (0: any free port; see .url), not yet serving: call serve_forever()."""
    return ResolveServer(host, port, ledger_path or ledger.location(), Path(artworks or paths.ARTWORKS))


def main(host: str, port: int, ledger_path: Path | None, artworks: Path | None, public: bool) -> int:
    """`atelier resolve serve`: serve until Ctrl-C; a host other than loopback only with --public (exit 2)."""
    if host not in LOOPBACK and not public:
        print(
            f"atelier: resolve serve: refusing to listen on {host}, which other machines can reach; the service "
            "answers anyone who asks which artwork an image is. Pass --public to mean it, or use 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    server = make_server(host, port, ledger_path, artworks)
    conn = ledger.open_read_only(server.ledger_path)
    if conn is not None:  # load the perceptual hashes now rather than on the first request (seconds at a million)
        try:
            server.index.refresh(conn)
        finally:
            conn.close()
    print(
        f"resolution service on {server.url}/ (ledger {server.ledger_path}, read-only, "
        f"{len(server.index.entries[1]):,} artworks; signed artworks {server.artworks}); Ctrl-C stops",
        flush=True,
    )
    serve_until_stopped(server)
    return 0
