"""The artwork ledger: one SQLite row per artwork (its manifest, pixel hash, perceptual hash and watermark id), so that
an artwork that lost its embedded manifest can be traced by watermark or perceptual hash, and a takedown can list
every artwork of a model version. Two more tables keep the decisions that must be accountable: `refusals` (artworks
quarantined instead of published, e.g. as a possible replication of a training image) and `promotions` (who made a
version champion, when and why).

Watermark ids (version 2, provenance/watermark.py): the reservation's `seq` itself, 1, 2, 3, ... (the mark carries
48 bits with its own error correction and CRC, so the id needs no distance of its own and decodes to the id
directly; by_watermark_id() then finds the artwork by an indexed lookup). An id is reserved for a *source*, the
sha256 of the pixels before marking: a regenerated artwork (same model, prompt and seed, so the same source) gets the
same id, hence the same marked pixels, the same artwork id and an idempotent upsert.

Ledgers made before hold version 1 ids: code words of the Reed-Muller code RM(2,5) (32 bits, any two at least 8 bits
apart, weight 12 to 20; `seq` was the code word's message index), read with watermark.decode() and matched by nearest
code word (by_watermark). Such a row is told from a version 2 one by its watermark_id differing from its seq (no
RM(2,5) code word of weight 12-20 equals its own message index; the smallest is 65,535). A version 2 reservation in
such a ledger continues after the highest seq and skips any number already taken as a version 1 id.

Every write also appends an entry to `log`, in the same transaction: an append-only hash chain that makes an edited,
reordered or deleted entry detectable (issue 17, item 4). Each entry is the canonical JSON of what was recorded (see
canonical()); `entry_sha256` is its digest and `hash` chains it to the entry before:

    hash = sha256(f"{seq}\n{kind}\n{key}\n{prev}\n{entry_sha256}"), prev = the previous hash (64 zeros for seq 1)

- artwork (key: artwork id): the `artworks` row, manifest parsed. Public, unless it holds a local path (manifests
  written before issue 17 item 3 may): the public log then shows only its digest (see provenance/publiclog.py).
- refusal (key: refusal id): the `refusals` row, `nearest` parsed. Public, on the same condition.
- promotion (key: promotion seq): model_name, version, by, at, reason, previous_champion and a random `nonce`.
  Private: `by` names a person, so the public log shows only the digest, and the nonce stops anyone testing guessed
  names against it. The operator's ledger keeps the full entry.

An upsert that changes nothing (the same artwork regenerated with the same manifest) appends nothing; one that changes
a row appends a new entry for its key, and the latest entry for a key is what the row must equal (verify_ledger). The
log's triggers refuse UPDATE and DELETE.

One controlled exception: erasure (`atelier forget`, erase_record()). A nearest-training-image item naming an erased
record keeps its record id, licence and similarity but its title, creator and source become "(erased)", in the rows
of artworks and refusals; every earlier log entry that held the record has its content replaced by "erased" (not
JSON, so never a real entry), keeping its entry_sha256, prev and hash, so the chain still verifies (it links
digests; the public log shows such an entry as `"withheld": "erased"`); the scrubbed rows are appended as new
entries, and the erasure itself as an entry of kind 'erasure' (public: the record's digest, when, why, which entries
were erased). The triggers are dropped and recreated inside that one transaction; secure_delete and a WAL checkpoint
keep the old text out of the file. provenance/publiclog.py signs the head, exports the public log and verifies
it. A version 1 or 2 ledger gets its log backfilled on open: artworks by (created_at, id), then refusals by
(created_at, id), then promotions by seq.

WAL mode, one short IMMEDIATE transaction per write and a 30 s busy timeout: safe for several processes at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from atelier import paths
from provenance import ledger_pg, signed_json
from provenance.watermark import ID_BITS as WATERMARK_ID_BITS
from provenance.watermark import METHOD, METHOD_V1, Match, hamming, identify, nearest

SCHEMA_VERSION = 3  # 2 added refusals and promotions, 3 the log; older ledgers are migrated on open
MIN_WEIGHT, MAX_WEIGHT = 12, 20  # version 1 code words
CODE_SIZE = 1 << 16  # RM(2,5) has 2**16 code words

SCHEMA = """
CREATE TABLE IF NOT EXISTS artworks (
    id TEXT PRIMARY KEY,                 -- artwork id (manifest "id")
    sha256_pixels TEXT NOT NULL,
    phash TEXT NOT NULL,                 -- 64-bit perceptual hash, 16 hex digits
    watermark_id INTEGER UNIQUE,         -- NULL when the image could not carry a watermark
    manifest TEXT NOT NULL,              -- the provenance manifest, JSON
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artworks_by_model ON artworks (model_name, model_version);
CREATE INDEX IF NOT EXISTS artworks_by_pixels ON artworks (sha256_pixels);
CREATE TABLE IF NOT EXISTS watermarks (
    seq INTEGER PRIMARY KEY,             -- message index of the code word
    watermark_id INTEGER NOT NULL UNIQUE,
    source TEXT NOT NULL UNIQUE,         -- what it was reserved for: sha256 of the pixels before marking
    reserved_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    id TEXT PRIMARY KEY,                 -- the quarantined image's id (first 16 hex digits of its pixel sha256)
    sha256_pixels TEXT NOT NULL,
    phash TEXT NOT NULL,
    prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    reason TEXT NOT NULL,
    nearest TEXT NOT NULL,               -- the nearest training images (record id, creator, licence, similarity), JSON
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS promotions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model_name TEXT NOT NULL,
    version TEXT NOT NULL,
    promoted_by TEXT NOT NULL,           -- the OS user or --by for a person, "gate" for the promote stage
    promoted_at TEXT NOT NULL,           -- UTC, ISO 8601
    reason TEXT NOT NULL,
    previous_champion TEXT               -- NULL when there was none
);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY,             -- 1, 2, 3, ... in the order of the writes
    kind TEXT NOT NULL,                  -- 'artwork', 'refusal', 'promotion', 'erasure' or 'request'
    key TEXT NOT NULL,                   -- the artwork or refusal id, or the promotion seq
    entry TEXT NOT NULL,                 -- canonical JSON of what was recorded
    entry_sha256 TEXT NOT NULL,
    prev TEXT NOT NULL,                  -- the hash of entry seq - 1 (64 zeros for seq 1)
    hash TEXT NOT NULL                   -- sha256 of seq, kind, key, prev and entry_sha256 (see the docstring)
);
CREATE INDEX IF NOT EXISTS log_by_key ON log (kind, key, seq);
CREATE TABLE IF NOT EXISTS rights_requests (
    id TEXT PRIMARY KEY,                 -- the request's secret (its link), never in the log
    ref TEXT NOT NULL UNIQUE,            -- its public reference: sha256(id)[:16], the log's key
    kind TEXT NOT NULL,                  -- opt_out, takedown, erasure or credit
    state TEXT NOT NULL,                 -- received, verified, approved, rejected, applied, retrained, withdrawn
    record_ids TEXT NOT NULL,            -- JSON list of the training records it concerns
    creator TEXT,                        -- the creator named by the requester, if any
    contact TEXT NOT NULL,               -- how to reach the requester: private, never published
    message TEXT NOT NULL,               -- what the requester wrote: private
    image_sha256 TEXT,                   -- the uploaded picture's hashes (filed requests only, never the picture)
    image_phash TEXT,
    verify_token TEXT NOT NULL,          -- what the requester places at the work's source to prove control
    history TEXT NOT NULL,               -- JSON list of {state, at, by, reason}
    facts TEXT NOT NULL,                 -- JSON: what applying it found and did (versions, artworks)
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""
# One statement each (their bodies hold semicolons): the log is append-only.
TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS log_no_update BEFORE UPDATE ON log "
    "BEGIN SELECT RAISE(ABORT, 'the ledger log is append-only: its entries are never updated'); END",
    "CREATE TRIGGER IF NOT EXISTS log_no_delete BEFORE DELETE ON log "
    "BEGIN SELECT RAISE(ABORT, 'the ledger log is append-only: its entries are never deleted'); END",
)
KINDS = ("artwork", "refusal", "promotion", "erasure", "request")  # request: provenance/rights_requests.py
ERASED_ENTRY = "erased"  # the text of a log entry whose content an erasure removed (see erase_record)
ERASED_VALUE = "(erased)"  # a personal field of a nearest-training-image item, once erased
ERASED_FIELDS = ("title", "creator", "source")
GENESIS = "0" * 64  # the prev of the first entry

