"""Preference votes (issue 19): reviewers compare two artworks made for the same prompt and seed by different model
versions or guidance settings, and say which is better (or tie, or flag one). The votes live in the ledger's database
file (paths.LEDGER), in three tables of their own beside the ledger's; the ledger's schema and its hash chain are
untouched (votes are not log entries).

    reviewers  one row per pseudonym: which consent statement it agreed to (version and sha256) and when
    forms      one row per comparison form the review page issued: a one-time token bound to a reviewer and a pair
    votes      one row per counted vote: who, the pair (left and right as shown), prompt, seed, both model versions and
               guidance settings, the choice, a flag's reason and which artwork it is about, when

A vote is accepted only for an issued, unused form of the same reviewer naming the same pair in the same order; its
prompt, seed, versions and guidance are copied from the two artworks' manifests in the `artworks` table, never from
the request. record_vote() checks, inserts and marks the form used in one IMMEDIATE transaction, so a replayed form is
counted once however many clients send it at once. Nothing personal beyond the pseudonym is stored.

WAL mode, a 30 s busy timeout and one short IMMEDIATE transaction per write, like provenance/ledger.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path

from atelier import paths
from provenance import ledger

CONSENT_VERSION = "review-consent/1"
CONSENT_STATEMENT = (
    "Atelier stores, in its ledger database on this machine: the pseudonym you type here; that you agreed to this "
    "statement (its version and a hash of its text) and when; and each vote you give: the two artworks shown, their "
    "prompt, seed, model versions and guidance settings, your choice (left, right, tie, or a flag with its reason) "
    "and when you gave it. Nothing else about you is stored: no name, e-mail address, IP address or browser details. "
    "Your browser keeps the pseudonym in a cookie until you close it. Choose a pseudonym that does not identify you. "
    "The votes score the model versions and guidance settings, may decide which model is promoted, and may be "
    "published as a pseudonymous preference dataset together with this consent."
)
CHOICES = ("left", "right", "tie", "flag")
FLAG_REASONS = {
    "existing_work": "looks like a specific existing work",
    "offensive": "offensive",
    "broken": "broken (noise, artefacts, empty)",
}
PSEUDONYM = re.compile(r"[A-Za-z0-9._-]{1,40}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviewers (
    pseudonym TEXT PRIMARY KEY,          -- 1-40 letters, digits, '-', '_', '.'
    consent TEXT NOT NULL,               -- the statement agreed to: "<version> sha256:<hex of its text>"
    consented_at TEXT NOT NULL           -- UTC, ISO 8601
);
CREATE TABLE IF NOT EXISTS forms (
    form_id TEXT PRIMARY KEY,            -- one-time token sent with the comparison form
    reviewer TEXT,
    left_artwork TEXT,
    right_artwork TEXT,
    issued_at TEXT,
    used INTEGER DEFAULT 0               -- 1 once a vote was counted for it
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    form_id TEXT NOT NULL UNIQUE,        -- a replayed submission is counted once
    reviewer TEXT NOT NULL REFERENCES reviewers (pseudonym),
    prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    left_artwork TEXT NOT NULL,          -- artwork ids, as shown (sides are randomised)
    right_artwork TEXT NOT NULL,
    left_version TEXT NOT NULL,          -- model versions
    right_version TEXT NOT NULL,
    left_guidance REAL NOT NULL,
    right_guidance REAL NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie', 'flag')),
    flag_reason TEXT CHECK (flag_reason IS NULL OR flag_reason IN ('existing_work', 'offensive', 'broken')),
    flagged TEXT,                        -- the artwork id a flag is about (NULL unless choice is 'flag')
    created_at TEXT NOT NULL             -- UTC, ISO 8601
);
CREATE INDEX IF NOT EXISTS votes_by_reviewer ON votes (reviewer);
"""
VOTE_COLUMNS = (
    "id",
    "form_id",
    "reviewer",
    "prompt",
    "seed",
    "left_artwork",
    "right_artwork",
    "left_version",
    "right_version",
    "left_guidance",
    "right_guidance",
    "choice",
    "flag_reason",
    "flagged",
    "created_at",
)


class VoteRefused(ValueError):
    """A vote or form that cannot be accepted; the message says why (the review page shows it with a 4xx)."""


def consent_id() -> str:
    """What reviewers.consent stores: the statement's version and the sha256 of its text."""
    return f"{CONSENT_VERSION} sha256:{hashlib.sha256(CONSENT_STATEMENT.encode('utf-8')).hexdigest()}"


def open_votes(path: Path | str | None = None) -> sqlite3.Connection:
    """Open the ledger database at `path` (default paths.LEDGER; created or migrated by ledger.open_ledger) and create
    the reviewers, forms and votes tables if missing. WAL, 30 s busy timeout, explicit transactions."""
    conn = ledger.open_ledger(path or paths.LEDGER)  # votes stay in the embedded file, also in team mode
    conn.execute("PRAGMA foreign_keys = ON")
    with ledger.transaction(conn):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
    return conn


