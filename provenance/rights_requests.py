"""Rights holders' requests and their lifecycle, kept in the ledger's database (SQLite or the team's PostgreSQL).

A request is an opt-out (no future training), a takedown (retrain without the work, withdraw the artworks that cite
it), an erasure of personal data, or a credit correction. Its states:

    received -> verified (the requester proved control of the work's source) -> approved | rejected (an operator,
    with a reason) -> applied (the policy was updated) -> retrained (a newer model version trained without it)
    -> withdrawn (takedown: the artworks that cite it are withdrawn)

An operator may approve or reject a request that is not verified (the operator decides), but nothing else moves a
request towards changing a model: an unverified claim never changes anything by itself.

The row (table `rights_requests`) holds what is private: the requester's contact and message, the verification
token, the request's secret id (its link). Every change of state is also a log entry of kind `request`, keyed by
the public reference `ref` (sha256 of the id, 16 hex digits); its content (kind, state, when, counts, a nonce) is a
private entry: the public log and the bundle show its digest only, so the chain proves that nothing was rewritten
without publishing anything about the requester. Counts for the transparency report come from `transparency()`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import statistics
import threading
import time
from datetime import UTC, datetime

from provenance import ledger

KINDS = ("opt_out", "takedown", "erasure", "credit")
STATES = ("received", "verified", "approved", "rejected", "applied", "retrained", "withdrawn")
NEXT = {  # state -> the states a request may move to from it
    "received": ("verified", "approved", "rejected"),
    "verified": ("approved", "rejected"),
    "approved": ("applied",),
    "rejected": (),
    "applied": ("retrained",),
    "retrained": ("withdrawn",),
    "withdrawn": (),
}
MAX_CONTACT = 320
MAX_MESSAGE = 4000
MAX_RECORDS = 1000
TOKEN_PREFIX = "atelier-rights-"


class RequestError(ValueError):
    """A request that cannot be filed or moved as asked; the message says why."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def ref_of(request_id: str) -> str:
    return hashlib.sha256(request_id.encode()).hexdigest()[:16]


def file(
    conn: sqlite3.Connection,
    kind: str,
    record_ids: list[str],
    contact: str,
    message: str = "",
    creator: str | None = None,
    image_sha256: str | None = None,
    image_phash: str | None = None,
) -> dict:
    """Record a new request (state received); return it, with its secret id and its verification token."""
    if kind not in KINDS:
        raise RequestError(f"unknown request kind {kind!r}; one of {', '.join(KINDS)}")
    contact, message = (contact or "").strip(), (message or "").strip()
    if not contact or len(contact) > MAX_CONTACT:
        raise RequestError(f"a contact (an e-mail address or how to reach you) of 1 to {MAX_CONTACT} characters")
    if len(message) > MAX_MESSAGE:
        raise RequestError(f"the message is longer than {MAX_MESSAGE} characters")
    ids = sorted(set(record_ids))
    if not ids and not creator:
        raise RequestError("a request names the works it concerns (look them up first) or a creator")
    if len(ids) > MAX_RECORDS:
        raise RequestError(f"at most {MAX_RECORDS} works per request")
    request_id = secrets.token_urlsafe(24)
    at = now()
    row = {
        "id": request_id,
        "ref": ref_of(request_id),
        "kind": kind,
        "state": "received",
        "record_ids": json.dumps(ids),
        "creator": creator,
        "contact": contact,
        "message": message,
        "image_sha256": image_sha256,
        "image_phash": image_phash,
        "verify_token": TOKEN_PREFIX + secrets.token_urlsafe(18),
        "history": json.dumps([{"state": "received", "at": at, "by": "requester", "reason": ""}]),
        "facts": "{}",
        "created_at": at,
        "updated_at": at,
    }
    cols = ledger.RIGHTS_REQUEST_COLUMNS
    with ledger.transaction(conn):
        conn.execute(
            f"INSERT INTO rights_requests ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            tuple(row[c] for c in cols),
        )
        ledger.append(conn, "request", row["ref"], _entry(row, "received", at, "requester", ""))
    return _decoded(row)