COLUMNS = ("id", "sha256_pixels", "phash", "watermark_id", "manifest", "model_name", "model_version", "created_at")
RIGHTS_REQUEST_COLUMNS = (
    "id",
    "ref",
    "kind",
    "state",
    "record_ids",
    "creator",
    "contact",
    "message",
    "image_sha256",
    "image_phash",
    "verify_token",
    "history",
    "facts",
    "created_at",
    "updated_at",
)


def location() -> Path | str:
    """Where the ledger is: the team's PostgreSQL database when ATELIER_LEDGER_URL names one (team mode, see
    docs/team.md), else the embedded SQLite file atelier.paths.LEDGER."""
    return os.environ.get("ATELIER_LEDGER_URL") or paths.LEDGER


def is_team() -> bool:
    """Whether the ledger is the team's database (team mode) rather than the embedded file."""
    return ledger_pg.is_url(location())


def exists(path: Path | str | None = None) -> bool:
    """Whether there is a ledger at `path` (default: location()); a PostgreSQL ledger is taken to exist."""
    path = path or location()
    return ledger_pg.is_url(path) or Path(path).exists()


def open_ledger(path: Path | str | None = None) -> sqlite3.Connection:
    """Open (creating if needed) the ledger at `path` (default: location()): a SQLite file in WAL mode, or a
    PostgreSQL database given by its URL (provenance/ledger_pg.py)."""
    path = path or location()
    if ledger_pg.is_url(path):
        conn = ledger_pg.PgConnection(path)
        conn.create_schema()
        return conn
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)  # transactions are explicit (see transaction)
    conn.row_factory = sqlite3.Row
    conn.create_function("phash_distance", 2, _phash_distance, deterministic=True)
    if _journal_mode_wal(conn) != "wal":
        raise sqlite3.OperationalError(f"{path}: could not switch the ledger to WAL mode")
    with transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, 2, SCHEMA_VERSION):  # 0: new file; 1, 2: gain the tables added since
            raise sqlite3.DatabaseError(f"{path}: ledger schema version {version}, this code knows {SCHEMA_VERSION}")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        for trigger in TRIGGERS:
            conn.execute(trigger)
        if version in (1, 2):
            _backfill_log(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return conn


def _journal_mode_wal(conn: sqlite3.Connection, wait_s: float = 30.0) -> str:
    """Switch to WAL. SQLite answers "database is locked" at once, without its busy timeout, while another process
    creates or migrates the same new ledger: retry for up to `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def open_read_only(path: Path | str | None = None) -> sqlite3.Connection | None:
    """The ledger at `path` (default: location()) opened read-only (nothing is created or migrated), or None when
    there is no ledger."""
    path = path or location()
    if ledger_pg.is_url(path):
        conn = ledger_pg.PgConnection(path, read_only=True)
        return conn if conn.has_table("log") else None
    path = Path(path)
    if not path.exists():
        return None
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.create_function("phash_distance", 2, _phash_distance, deterministic=True)
    return conn


def watermark_id_for(conn: sqlite3.Connection, source: str) -> int:
    """The watermark id reserved for `source` (sha256 of the unmarked pixels), reserving the next free one if new: a
    version 2 id (= its seq), whatever ids an older ledger holds."""
    with transaction(conn):
        row = conn.execute("SELECT watermark_id FROM watermarks WHERE source = ?", (source,)).fetchone()
        if row:
            return row[0]
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM watermarks").fetchone()[0] + 1
        while conn.execute("SELECT 1 FROM watermarks WHERE watermark_id = ?", (seq,)).fetchone():
            seq += 1  # taken by a version 1 code word
        if seq >= 2**WATERMARK_ID_BITS:
            raise OverflowError(f"the ledger has used every watermark id (2**{WATERMARK_ID_BITS}); start a new ledger")
        conn.execute(
            "INSERT INTO watermarks (seq, watermark_id, source, reserved_at) VALUES (?, ?, ?, ?)",
            (seq, seq, source, datetime.now(UTC).isoformat(timespec="seconds")),
        )
        return seq


def record(conn: sqlite3.Connection, manifest: dict, watermark_id: int | None) -> None:
    """Insert or update (same artwork id) the artwork described by `manifest`, with its watermark id."""
    art, model = manifest["artwork"], manifest["model"]
    row = (
        manifest["id"],
        art["sha256_pixels"],
        art["phash"],
        watermark_id,
        json.dumps(manifest, sort_keys=True, ensure_ascii=False),
        model["name"],
        str(model["version"]),
        art["created_at"],
    )
    try:
        with transaction(conn):
            conn.execute(
                f"INSERT INTO artworks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:]),
                row,
            )
            _append(conn, "artwork", manifest["id"], _artwork_entry(dict(zip(COLUMNS, row))))
    except sqlite3.IntegrityError as e:
        other = conn.execute("SELECT id FROM artworks WHERE watermark_id = ?", (watermark_id,)).fetchone()
        if other:
            raise ValueError(
                f"artwork {manifest['id']}: watermark id {watermark_id} already belongs to artwork "
                f"{other[0]}; reserve ids with watermark_id_for()"
            ) from e
        raise


REFUSAL_COLUMNS = (
    "id",
    "sha256_pixels",
    "phash",
    "prompt",
    "seed",
    "model_name",
    "model_version",
    "reason",
    "nearest",
    "created_at",
)


def record_refusal(conn: sqlite3.Connection, refusal: dict) -> None:
    """Insert or update (same id) a refused artwork: a `quarantine.json` record (see stages/generate.py)."""
    model = refusal["model"]
    row = (
        refusal["id"],
        refusal["sha256_pixels"],
        refusal["phash"],
        refusal["prompt"],
        int(refusal["seed"]),
        model["name"],
        str(model["version"]),
        refusal["reason"],
        json.dumps(refusal["nearest_training_images"], sort_keys=True, ensure_ascii=False),
        refusal["created_at"],
    )
    with transaction(conn):
        conn.execute(
            f"INSERT INTO refusals ({', '.join(REFUSAL_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(REFUSAL_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in REFUSAL_COLUMNS[1:]),
            row,
        )
        _append(conn, "refusal", refusal["id"], _refusal_entry(dict(zip(REFUSAL_COLUMNS, row))))


def refusals(conn: sqlite3.Connection, model_name: str | None = None) -> list[dict]:
    """Refused (quarantined) artworks, oldest first, of one model or all; `nearest` parsed."""
    where, args = ("WHERE model_name = ?", (model_name,)) if model_name else ("", ())
    rows = conn.execute(f"SELECT * FROM refusals {where} ORDER BY created_at, id", args)
    return [{k: (json.loads(r[k]) if k == "nearest" else r[k]) for k in REFUSAL_COLUMNS} for r in rows]


def record_promotion(
    conn: sqlite3.Connection,
    model_name: str,
    version: str,
    by: str,
    at: str,
    reason: str,
    previous_champion: str | None,
) -> None:
    """Append who made `version` champion, when (UTC ISO time) and why, and which version it replaced."""
    with transaction(conn):
        seq = conn.execute(
            "INSERT INTO promotions (model_name, version, promoted_by, promoted_at, reason, "
            "previous_champion) VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
            (model_name, str(version), by, at, reason, None if previous_champion is None else str(previous_champion)),
        ).fetchone()[0]
        row = conn.execute("SELECT * FROM promotions WHERE seq = ?", (seq,)).fetchone()
        _append(conn, "promotion", str(seq), _promotion_entry(row, nonce=secrets.token_hex(16)))


def promotions(conn: sqlite3.Connection, model_name: str | None = None) -> list[dict]:
    """Every recorded promotion, oldest first, of one model or all."""
    where, args = ("WHERE model_name = ?", (model_name,)) if model_name else ("", ())
    rows = conn.execute(f"SELECT * FROM promotions {where} ORDER BY seq", args)
    return [
        {
            "model_name": r["model_name"],
            "version": r["version"],
            "by": r["promoted_by"],
            "at": r["promoted_at"],
            "reason": r["reason"],
            "previous_champion": r["previous_champion"],
        }
        for r in rows
    ]


def get(conn: sqlite3.Connection, artwork_id: str) -> dict | None:
    """The ledger row of one artwork (manifest parsed), or None."""
    row = conn.execute("SELECT * FROM artworks WHERE id = ?", (artwork_id,)).fetchone()
    return _row(row) if row else None


def by_sha256_pixels(conn: sqlite3.Connection, sha256_pixels: str) -> dict | None:
    """The artwork with exactly these pixels (a lossless copy, metadata stripped), or None."""
    row = conn.execute("SELECT * FROM artworks WHERE sha256_pixels = ?", (sha256_pixels,)).fetchone()
    return _row(row) if row else None


def by_watermark_id(conn: sqlite3.Connection, wm_id: int) -> dict | None:
    """The artwork whose watermark id is exactly `wm_id` (a version 2 mark decodes to it), or None; indexed."""
    row = conn.execute("SELECT * FROM artworks WHERE watermark_id = ?", (int(wm_id),)).fetchone()
    return _row(row) if row else None


def by_mark(conn: sqlite3.Connection, image) -> dict | None:
    """The artwork whose mark `image` (a PIL image) carries: a version 2 mark's exact id, else a version 1 mark's
    clear, unique nearest id; row + "match" ({"method", "distance", "margin"}: distance 0 and margin None for
    version 2, whose id decodes exactly or not at all), or None."""
    found = identify(image, lambda: v1_watermark_ids(conn))
    if found.id is None:
        return None
    row = conn.execute("SELECT * FROM artworks WHERE watermark_id = ?", (found.id,)).fetchone()
    if row is None:
        return None
    method = METHOD if found.margin is None else METHOD_V1
    return _row(row) | {"match": {"method": method, "distance": found.distance, "margin": found.margin}}


def by_watermark(conn: sqlite3.Connection, bits: int, max_bits: int = 4, min_margin: int = 2) -> dict | None:
    """Version 1: the artwork whose watermark id is the clear, unique nearest match to the 32 `bits` decoded by
    watermark.decode() (row + "match"), or None. Only version 1 ids are candidates."""
    found: Match = nearest(bits, v1_watermark_ids(conn), max_bits=max_bits, min_margin=min_margin)
    if found.id is None:
        return None
    row = conn.execute("SELECT * FROM artworks WHERE watermark_id = ?", (found.id,)).fetchone()
    return _row(row) | {"match": {"distance": found.distance, "margin": found.margin}}


def by_phash(conn: sqlite3.Connection, phash: str, max_distance: int = 8) -> list[dict]:
    """Artworks whose perceptual hash is within `max_distance` bits of `phash`, nearest first (row + "distance")."""
    rows = conn.execute(
        "SELECT *, phash_distance(phash, ?) AS distance FROM artworks "
        "WHERE phash_distance(phash, ?) <= ? ORDER BY distance, id",
        (phash, phash, max_distance),
    )
    return [_row(r) | {"distance": r["distance"]} for r in rows]


def by_model_version(conn: sqlite3.Connection, model_name: str, model_version: str | int | None = None) -> list[dict]:
    """Artworks made by a model (one version, or all versions when `model_version` is None), oldest first."""
    if model_version is None:
        rows = conn.execute("SELECT * FROM artworks WHERE model_name = ? ORDER BY created_at, id", (model_name,))
    else:
        rows = conn.execute(
            "SELECT * FROM artworks WHERE model_name = ? AND model_version = ? ORDER BY created_at, id",
            (model_name, str(model_version)),
        )
    return [_row(r) for r in rows]


def all_watermark_ids(conn: sqlite3.Connection) -> list[int]:
    """Watermark ids of every recorded artwork (the candidates for watermark matching)."""
    return [r[0] for r in conn.execute("SELECT watermark_id FROM artworks WHERE watermark_id IS NOT NULL")]


def v1_watermark_ids(conn: sqlite3.Connection) -> list[int]:
    """Version 1 (RM(2,5) code word) watermark ids of recorded artworks: those not reserved as a version 2 id."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT watermark_id FROM artworks WHERE watermark_id IS NOT NULL AND watermark_id NOT IN "
            "(SELECT seq FROM watermarks WHERE watermark_id = seq)"
        )
    ]