def connect(path: Path | str | None = None) -> sqlite3.Connection:
    """A connection to a ledger database that open_votes() has prepared (no schema work: for one request of the
    review server). Same settings as open_votes(): 30 s busy timeout, explicit transactions, foreign keys on."""
    path = Path(path or paths.LEDGER)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no ledger; open it once with provenance.votes.open_votes()")
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def register_reviewer(conn: sqlite3.Connection, pseudonym: str, at: str | None = None) -> dict:
    """Record that `pseudonym` consented to the current statement (an earlier consent to another version is
    replaced); return its reviewers row. Raises VoteRefused for a pseudonym outside 1-40 of [A-Za-z0-9._-]."""
    if not isinstance(pseudonym, str) or not PSEUDONYM.fullmatch(pseudonym):
        raise VoteRefused("a pseudonym is 1 to 40 letters, digits, '-', '_' or '.'")
    with ledger.transaction(conn):
        conn.execute(
            "INSERT INTO reviewers (pseudonym, consent, consented_at) VALUES (?, ?, ?) "
            "ON CONFLICT (pseudonym) DO UPDATE SET consent = excluded.consent, "
            "consented_at = excluded.consented_at WHERE consent != excluded.consent",
            (pseudonym, consent_id(), at or _now()),
        )
        return dict(conn.execute("SELECT * FROM reviewers WHERE pseudonym = ?", (pseudonym,)).fetchone())


def reviewer(conn: sqlite3.Connection, pseudonym: str) -> dict | None:
    """The reviewers row of `pseudonym` if it consented to the current statement, else None."""
    row = conn.execute(
        "SELECT * FROM reviewers WHERE pseudonym = ? AND consent = ?", (pseudonym, consent_id())
    ).fetchone()
    return dict(row) if row else None


def reviewers(conn: sqlite3.Connection) -> list[dict]:
    """Every reviewer (pseudonym, consent, consented_at), by pseudonym."""
    return [dict(r) for r in conn.execute("SELECT * FROM reviewers ORDER BY pseudonym")]


def comparable(a: dict, b: dict) -> bool:
    """Whether two ledger rows form a pair: same prompt and seed, different model version or guidance."""
    ga, gb = a["manifest"]["artwork"]["generator"], b["manifest"]["artwork"]["generator"]
    return (
        a["id"] != b["id"]
        and ga["prompt"] == gb["prompt"]
        and int(ga["seed"]) == int(gb["seed"])
        and (str(a["model_version"]) != str(b["model_version"]) or float(ga["guidance"]) != float(gb["guidance"]))
    )