def move(conn: sqlite3.Connection, request_id: str, state: str, by: str, reason: str = "", facts: dict | None = None):
    """Move the request to `state` (allowed only from the states NEXT names), with who and why; merge `facts` into
    what it records; return the request as it now is."""
    with ledger.transaction(conn):
        found = conn.execute("SELECT * FROM rights_requests WHERE id = ?", (request_id,)).fetchone()
        if found is None:
            raise RequestError("no such request")
        row = dict(found)
        if state not in NEXT[row["state"]]:
            raise RequestError(f"request {row['ref']} is {row['state']}; it cannot become {state}")
        if state == "rejected" and not reason.strip():
            raise RequestError("a rejection needs a reason (the requester reads it)")
        at = now()
        history = json.loads(row["history"]) + [{"state": state, "at": at, "by": by, "reason": reason.strip()}]
        merged = json.loads(row["facts"]) | (facts or {})
        conn.execute(
            "UPDATE rights_requests SET state = ?, history = ?, facts = ?, updated_at = ? WHERE id = ?",
            (state, json.dumps(history), json.dumps(merged, sort_keys=True), at, request_id),
        )
        row |= {"state": state, "history": json.dumps(history), "facts": json.dumps(merged), "updated_at": at}
        ledger.append(conn, "request", row["ref"], _entry(row, state, at, by, reason))
    return _decoded(row)


def get(conn: sqlite3.Connection, request_id: str) -> dict | None:
    """The request with this secret id, or None (an unknown id and a malformed one look the same)."""
    if not isinstance(request_id, str) or not 16 <= len(request_id) <= 64:
        return None
    found = conn.execute("SELECT * FROM rights_requests WHERE id = ?", (request_id,)).fetchone()
    return None if found is None else _decoded(dict(found))


def by_ref(conn: sqlite3.Connection, ref: str) -> dict | None:
    """The request with this public reference (the operator's handle), or None."""
    found = conn.execute("SELECT * FROM rights_requests WHERE ref = ?", (ref.strip().lower(),)).fetchone()
    return None if found is None else _decoded(dict(found))


def listed(conn: sqlite3.Connection, state: str | None = None) -> list[dict]:
    """Every request (or those in `state`), oldest first."""
    rows = (
        conn.execute("SELECT * FROM rights_requests ORDER BY created_at, ref")
        if state is None
        else conn.execute("SELECT * FROM rights_requests WHERE state = ? ORDER BY created_at, ref", (state,))
    )
    return [_decoded(dict(r)) for r in rows]


def about(conn: sqlite3.Connection, record_ids: set[str]) -> list[dict]:
    """What the public may know of the requests made about these records: kind, state and when filed; never who."""
    out = []
    for r in listed(conn):
        if record_ids & set(r["record_ids"]):
            out.append({"kind": r["kind"], "state": r["state"], "filed": r["created_at"][:10]})
    return out


def transparency(conn: sqlite3.Connection) -> dict:
    """Counts of requests by kind and state, and the median days from received to applied (None before any)."""
    counts = {k: dict.fromkeys(STATES, 0) for k in KINDS}
    days = []
    for r in listed(conn):
        counts[r["kind"]][r["state"]] += 1
        applied = next((h["at"] for h in r["history"] if h["state"] == "applied"), None)
        if applied:
            delta = datetime.fromisoformat(applied) - datetime.fromisoformat(r["created_at"])
            days.append(delta.total_seconds() / 86400)
    return {
        "schema": "atelier.rights-transparency/1",
        "at": now(),
        "requests": sum(sum(c.values()) for c in counts.values()),
        "by_kind_and_state": counts,
        "median_days_received_to_applied": round(statistics.median(days), 3) if days else None,
        "applied": len(days),
    }


def _entry(row: dict, state: str, at: str, by: str, reason: str) -> dict:
    """The log entry of one change: private (the public log shows its digest), with a nonce against guessing."""
    return {
        "ref": row["ref"],
        "kind": row["kind"],
        "state": state,
        "at": at,
        "by": "operator" if by not in ("requester", "verification", "pipeline") else by,
        "reason_sha256": hashlib.sha256(reason.encode()).hexdigest(),
        "records": len(json.loads(row["record_ids"])),
        "nonce": secrets.token_hex(16),
    }