# The log: an append-only hash chain of every write (see the module docstring).


def canonical(obj: object) -> str:
    """The canonical JSON of `obj`: sorted keys, no spaces, UTF-8 text (not \\u escapes), floats as Python prints
    them. What the log hashes, so anyone can recompute a digest from a parsed entry."""
    return signed_json.canonical(obj).decode("utf-8")


def sha256_hex(text: str) -> str:
    """sha256 of `text` encoded as UTF-8, in hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chain_hash(seq: int, kind: str, key: str, prev: str, entry_sha256: str) -> str:
    """The hash of log entry `seq`: it covers the entry's place (seq, prev), what it is (kind, key) and its digest."""
    return sha256_hex(f"{seq}\n{kind}\n{key}\n{prev}\n{entry_sha256}")


def log_head(conn: sqlite3.Connection) -> tuple[int, str]:
    """The seq and hash of the log's last entry; (0, 64 zeros) for an empty log."""
    _require_log(conn)
    last = conn.execute("SELECT seq, hash FROM log ORDER BY seq DESC LIMIT 1").fetchone()
    return (last[0], last[1]) if last else (0, GENESIS)


def log_entries(conn: sqlite3.Connection) -> list[dict]:
    """The whole log in seq order: seq, kind, key, entry (parsed), entry_sha256, prev, hash (the operator's view)."""
    _require_log(conn)
    rows = conn.execute("SELECT seq, kind, key, entry, entry_sha256, prev, hash FROM log ORDER BY seq")
    return [
        {
            "seq": r[0],
            "kind": r[1],
            "key": r[2],
            "entry_sha256": r[4],
            "prev": r[5],
            "hash": r[6],
            **({"erased": True} if r[3] == ERASED_ENTRY else {"entry": json.loads(r[3])}),
        }
        for r in rows
    ]


