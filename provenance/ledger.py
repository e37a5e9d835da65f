"""The artwork ledger: one SQLite row per artwork (its manifest, pixel hash, perceptual hash and watermark id), so that
an artwork that lost its embedded manifest can be traced by watermark or perceptual hash, and a takedown can list
every artwork of a model version. Two more tables keep the decisions that must be accountable: `refusals` (artworks
quarantined instead of published, e.g. as a possible replication of a training image) and `promotions` (who made a
version champion, when and why).

Watermark ids are code words of the Reed-Muller code RM(2,5): 32 bits, any two at least 8 bits apart, so a watermark
read back with up to 3 wrong bits is still uniquely nearest to the right id. Code words with fewer than 12 or more than
20 one-bits are skipped (a flat, unmarked image reads as all zeros or all ones), leaving 64,294 ids. An id is reserved
for a *source*, the sha256 of the pixels before marking: a regenerated artwork (same model, prompt and seed, so the
same source) gets the same id, hence the same marked pixels, the same artwork id and an idempotent upsert.

WAL mode, one short IMMEDIATE transaction per write and a 30 s busy timeout: safe for several processes at once.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from atelier import paths
from provenance.watermark import Match, hamming, nearest

DEFAULT_PATH = getattr(paths, "LEDGER", paths.ROOT / "ledger" / "ledger.sqlite")
SCHEMA_VERSION = 2  # 2 added refusals and promotions; a version 1 ledger is migrated on open
MIN_WEIGHT, MAX_WEIGHT = 12, 20
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
"""

COLUMNS = ("id", "sha256_pixels", "phash", "watermark_id", "manifest", "model_name", "model_version", "created_at")


def open_ledger(path: Path | str | None = None) -> sqlite3.Connection:
    """Open (creating if needed) the ledger at `path` (default: atelier.paths.LEDGER) in WAL mode."""
    path = Path(path or DEFAULT_PATH)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)  # transactions are explicit (see _write)
    conn.row_factory = sqlite3.Row
    conn.create_function("phash_distance", 2, _phash_distance, deterministic=True)
    if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
        raise sqlite3.OperationalError(f"{path}: could not switch the ledger to WAL mode")
    with _write(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):  # 0: new file; 1: gains the tables added since
            raise sqlite3.DatabaseError(f"{path}: ledger schema version {version}, this code knows {SCHEMA_VERSION}")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return conn


def open_read_only(path: Path | str | None = None) -> sqlite3.Connection | None:
    """The ledger at `path` opened read-only (nothing is created or migrated), or None when there is no ledger."""
    path = Path(path or DEFAULT_PATH)
    if not path.exists():
        return None
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.create_function("phash_distance", 2, _phash_distance, deterministic=True)
    return conn


def watermark_id_for(conn: sqlite3.Connection, source: str) -> int:
    """The watermark id reserved for `source` (sha256 of the unmarked pixels), reserving the next free one if new."""
    with _write(conn):
        row = conn.execute("SELECT watermark_id FROM watermarks WHERE source = ?", (source,)).fetchone()
        if row:
            return row[0]
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM watermarks").fetchone()[0] + 1
        while seq < CODE_SIZE and not MIN_WEIGHT <= code_word(seq).bit_count() <= MAX_WEIGHT:
            seq += 1
        if seq >= CODE_SIZE:
            raise OverflowError("the ledger has used every watermark id (64,294); start a new ledger and watermark "
                                "code before generating more artworks")
        wm_id = code_word(seq)
        conn.execute("INSERT INTO watermarks (seq, watermark_id, source, reserved_at) VALUES (?, ?, ?, ?)",
                     (seq, wm_id, source, datetime.now(timezone.utc).isoformat(timespec="seconds")))
        return wm_id


def record(conn: sqlite3.Connection, manifest: dict, watermark_id: int | None) -> None:
    """Insert or update (same artwork id) the artwork described by `manifest`, with its watermark id."""
    art, model = manifest["artwork"], manifest["model"]
    row = (manifest["id"], art["sha256_pixels"], art["phash"], watermark_id,
           json.dumps(manifest, sort_keys=True, ensure_ascii=False), model["name"], str(model["version"]),
           art["created_at"])
    try:
        with _write(conn):
            conn.execute(f"INSERT INTO artworks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                         "ON CONFLICT (id) DO UPDATE SET "
                         + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:]), row)
    except sqlite3.IntegrityError as e:
        other = conn.execute("SELECT id FROM artworks WHERE watermark_id = ?", (watermark_id,)).fetchone()
        if other:
            raise ValueError(f"artwork {manifest['id']}: watermark id {watermark_id} already belongs to artwork "
                             f"{other[0]}; reserve ids with watermark_id_for()") from e
        raise


REFUSAL_COLUMNS = ("id", "sha256_pixels", "phash", "prompt", "seed", "model_name", "model_version", "reason", "nearest",
                   "created_at")


