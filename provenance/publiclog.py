"""The ledger's public log and its signed head: what an outside auditor needs to check that no ledger entry was edited,
reordered or deleted, with nothing private in it.

A public log is a folder of two files:
- `entries.jsonl`: one JSON object per line, in seq order: seq, kind, key, entry_sha256, prev, hash (the chain, see
  provenance/ledger.py), and `entry` for the public kinds (artwork, refusal). The chain links digests, so an entry
  shown only by its digest verifies all the same; two kinds of entry are:
  - a promotion: it names a person (`by`); its random nonce stops anyone testing guessed names against the digest;
  - an artwork or refusal entry that holds a local path (a string starting with / or ~, a drive letter, or a file: or
    sqlite: URI; manifests written before issue 17 item 3 hold the registry's): it gets `"withheld": "local path"`
    instead of `entry`. Chained entries can never be scrubbed, so they are withheld rather than published.
  - an entry whose content an erasure removed (`atelier forget`, ledger.erase_record): `"withheld": "erased"`; the
    erasure itself is a public entry of kind 'erasure' (the record's digest, when, why).
- `head.json`: the signed head, {"schema": "atelier.ledger-head/1", "seq", "hash", "signed_at" (UTC, ISO 8601),
  "certificate_chain" (PEM: the leaf, then the CA; public), "signature"}: base64 of the DER ECDSA P-256/SHA-256
  signature, by the signing identity's leaf key, over the canonical JSON (ledger.canonical) of the other five fields.

seal() signs the head at the end of a run and writes it beside the ledger file (`head.json`); it first checks the
ledger (ledger.verify_ledger) and that the previous head still matches the log, so a rewritten ledger is never signed
over. export_public_log() seals, then writes the entries the new head covers and the head. verify_public_log() needs
only the two files and the CA certificate (the trust anchor): no workspace, no keys. verify_ledger() is the
operator's check: the ledger's rows and chain, and the signed head beside it.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from atelier import paths
from atelier.io import write_json, write_text
from provenance import ledger, ledger_pg, signed_json
from provenance.keys import SigningIdentity

HEAD_SCHEMA = "atelier.ledger-head/1"
HEAD_NAME = "head.json"  # beside the ledger file (ledger/head.json), and in a public log folder
ENTRIES_NAME = "entries.jsonl"
PUBLIC_KINDS = ("artwork", "refusal", "erasure")
LINE_FIELDS = ("seq", "kind", "key", "entry_sha256", "prev", "hash")
HEAD_FIELDS = ("schema", "seq", "hash", "signed_at", "certificate_chain", "signature")
LOCAL_PATH = re.compile(r"^(/|~|[A-Za-z]:[\\/]|file:|sqlite:)")  # a string value that names a local file


def head_path(conn: sqlite3.Connection) -> Path:
    """Where the head of the ledger open on `conn` is kept: `head.json` beside the ledger file; for the team's ledger
    on PostgreSQL, this checkout's ledger/head.json (each machine signs its own series of heads of the shared log)."""
    if isinstance(conn, ledger_pg.PgConnection):
        return paths.LEDGER.parent / HEAD_NAME
    file = next(row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main")
    if not file:
        raise ValueError("the ledger is not a file (in memory): pass the head's path explicitly")
    return Path(file).parent / HEAD_NAME


def sign_head(conn: sqlite3.Connection, identity: SigningIdentity) -> dict:
    """The signed head of the ledger's log as it is now (its last seq and hash); reads the identity's key and chain,
    writes nothing."""
    seq, hash_ = ledger.log_head(conn)
    chain = identity.chain.read_text(encoding="ascii")
    head = {
        "schema": HEAD_SCHEMA,
        "seq": seq,
        "hash": hash_,
        "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "certificate_chain": chain,
    }
    head["signature"] = signed_json.sign_bytes(ledger.canonical(head).encode("utf-8"), identity)[0]
    return head


def write_head(path: Path | str, head: dict) -> None:
    """Write a signed head to `path` atomically (JSON)."""
    write_json(Path(path), head)


def read_head(path: Path | str) -> dict:
    """The signed head at `path` (its shape is checked by verify_public_log, not here)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no signed ledger head here; publiclog.seal() writes it at the end of a run")
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON ledger head ({e}); restore it from the published copy") from e
    if not isinstance(head, dict):
        raise ValueError(f"{path}: a ledger head is a JSON object, found {type(head).__name__}")
    return head


def seal(conn: sqlite3.Connection, identity: SigningIdentity, path: Path | str | None = None) -> dict:
    """Check the ledger, sign its head and write it to `path` (default: head.json beside the ledger); return the head.

    Refuses (ValueError, listing the problems) when the ledger fails verify_ledger or no longer extends the head
    already at `path`: signing then would bless the change."""
    path = Path(path) if path else head_path(conn)
    with ledger.snapshot(conn):
        problems = ledger.verify_ledger(conn)
        if path.exists():
            previous = read_head(path)
            found = _shape_problems([], previous)
            if not found:
                found = _head_matches(previous, ledger.log_entries(conn))
                found += _signature_problems(previous, identity.ca_pem())
            problems += [f"the previous head ({path}): {p}" for p in found]
        if problems:
            raise ValueError(
                "refusing to sign the ledger's head: the ledger fails verification:\n  - "
                + "\n  - ".join(problems)
                + "\nFind out what changed (each log entry holds what was "
                f"recorded). To start a new series of heads after an understood change, move {path} "
                "aside and keep it with the investigation."
            )
        head = sign_head(conn, identity)
    write_head(path, head)
    return head


def public_entries(conn: sqlite3.Connection, upto: int | None = None) -> list[dict]:
    """The log as the public sees it, seq 1 to `upto` (default: all): `entry` for the public kinds, unless it holds a
    local path (then `"withheld": "local path"`)."""
    lines = []
    for e in ledger.log_entries(conn):
        if upto is not None and e["seq"] > upto:
            break
        line = {k: e[k] for k in LINE_FIELDS}
        if e.get("erased"):  # its content was erased (ledger.erase_record): the chain keeps its digest
            line |= {"withheld": "erased"}
        elif e["kind"] in PUBLIC_KINDS:
            line |= {"withheld": "local path"} if _holds_local_path(e["entry"]) else {"entry": e["entry"]}
        lines.append(line)
    return lines


def export_public_log(conn: sqlite3.Connection, folder: Path | str, identity: SigningIdentity) -> int:
    """Seal the ledger (see seal()), then write `folder/entries.jsonl` (the entries the new head covers) and
    `folder/head.json`; return the number of entries written."""
    folder = Path(folder)
    head = seal(conn, identity)
    entries = public_entries(conn, upto=head["seq"])
    write_text(
        folder / ENTRIES_NAME, "".join(json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n" for e in entries)
    )
    write_head(folder / HEAD_NAME, head)
    return len(entries)


def read_public_log(folder: Path | str) -> tuple[list[dict], dict]:
    """The entries and the signed head of a public log folder (entries.jsonl, head.json)."""
    folder = Path(folder)
    path = folder / ENTRIES_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; a public log folder holds {ENTRIES_NAME} and {HEAD_NAME}, "
            "as export_public_log() writes them"
        )
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path} line {number}: not JSON ({e}); the public log is damaged: fetch it again from its publisher"
            ) from e
    return entries, read_head(folder / HEAD_NAME)


def verify_public_log(entries: list[dict], head: dict, anchor_pem: str) -> list[str]:
    """Problems with a public log, each naming the entry or the head: an edited, reordered or deleted entry, a
    truncated log, a head that does not match the log, that is not validly signed or not by the trust anchor's
    identity (`anchor_pem`: the CA certificate). [] when the log verifies. Pure: reads nothing."""
    try:
        signed_json.anchor_description(anchor_pem)
    except (ValueError, UnicodeEncodeError) as e:
        raise ValueError(f"the trust anchor is not a PEM certificate ({e}); pass the CA certificate (ca.pem)") from e
    problems = _shape_problems(entries, head)
    if problems:
        return problems
    problems = ledger.verify_chain(entries)
    problems += _head_matches(head, entries)
    last = max((e["seq"] for e in entries), default=0)
    if last > head["seq"]:
        problems.append(
            f"{_span(head['seq'] + 1, last)} not covered by the signed head (seq {head['seq']}): added after signing"
        )
    return problems + _signature_problems(head, anchor_pem)


def verify_ledger(conn: sqlite3.Connection, anchor_pem: str | None = None) -> list[str]:
    """The operator's full check, each problem naming the entry or row: ledger.verify_ledger (rows against the chain,
    the chain itself), and the signed head beside the ledger: present, still matching the log, validly signed (by
    the anchor CA's identity when `anchor_pem` is given). [] when intact."""
    path = head_path(conn)
    with ledger.snapshot(conn):
        problems = ledger.verify_ledger(conn)
        if not path.is_file():
            return problems + [
                f"{path}: no signed head: nothing shows the ledger was not rewritten since; "
                "publiclog.seal() signs one at the end of each run"
            ]
        head = read_head(path)
        found = _shape_problems([], head)
        if not found:
            found = _head_matches(head, ledger.log_entries(conn)) + _signature_problems(head, anchor_pem)
    return problems + [f"the signed head ({path}): {p}" for p in found]


def _holds_local_path(value: object) -> bool:
    """Whether any string in `value` (dicts and lists walked) names a local file (LOCAL_PATH)."""
    if isinstance(value, dict):
        return any(_holds_local_path(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_local_path(v) for v in value)
    return isinstance(value, str) and LOCAL_PATH.match(value) is not None


def _head_matches(head: dict, entries: list[dict]) -> list[str]:
    """Whether the log still holds the entry the head signed, with the hash it signed."""
    by_seq = {e["seq"]: e for e in entries}
    last = max(by_seq, default=0)
    if head["seq"] == 0:
        return [] if head["hash"] == ledger.GENESIS else ["the signed head (seq 0) has a hash other than 64 zeros"]
    if head["seq"] > last:
        return [
            f"the log is truncated: the signed head covers seq 1 to {head['seq']} but the log ends at seq {last}; "
            f"{_span(last + 1, head['seq'])} deleted"
        ]
    signed = by_seq.get(head["seq"])
    if signed is None:
        return []  # deleted from the middle: verify_chain names it
    if signed["hash"] != head["hash"]:
        return [
            f"{ledger.entry_name(signed)} does not match the signed head: the log up to it was rewritten after the "
            "head was signed"
        ]
    return []


def _signature_problems(head: dict, anchor_pem: str | None = None) -> list[str]:
    """Whether the head's signature verifies with its leaf certificate, and (given `anchor_pem`) that leaf was issued
    by the anchor CA and valid when the head was signed."""
    payload = ledger.canonical({k: v for k, v in head.items() if k != "signature"}).encode("utf-8")
    try:
        at = datetime.fromisoformat(head["signed_at"])
    except (TypeError, ValueError):
        at = None
    return [
        f"the signed head: {p}"
        for p in signed_json.verify_bytes(payload, head.get("signature"), head.get("certificate_chain"), anchor_pem, at)
    ]


def _shape_problems(entries: list, head: object) -> list[str]:
    """Fields missing, unknown or of the wrong type, in the head and in each entry (by its line number)."""
    problems = []
    for number, e in enumerate(entries, start=1):
        if not isinstance(e, dict):
            problems.append(f"log line {number}: not a JSON object")
            continue
        wrong = [f for f in LINE_FIELDS if f not in e]
        wrong += [f"{f} (unexpected)" for f in e if f not in LINE_FIELDS + ("entry", "withheld")]
        if not wrong:
            wrong = [
                f
                for f, ok in (
                    ("seq", _is_seq(e["seq"])),
                    ("kind", e["kind"] in ledger.KINDS),
                    ("key", isinstance(e["key"], str)),
                    ("entry_sha256", _is_hex(e["entry_sha256"])),
                    ("prev", _is_hex(e["prev"])),
                    ("hash", _is_hex(e["hash"])),
                    ("entry", isinstance(e.get("entry", {}), dict)),
                    ("withheld", isinstance(e.get("withheld", ""), str)),
                )
                if not ok
            ]
        if wrong:
            problems.append(f"log line {number}: missing or malformed {', '.join(wrong)}")
    if not isinstance(head, dict):
        return problems + ["the signed head is not a JSON object"]
    wrong = [f for f in HEAD_FIELDS if f not in head] + [f"{f} (unexpected)" for f in head if f not in HEAD_FIELDS]
    if not wrong:
        wrong = [
            f
            for f, ok in (
                ("schema", head["schema"] == HEAD_SCHEMA),
                ("seq", _is_seq(head["seq"], 0)),
                ("hash", _is_hex(head["hash"])),
                ("signed_at", _is_utc_time(head["signed_at"])),
                ("certificate_chain", isinstance(head["certificate_chain"], str)),
                ("signature", isinstance(head["signature"], str)),
            )
            if not ok
        ]
    if wrong:
        problems.append(f"the signed head: missing or malformed {', '.join(wrong)} (expected {HEAD_SCHEMA})")
    return problems


def _span(first: int, last: int) -> str:
    return f"entry seq {first} is" if first == last else f"entries seq {first} to {last} are"


def _is_seq(value: object, least: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_hex(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _is_utc_time(value: object) -> bool:
    try:
        return isinstance(value, str) and datetime.fromisoformat(value).utcoffset() is not None
    except ValueError:
        return False