def verify_chain(entries: list[dict]) -> list[str]:
    """Problems with a log (a list of entries as log_entries() returns them; `entry` may be absent, as for private
    kinds in the public log), each naming the entry: edited, reordered, duplicated or deleted. [] when intact."""
    problems = []
    for before, after in zip(entries, entries[1:]):
        if after["seq"] == before["seq"]:
            problems.append(f"{entry_name(after)} appears twice: an entry was copied or inserted")
        elif after["seq"] < before["seq"]:
            problems.append(f"{entry_name(after)} comes after {entry_name(before)}: the log was reordered")
    expected, prev, previous = 1, GENESIS, None
    for e in sorted(entries, key=lambda e: e["seq"]):
        if "entry" in e and sha256_hex(canonical(e["entry"])) != e["entry_sha256"]:
            problems.append(f"{entry_name(e)} was edited: its entry does not hash to its entry_sha256")
        if chain_hash(e["seq"], e["kind"], e["key"], e["prev"], e["entry_sha256"]) != e["hash"]:
            problems.append(
                f"{entry_name(e)} was edited: its hash does not match its seq, kind, key, prev and entry_sha256"
            )
        if e["seq"] < expected:
            continue  # a duplicate, reported above
        if e["seq"] > expected:
            missing = (
                f"entry seq {expected} was"
                if e["seq"] == expected + 1
                else f"entries seq {expected} to {e['seq'] - 1} were"
            )
            after = f"after {entry_name(previous)}" if previous else "at the start of the log"
            problems.append(f"{missing} deleted: {entry_name(e)} comes {after}")
        elif e["prev"] != prev:
            before = entry_name(previous) if previous else "the start of the log (64 zeros)"
            problems.append(
                f"{entry_name(e)} does not link to {before}: that entry was edited, or entries were "
                "removed and the chain rewritten from there"
            )
        expected, prev, previous = e["seq"] + 1, e["hash"], e
    return problems