def pairs(ledger_conn: sqlite3.Connection) -> list[tuple[dict, dict]]:
    """Every comparable pair of artworks in the ledger (see comparable()), each once, ids in order within a pair."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in ledger_conn.execute("SELECT * FROM artworks ORDER BY id"):
        art = dict(row) | {"manifest": json.loads(row["manifest"])}
        gen = art["manifest"]["artwork"]["generator"]
        groups.setdefault((gen["prompt"], int(gen["seed"])), []).append(art)
    return [(a, b) for group in groups.values() for a, b in combinations(group, 2) if comparable(a, b)]


def voted_pairs(conn: sqlite3.Connection, pseudonym: str) -> set[frozenset[str]]:
    """The pairs (as frozensets of the two artwork ids) that `pseudonym` has voted on."""
    rows = conn.execute("SELECT left_artwork, right_artwork FROM votes WHERE reviewer = ?", (pseudonym,))
    return {frozenset(r) for r in rows}


def issue_form(conn: sqlite3.Connection, pseudonym: str, left: str, right: str, at: str | None = None) -> str:
    """Issue a one-time form for `pseudonym` to compare artworks `left` and `right` (as shown); return its token.
    Raises VoteRefused unless the reviewer consented and the two artworks form a pair."""
    with ledger.transaction(conn):
        if reviewer(conn, pseudonym) is None:
            raise VoteRefused(f"reviewer {pseudonym!r} has not consented to the current statement")
        a, b = ledger.get(conn, left), ledger.get(conn, right)
        if a is None or b is None or not comparable(a, b):
            raise VoteRefused("those two artworks are not a pair (same prompt and seed, another version or guidance)")
        form_id = secrets.token_urlsafe(16)
        conn.execute(
            "INSERT INTO forms (form_id, reviewer, left_artwork, right_artwork, issued_at) VALUES (?, ?, ?, ?, ?)",
            (form_id, pseudonym, left, right, at or _now()),
        )
    return form_id


def record_vote(
    conn: sqlite3.Connection,
    form_id: str,
    pseudonym: str,
    left: str,
    right: str,
    choice: str,
    flag_reason: str | None = None,
    flagged: str | None = None,
    at: str | None = None,
) -> str:
    """Count a vote given on form `form_id`, in one transaction: "recorded", or "duplicate" when the form was used
    already (nothing changes). Raises VoteRefused (nothing changes) for an unknown form, another reviewer's form, a
    pair that is not the form's, a choice outside CHOICES, or a flag without a reason and artwork of the pair (or a
    reason or artwork without a flag)."""
    if choice not in CHOICES:
        raise VoteRefused(f"choice must be one of {', '.join(CHOICES)}")
    if choice == "flag":
        if flag_reason not in FLAG_REASONS:
            raise VoteRefused(f"a flag needs a reason: one of {', '.join(FLAG_REASONS)}")
        if flagged not in (left, right):
            raise VoteRefused("a flag names the left or the right artwork of the pair")
    elif flag_reason is not None or flagged is not None:
        raise VoteRefused("a flag reason and flagged artwork go only with the choice 'flag'")
    with ledger.transaction(conn):
        form = conn.execute("SELECT * FROM forms WHERE form_id = ?", (form_id,)).fetchone()
        if form is None or form["reviewer"] != pseudonym:
            raise VoteRefused("unknown form: reload the comparison page for a new one")
        if (form["left_artwork"], form["right_artwork"]) != (left, right):
            raise VoteRefused("the artworks do not match the form's pair")
        if form["used"]:
            return "duplicate"
        a, b = ledger.get(conn, left), ledger.get(conn, right)
        if a is None or b is None:
            raise VoteRefused("an artwork of this pair is no longer in the ledger")
        ga, gb = a["manifest"]["artwork"]["generator"], b["manifest"]["artwork"]["generator"]
        conn.execute(
            f"INSERT INTO votes ({', '.join(VOTE_COLUMNS[1:])}) VALUES ({', '.join('?' * 14)})",
            (
                form_id,
                pseudonym,
                ga["prompt"],
                int(ga["seed"]),
                left,
                right,
                a["model_version"],
                b["model_version"],
                float(ga["guidance"]),
                float(gb["guidance"]),
                choice,
                flag_reason,
                flagged,
                at or _now(),
            ),
        )
        conn.execute("UPDATE forms SET used = 1 WHERE form_id = ?", (form_id,))
    return "recorded"


def votes(conn: sqlite3.Connection) -> list[dict]:
    """Every counted vote, oldest first (the votes table's columns)."""
    return [dict(r) for r in conn.execute(f"SELECT {', '.join(VOTE_COLUMNS)} FROM votes ORDER BY id")]


def flags(conn: sqlite3.Connection) -> list[dict]:
    """The votes that flag an artwork (choice 'flag'), oldest first, with the flagged artwork's model version."""
    rows = conn.execute(
        f"SELECT {', '.join('v.' + c for c in VOTE_COLUMNS)}, a.model_name AS flagged_model_name, "
        "a.model_version AS flagged_version FROM votes v LEFT JOIN artworks a ON a.id = v.flagged "
        "WHERE v.choice = 'flag' ORDER BY v.id"
    )
    return [dict(r) for r in rows]


def summary(conn: sqlite3.Connection) -> dict:
    """Counts for a page or report: reviewers, votes per choice, flags per reason."""
    per_choice = dict(conn.execute("SELECT choice, COUNT(*) FROM votes GROUP BY choice").fetchall())
    per_reason = dict(
        conn.execute("SELECT flag_reason, COUNT(*) FROM votes WHERE choice = 'flag' GROUP BY flag_reason").fetchall()
    )
    return {
        "reviewers": conn.execute("SELECT COUNT(*) FROM reviewers").fetchone()[0],
        "votes": sum(per_choice.values()),
        "per_choice": per_choice,
        "flags_per_reason": per_reason,
    }


def read_votes(path: Path | str | None = None) -> list[dict]:
    """Every vote in the ledger database at `path` (default paths.LEDGER), oldest first, read-only (a ledger from
    before forms has no form_id, so it is not read); [] when there is no ledger or no votes table."""
    conn = ledger.open_read_only(path)
    if conn is None:
        return []
    try:
        if not _has_table(conn, "votes"):
            return []
        columns = ", ".join(c for c in VOTE_COLUMNS if c != "form_id")
        return [dict(row) for row in conn.execute(f"SELECT {columns} FROM votes ORDER BY id")]
    finally:
        conn.close()


def read_reviewers(path: Path | str | None = None) -> dict[str, dict]:
    """pseudonym -> {consent, consented_at} from the ledger database at `path` (read-only); {} when there is none."""
    conn = ledger.open_read_only(path)
    if conn is None:
        return {}
    try:
        if not _has_table(conn, "reviewers"):
            return {}
        return {
            row["pseudonym"]: {"consent": row["consent"], "consented_at": row["consented_at"]}
            for row in conn.execute("SELECT pseudonym, consent, consented_at FROM reviewers")
        }
    finally:
        conn.close()


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