def record_refusal(conn: sqlite3.Connection, refusal: dict) -> None:
    """Insert or update (same id) a refused artwork: a `quarantine.json` record (see stages/generate.py)."""
    model = refusal["model"]
    row = (refusal["id"], refusal["sha256_pixels"], refusal["phash"], refusal["prompt"], int(refusal["seed"]),
           model["name"], str(model["version"]), refusal["reason"],
           json.dumps(refusal["nearest_training_images"], sort_keys=True, ensure_ascii=False), refusal["created_at"])
    with _write(conn):
        conn.execute(f"INSERT INTO refusals ({', '.join(REFUSAL_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(REFUSAL_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
                     + ", ".join(f"{c} = excluded.{c}" for c in REFUSAL_COLUMNS[1:]), row)


def refusals(conn: sqlite3.Connection, model_name: str | None = None) -> list[dict]:
    """Refused (quarantined) artworks, oldest first, of one model or all; `nearest` parsed."""
    where, args = ("WHERE model_name = ?", (model_name,)) if model_name else ("", ())
    rows = conn.execute(f"SELECT * FROM refusals {where} ORDER BY created_at, id", args)
    return [{k: (json.loads(r[k]) if k == "nearest" else r[k]) for k in REFUSAL_COLUMNS} for r in rows]


def record_promotion(conn: sqlite3.Connection, model_name: str, version: str, by: str, at: str, reason: str,
                     previous_champion: str | None) -> None:
    """Append who made `version` champion, when (UTC ISO time) and why, and which version it replaced."""
    with _write(conn):
        conn.execute("INSERT INTO promotions (model_name, version, promoted_by, promoted_at, reason, "
                     "previous_champion) VALUES (?, ?, ?, ?, ?, ?)",
                     (model_name, str(version), by, at, reason, None if previous_champion is None
                      else str(previous_champion)))


def promotions(conn: sqlite3.Connection, model_name: str | None = None) -> list[dict]:
    """Every recorded promotion, oldest first, of one model or all."""
    where, args = ("WHERE model_name = ?", (model_name,)) if model_name else ("", ())
    rows = conn.execute(f"SELECT * FROM promotions {where} ORDER BY seq", args)
    return [{"model_name": r["model_name"], "version": r["version"], "by": r["promoted_by"], "at": r["promoted_at"],
             "reason": r["reason"], "previous_champion": r["previous_champion"]} for r in rows]


def get(conn: sqlite3.Connection, artwork_id: str) -> dict | None:
    """The ledger row of one artwork (manifest parsed), or None."""
    row = conn.execute("SELECT * FROM artworks WHERE id = ?", (artwork_id,)).fetchone()
    return _row(row) if row else None


def by_sha256_pixels(conn: sqlite3.Connection, sha256_pixels: str) -> dict | None:
    """The artwork with exactly these pixels (a lossless copy, metadata stripped), or None."""
    row = conn.execute("SELECT * FROM artworks WHERE sha256_pixels = ?", (sha256_pixels,)).fetchone()
    return _row(row) if row else None


def by_watermark(conn: sqlite3.Connection, bits: int, max_bits: int = 4, min_margin: int = 2) -> dict | None:
    """The artwork whose watermark id is the clear, unique nearest match to decoded `bits` (row + "match"), or None."""
    found: Match = nearest(bits, all_watermark_ids(conn), max_bits=max_bits, min_margin=min_margin)
    if found.id is None:
        return None
    row = conn.execute("SELECT * FROM artworks WHERE watermark_id = ?", (found.id,)).fetchone()
    return _row(row) | {"match": {"distance": found.distance, "margin": found.margin}}


def by_phash(conn: sqlite3.Connection, phash: str, max_distance: int = 8) -> list[dict]:
    """Artworks whose perceptual hash is within `max_distance` bits of `phash`, nearest first (row + "distance")."""
    rows = conn.execute("SELECT *, phash_distance(phash, ?) AS distance FROM artworks "
                        "WHERE phash_distance(phash, ?) <= ? ORDER BY distance, id", (phash, phash, max_distance))
    return [_row(r) | {"distance": r["distance"]} for r in rows]


def by_model_version(conn: sqlite3.Connection, model_name: str, model_version: str | int | None = None) -> list[dict]:
    """Artworks made by a model (one version, or all versions when `model_version` is None), oldest first."""
    if model_version is None:
        rows = conn.execute("SELECT * FROM artworks WHERE model_name = ? ORDER BY created_at, id", (model_name,))
    else:
        rows = conn.execute("SELECT * FROM artworks WHERE model_name = ? AND model_version = ? "
                            "ORDER BY created_at, id", (model_name, str(model_version)))
    return [_row(r) for r in rows]


def all_watermark_ids(conn: sqlite3.Connection) -> list[int]:
    """Watermark ids of every recorded artwork (the candidates for watermark matching)."""
    return [r[0] for r in conn.execute("SELECT watermark_id FROM artworks WHERE watermark_id IS NOT NULL")]


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
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock up front so concurrent writers queue instead of deadlocking."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _phash_distance(a: str, b: str) -> int:
    return hamming(int(a, 16), int(b, 16))


def _row(row: sqlite3.Row) -> dict:
    out = {k: row[k] for k in COLUMNS}
    out["manifest"] = json.loads(out["manifest"])
    return out