def verify_ledger(conn: sqlite3.Connection) -> list[str]:
    """Problems with the operator's ledger, each naming the entry or row: the log's chain is broken, or a row of
    artworks, refusals or promotions differs from (or lacks, or outlived) its latest log entry. [] when intact."""
    with snapshot(conn):
        entries = log_entries(conn)
        problems = verify_chain(entries)
        latest = {(e["kind"], e["key"]): e for e in entries}  # in seq order: the latest entry per key wins
        for kind, table, key_column in (
            ("artwork", "artworks", "id"),
            ("refusal", "refusals", "id"),
            ("promotion", "promotions", "seq"),
        ):
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY {key_column}"):
                key = str(row[key_column])
                logged = latest.pop((kind, key), None)
                if logged is None:
                    problems.append(
                        f"{kind} {key}: its row in the {table} table has no log entry: it was added "
                        "outside the ledger code"
                    )
                    continue
                if "entry" not in logged:
                    problems.append(
                        f"{kind} {key}: its latest log entry (seq {logged['seq']}) was erased and no entry "
                        "records the row since: the erasure did not finish"
                    )
                    continue
                recorded = logged["entry"]
                now = (
                    _artwork_entry(row)
                    if kind == "artwork"
                    else _refusal_entry(row)
                    if kind == "refusal"
                    else _promotion_entry(row, nonce=recorded.get("nonce", ""))
                )
                changed = sorted(k for k in now.keys() | recorded.keys() if now.get(k) != recorded.get(k))
                if changed:
                    problems.append(
                        f"{kind} {key}: its row in the {table} table differs from its log entry "
                        f"(seq {logged['seq']}) in {', '.join(changed)}: the row was edited outside the "
                        "ledger code; the log entry holds what was recorded"
                    )
        for row in conn.execute("SELECT ref, kind, state, record_ids FROM rights_requests ORDER BY ref"):
            logged = latest.pop(("request", row["ref"]), None)
            if logged is None:
                problems.append(f"request {row['ref']}: its row has no log entry: it was added outside the ledger code")
            elif "entry" in logged:
                now = {"kind": row["kind"], "state": row["state"], "records": len(json.loads(row["record_ids"]))}
                changed = sorted(k for k, v in now.items() if logged["entry"].get(k) != v)
                if changed:
                    problems.append(
                        f"request {row['ref']}: its row differs from its log entry (seq {logged['seq']}) in "
                        f"{', '.join(changed)}: the row was edited outside the ledger code"
                    )
        for (kind, _key), e in latest.items():
            if kind == "erasure":
                continue  # an erasure has no row: its entry is the record
            table = "rights_requests" if kind == "request" else f"{kind}s"
            problems.append(
                f"{entry_name(e)} has no row in the {table} table: the row was deleted outside the ledger code"
            )
    return problems