def _decoded(row: dict) -> dict:
    return row | {
        "record_ids": json.loads(row["record_ids"]),
        "history": json.loads(row["history"]),
        "facts": json.loads(row["facts"]),
    }


# ---- what the records say: versions and citing artworks, and the lifecycle's later states ----


class WorkIndex:
    """Which versions trained on which records, and which artworks cite which records: rebuilt when the registry's
    versions or the ledger's log change (checked at most every REFRESH_S seconds)."""

    REFRESH_S = 2.0

    def __init__(self, model: str) -> None:
        self.lock = threading.Lock()
        self.key: tuple | None = None
        self.checked = 0.0
        self.model = model
        self.versions: list[dict] = []
        self.citing: dict[str, list[dict]] = {}
        self.quarantined: dict[str, list[dict]] = {}

    def current(self, conn) -> WorkIndex:
        with self.lock:
            if time.monotonic() - self.checked < self.REFRESH_S and self.key is not None:
                return self
            from registry import tracking

            found = tracking.all_versions(self.model)
            key = (tuple((v["version"], v["tags"].get("dataset_md5"), tuple(v["aliases"])) for v in found),)
            key += (ledger.log_head(conn),)
            if key != self.key:
                self._build(conn, found)
                self.key = key
            self.checked = time.monotonic()
            return self

    def _build(self, conn, found: list[dict]) -> None:
        from atelier.lineage import training_rows

        versions = []
        for v in found:
            try:
                ids = {r["record_id"] for r in training_rows(v["tags"].get("dataset_md5") or "")}
            except (FileNotFoundError, TypeError):
                ids = None  # its training data is not here: said so in the answer
            versions.append({"version": v["version"], "aliases": v["aliases"], "record_ids": ids, "tags": v["tags"]})
        citing: dict[str, list[dict]] = {}
        for a in ledger.by_model_version(conn, self.model):
            for item in (a["manifest"].get("checks") or {}).get("nearest_training_images") or []:
                citing.setdefault(item.get("record_id"), []).append({"id": a["id"], "version": a["model_version"]})
        quarantined: dict[str, list[dict]] = {}
        for q in ledger.refusals(conn, self.model):
            for item in q["nearest"] or []:
                quarantined.setdefault(item.get("record_id"), []).append({"id": q["id"], "version": q["model_version"]})
        self.versions, self.citing, self.quarantined = versions, citing, quarantined


def advance(conn, model: str) -> list[dict]:
    """Move applied requests whose works a newer version of `model` no longer trained on to `retrained` (naming that
    version), then withdraw the artworks that cite a taken-down work; return the requests moved. Run at the end of
    every pipeline run (flows/pipeline.py) and by `atelier rights queue advance`."""
    if not conn.execute("SELECT 1 FROM rights_requests WHERE state IN ('applied', 'retrained') LIMIT 1").fetchone():
        return []  # nothing waits on a run: the registry is not even asked (every pipeline run calls this)
    index = WorkIndex(model).current(conn)
    moved = []
    for r in listed(conn, "applied"):
        before = {int(v) for v in r["facts"].get("versions_at_apply", [])}
        newer = [
            v
            for v in index.versions
            if int(v["version"]) > max(before, default=0)
            and v["record_ids"] is not None
            and not set(r["record_ids"]) & v["record_ids"]
        ]
        if newer:
            version = newer[0]["version"]
            r = move(
                conn,
                r["id"],
                "retrained",
                "pipeline",
                f"version {version} trained without it",
                {"retrained_version": version},
            )
            moved.append(r)
    for r in listed(conn, "retrained"):
        if r["kind"] != "takedown":
            continue
        withdrawn = r["facts"].get("citing_at_apply", [])
        moved.append(
            move(
                conn,
                r["id"],
                "withdrawn",
                "pipeline",
                f"{len(withdrawn)} artworks withdrawn",
                {"withdrawn_artworks": withdrawn},
            )
        )
    return moved