MIGRATED_TABLES = {  # table -> its columns, in the order a migration copies them (the log last)
    "watermarks": ("seq", "watermark_id", "source", "reserved_at"),
    "artworks": COLUMNS,
    "refusals": REFUSAL_COLUMNS,
    "promotions": ("seq", "model_name", "version", "promoted_by", "promoted_at", "reason", "previous_champion"),
    "rights_requests": RIGHTS_REQUEST_COLUMNS,
    "log": ("seq", "kind", "key", "entry", "entry_sha256", "prev", "hash"),
}


def migrate(source: sqlite3.Connection, target: sqlite3.Connection) -> dict:
    """Copy the ledger on `source` (an embedded file) into the empty ledger on `target` (the team's database): every
    row and every log entry verbatim, in one write transaction, then verify both. Returns {"entries", "head", and a
    count per table}. Refuses (ValueError) a source that fails verify_ledger, a target that already holds entries,
    or a copy whose chain or head differs from the source's."""
    problems = verify_ledger(source)
    if problems:
        raise ValueError(
            "the source ledger fails verification; fix it before migrating:\n  - " + "\n  - ".join(problems)
        )
    counts = {}
    with snapshot(source), transaction(target):
        if target.execute("SELECT COUNT(*) FROM log").fetchone()[0]:
            raise ValueError(
                "the target ledger already holds log entries: a migration copies into an empty ledger only "
                "(two chains cannot be merged without rewriting one)"
            )
        for table, columns in MIGRATED_TABLES.items():
            rows = [tuple(r[c] for c in columns) for r in source.execute(f"SELECT * FROM {table} ORDER BY 1")]
            target.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows
            )
            counts[table] = len(rows)
        if isinstance(target, ledger_pg.PgConnection):
            target.after_import()
    problems = verify_ledger(target)
    if problems or log_head(target) != log_head(source) or log_entries(target) != log_entries(source):
        raise ValueError(
            "the migrated ledger differs from its source (nothing else was written there meanwhile?):\n  - "
            + "\n  - ".join(problems or ["its log differs from the source's"])
        )
    seq, head = log_head(target)
    return {"entries": seq, "head": head, **counts}


def _scrub(value: object, record_id: str) -> bool:
    """Replace the personal fields of every item naming `record_id` in `value` (dicts and lists walked) by
    ERASED_VALUE, in place; return whether anything changed."""
    changed = False
    if isinstance(value, dict):
        if value.get("record_id") == record_id:
            for field in ERASED_FIELDS:
                if field in value and value[field] != ERASED_VALUE:
                    value[field] = ERASED_VALUE
                    changed = True
        for v in value.values():
            changed |= _scrub(v, record_id)
    elif isinstance(value, list):
        for v in value:
            changed |= _scrub(v, record_id)
    return changed


def erase_record(conn: sqlite3.Connection, record_id: str, record_digest: str, at: str, reason: str) -> dict:
    """Erase a training record from the ledger (see the module docstring): scrub the rows of artworks and refusals
    that list it, erase the content of every log entry that holds it, append the scrubbed rows and an 'erasure'
    entry {record_digest, at, reason, entries_erased, artworks, refusals}; return that entry. One transaction."""
    record_id = record_id.strip().lower()
    conn.execute("PRAGMA secure_delete = ON")  # overwritten text is zeroed in the file, not left in free space
    with transaction(conn):
        scrubbed: dict[str, list] = {"artworks": [], "refusals": []}
        for table, column, _to_entry, _kind in (
            ("artworks", "manifest", _artwork_entry, "artwork"),
            ("refusals", "nearest", _refusal_entry, "refusal"),
        ):
            for row in conn.execute(
                f"SELECT * FROM {table} WHERE instr({column}, ?) > 0 ORDER BY id", (record_id,)
            ).fetchall():
                value = json.loads(row[column])
                if _scrub(value, record_id):
                    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
                    conn.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", (text, row["id"]))
                    scrubbed[table].append(row["id"])
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM log WHERE kind IN ('artwork', 'refusal') AND "
                "entry != ? AND instr(entry, ?) > 0 ORDER BY seq",
                (ERASED_ENTRY, record_id),
            )
        ]
        if seqs:
            _append_only(conn, False)
            conn.executemany("UPDATE log SET entry = ? WHERE seq = ?", [(ERASED_ENTRY, s) for s in seqs])
            _append_only(conn, True)
        for artwork_id in scrubbed["artworks"]:
            row = conn.execute("SELECT * FROM artworks WHERE id = ?", (artwork_id,)).fetchone()
            _append(conn, "artwork", artwork_id, _artwork_entry(row))
        for refusal_id in scrubbed["refusals"]:
            row = conn.execute("SELECT * FROM refusals WHERE id = ?", (refusal_id,)).fetchone()
            _append(conn, "refusal", refusal_id, _refusal_entry(row))
        entry = {"record_digest": record_digest, "at": at, "reason": reason, "entries_erased": seqs, **scrubbed}
        _append(conn, "erasure", record_digest, entry)
    if isinstance(conn, ledger_pg.PgConnection):
        conn.compact()  # the old row versions leave the table files
    else:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the old pages leave the write-ahead log too
    return entry


def _append_only(conn: sqlite3.Connection, on: bool) -> None:
    """Restore (on) or lift (off) the log's append-only triggers; inside erase_record's transaction only."""
    if isinstance(conn, ledger_pg.PgConnection):
        conn.set_append_only(on)
    elif on:
        for trigger in TRIGGERS:
            conn.execute(trigger)
    else:
        conn.execute("DROP TRIGGER IF EXISTS log_no_update")
        conn.execute("DROP TRIGGER IF EXISTS log_no_delete")


def _artwork_entry(row) -> dict:
    """An artworks row (a dict or sqlite3.Row, manifest as JSON text) as its log entry."""
    return {c: (json.loads(row[c]) if c == "manifest" else row[c]) for c in COLUMNS}


def _refusal_entry(row) -> dict:
    """A refusals row (`nearest` as JSON text) as its log entry."""
    return {c: (json.loads(row[c]) if c == "nearest" else row[c]) for c in REFUSAL_COLUMNS}


def _promotion_entry(row, nonce: str) -> dict:
    """A promotions row as its (private) log entry; the nonce keeps its digest from being tested against guesses."""
    return {
        "model_name": row["model_name"],
        "version": row["version"],
        "by": row["promoted_by"],
        "at": row["promoted_at"],
        "reason": row["reason"],
        "previous_champion": row["previous_champion"],
        "nonce": nonce,
    }


def append(conn: sqlite3.Connection, kind: str, key: str, entry: dict) -> None:
    """Append an entry of one of KINDS for a module that keeps its own table in the ledger's database (the rights
    requests): inside that module's transaction(), beside its row."""
    if kind not in KINDS:
        raise ValueError(f"unknown log kind {kind!r}")
    _append(conn, kind, key, entry)


def _append(conn: sqlite3.Connection, kind: str, key: str, entry: dict) -> None:
    """Append `entry` to the log, unless it equals the latest entry for (kind, key). Call inside _write()."""
    text = canonical(entry)
    latest = conn.execute(
        "SELECT entry FROM log WHERE kind = ? AND key = ? ORDER BY seq DESC LIMIT 1", (kind, key)
    ).fetchone()
    if latest and latest[0] == text:
        return
    last = conn.execute("SELECT seq, hash FROM log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    digest = sha256_hex(text)
    conn.execute(
        "INSERT INTO log (seq, kind, key, entry, entry_sha256, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, kind, key, text, digest, prev, chain_hash(seq, kind, key, prev, digest)),
    )


def _backfill_log(conn: sqlite3.Connection) -> None:
    """Give a version 1 or 2 ledger its log, from its rows: artworks, refusals (each by created_at, id), promotions
    (by seq). Call inside _write()."""
    if conn.execute("SELECT COUNT(*) FROM log").fetchone()[0]:
        return
    for row in conn.execute("SELECT * FROM artworks ORDER BY created_at, id").fetchall():
        _append(conn, "artwork", row["id"], _artwork_entry(row))
    for row in conn.execute("SELECT * FROM refusals ORDER BY created_at, id").fetchall():
        _append(conn, "refusal", row["id"], _refusal_entry(row))
    for row in conn.execute("SELECT * FROM promotions ORDER BY seq").fetchall():
        _append(conn, "promotion", str(row["seq"]), _promotion_entry(row, nonce=secrets.token_hex(16)))


def _require_log(conn: sqlite3.Connection) -> None:
    if isinstance(conn, ledger_pg.PgConnection):
        return  # created with the schema
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'log'").fetchone() is None:
        raise sqlite3.OperationalError(
            "this ledger has no log (schema version 1 or 2): open it once with "
            "ledger.open_ledger() to add the log and backfill it from its rows"
        )


def entry_name(e: dict) -> str:
    """How problems name a log entry: "entry seq 7 (artwork 3f2a...)"."""
    return f"entry seq {e['seq']} ({e['kind']} {e['key']})"


@lru_cache(maxsize=1)
def _generator_rows() -> tuple[int, ...]:
    """RM(2,5) generator rows: the monomials 1, x_i and x_i*x_j evaluated at the 32 points p of {0,1}^5."""

    def row(variables: tuple[int, ...]) -> int:
        return sum(all((p >> i) & 1 for i in variables) << p for p in range(32))

    monomials = [()] + [(i,) for i in range(5)] + [(i, j) for i in range(5) for j in range(i + 1, 5)]
    return tuple(row(m) for m in monomials)


def code_word(message: int) -> int:
    """The RM(2,5) code word (32 bits) of a 16-bit message."""
    word = 0
    for k, row in enumerate(_generator_rows()):
        if (message >> k) & 1:
            word ^= row
    return word


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock up front so concurrent writers queue instead of deadlocking
    (also for the other tables of the ledger file: provenance/votes.py)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction, so that several SELECTs see the same state while others write (WAL); nests."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")


def _phash_distance(a: str, b: str) -> int:
    return hamming(int(a, 16), int(b, 16))


def _row(row: sqlite3.Row) -> dict:
    out = {k: row[k] for k in COLUMNS}
    out["manifest"] = json.loads(out["manifest"])
    return out
