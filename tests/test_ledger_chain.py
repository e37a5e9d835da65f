"""The ledger's hash chain and its signed head (issue 17, item 4): every write appends to the chain, an unchanged upsert
does not; an untouched public log verifies with only the CA certificate; an edited, reordered or deleted entry, a
truncated log, a head signed by another identity and a row edited in the operator's ledger are each detected and
named; an old ledger gets its chain backfilled."""

import copy
import json
import sqlite3

import pytest

from provenance import keys, ledger, publiclog
from tests.test_ledger import manifest

MODEL = "atelier-diffusion"
REFUSAL = {
    "id": "r1".ljust(16, "0"),
    "sha256_pixels": "r1".ljust(64, "0"),
    "phash": "0f" * 8,
    "prompt": "a lighthouse at dusk",
    "seed": 7,
    "model": {"name": MODEL, "version": "3"},
    "reason": "not published: possible replication",
    "nearest_training_images": [{"record_id": "wiki-12", "creator": "Ada", "license": "CC-BY-4.0", "similarity": 0.93}],
    "created_at": "2026-11-23T21:00:00+00:00",
}


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    return keys.create_signing_identity(tmp_path_factory.mktemp("signing") / "keys", "test")


def filled(tmp_path) -> sqlite3.Connection:
    """A ledger whose log is: 1-3 artworks a1, a2, a3; 4 refusal r1; 5 promotion 1 (by alice); 6 artwork a4."""
    conn = ledger.open_ledger(tmp_path / "ledger" / "ledger.sqlite")
    for i, art in enumerate(("a1", "a2", "a3")):
        ledger.record(conn, manifest(art), ledger.watermark_id_for(conn, f"s{i}"))
    ledger.record_refusal(conn, REFUSAL)
    ledger.record_promotion(conn, MODEL, "3", "alice", "2026-11-25T10:00:00+00:00", "better CLIPScore", None)
    ledger.record(conn, manifest("a4"), None)
    return conn


def published(conn, identity, tmp_path) -> tuple[list[dict], dict]:
    """Export the ledger's public log (sealing it) and read it back as an auditor would."""
    assert publiclog.export_public_log(conn, tmp_path / "public", identity) == ledger.log_head(conn)[0]
    return publiclog.read_public_log(tmp_path / "public")


def one(problems: list[str], *parts: str) -> str:
    """The one problem that contains every part (fails with the whole list otherwise)."""
    found = [p for p in problems if all(part in p for part in parts)]
    assert len(found) == 1, problems
    return found[0]


def test_every_write_is_chained_and_an_unchanged_upsert_appends_nothing(tmp_path):
    conn = filled(tmp_path)
    log = ledger.log_entries(conn)
    assert [(e["seq"], e["kind"], e["key"]) for e in log] == [
        (1, "artwork", "a1"),
        (2, "artwork", "a2"),
        (3, "artwork", "a3"),
        (4, "refusal", REFUSAL["id"]),
        (5, "promotion", "1"),
        (6, "artwork", "a4"),
    ]
    assert log[0]["prev"] == ledger.GENESIS and all(b["prev"] == a["hash"] for a, b in zip(log, log[1:]))
    assert log[0]["hash"] == ledger.chain_hash(1, "artwork", "a1", ledger.GENESIS, log[0]["entry_sha256"])
    assert log[0]["entry"]["manifest"] == manifest("a1") and log[0]["entry"]["watermark_id"] is not None
    assert log[4]["entry"]["by"] == "alice" and len(log[4]["entry"]["nonce"]) == 32

    ledger.record(conn, manifest("a2"), ledger.watermark_id_for(conn, "s1"))  # regenerated: same manifest
    assert ledger.log_head(conn) == (6, log[-1]["hash"])
    ledger.record(conn, manifest("a2", created_at="2026-11-24T08:00:00+00:00"), ledger.watermark_id_for(conn, "s1"))
    assert ledger.log_head(conn)[0] == 7 and ledger.log_entries(conn)[-1]["key"] == "a2"
    assert ledger.verify_ledger(conn) == []  # the row equals its latest entry, not its first

    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE log SET key = 'b2' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM log WHERE seq = 7")


def test_an_untouched_public_log_verifies_with_only_the_ca_and_holds_nothing_private(tmp_path, identity):
    conn = filled(tmp_path)
    entries, head = published(conn, identity, tmp_path)
    assert publiclog.verify_public_log(entries, head, identity.ca_pem()) == []
    assert (head["seq"], head["hash"]) == ledger.log_head(conn)
    assert publiclog.read_head(tmp_path / "ledger" / "head.json") == head  # seal wrote it beside the ledger
    assert head["certificate_chain"] == identity.chain.read_text()
    assert [e.get("entry", {}).get("id") for e in entries] == ["a1", "a2", "a3", REFUSAL["id"], None, "a4"]
    assert "entry" not in entries[4] and entries[4]["kind"] == "promotion"

    text = "".join(p.read_text() for p in (tmp_path / "public").iterdir())
    for private in ("alice", "nonce", "PRIVATE KEY", str(tmp_path), str(identity.folder)):
        assert private not in text
    assert publiclog.verify_ledger(conn, identity.ca_pem()) == []  # the operator's check, head included


def test_an_entry_holding_a_local_path_is_published_by_its_digest_only(tmp_path, identity):
    conn = filled(tmp_path)
    old = manifest("a5")
    old["model"]["registry_uri"] = "sqlite:////home/operator/atelier/mlflow.db"  # as manifests before issue 17 item 3
    ledger.record(conn, old, None)
    entries, head = published(conn, identity, tmp_path)
    assert entries[-1] == {k: ledger.log_entries(conn)[-1][k] for k in publiclog.LINE_FIELDS} | {
        "withheld": "local path"
    }
    assert "/home/operator" not in (tmp_path / "public" / "entries.jsonl").read_text()
    assert publiclog.verify_public_log(entries, head, identity.ca_pem()) == []  # the chain links digests


def test_an_edited_entry_is_named(tmp_path, identity):
    entries, head = published(filled(tmp_path), identity, tmp_path)
    edited = copy.deepcopy(entries)
    edited[1]["entry"]["phash"] = "f" * 16
    assert publiclog.verify_public_log(edited, head, identity.ca_pem()) == [
        "entry seq 2 (artwork a2) was edited: its entry does not hash to its entry_sha256"
    ]

    rehashed = copy.deepcopy(edited)  # digest and hash recomputed too: the next entry no longer links to it
    e = rehashed[1]
    e["entry_sha256"] = ledger.sha256_hex(ledger.canonical(e["entry"]))
    e["hash"] = ledger.chain_hash(e["seq"], e["kind"], e["key"], e["prev"], e["entry_sha256"])
    problem = one(publiclog.verify_public_log(rehashed, head, identity.ca_pem()), "does not link")
    assert problem.startswith("entry seq 3 (artwork a3) does not link to entry seq 2 (artwork a2)")


def test_a_rewritten_log_does_not_match_its_signed_head(tmp_path, identity):
    entries, head = published(filled(tmp_path), identity, tmp_path)
    rewritten = copy.deepcopy(entries)
    rewritten[1]["entry"]["phash"] = "f" * 16
    prev = rewritten[0]["hash"]
    for e in rewritten[1:]:  # the whole chain recomputed from the edit on: only the signed head tells
        e["prev"] = prev
        if "entry" in e:
            e["entry_sha256"] = ledger.sha256_hex(ledger.canonical(e["entry"]))
        e["hash"] = prev = ledger.chain_hash(e["seq"], e["kind"], e["key"], e["prev"], e["entry_sha256"])
    assert ledger.verify_chain(rewritten) == []
    assert publiclog.verify_public_log(rewritten, head, identity.ca_pem()) == [
        "entry seq 6 (artwork a4) does not match the signed head: the log up to it was rewritten after the head "
        "was signed"
    ]


def test_a_reordered_pair_is_named(tmp_path, identity):
    entries, head = published(filled(tmp_path), identity, tmp_path)
    entries[2], entries[3] = entries[3], entries[2]
    assert publiclog.verify_public_log(entries, head, identity.ca_pem()) == [
        "entry seq 3 (artwork a3) comes after entry seq 4 (refusal r100000000000000): the log was reordered"
    ]


def test_a_deleted_middle_entry_is_named(tmp_path, identity):
    entries, head = published(filled(tmp_path), identity, tmp_path)
    del entries[2]
    assert publiclog.verify_public_log(entries, head, identity.ca_pem()) == [
        "entry seq 3 was deleted: entry seq 4 (refusal r100000000000000) comes after entry seq 2 (artwork a2)"
    ]


def test_a_deleted_last_entry_is_caught_by_the_head(tmp_path, identity):
    entries, head = published(filled(tmp_path), identity, tmp_path)
    assert publiclog.verify_public_log(entries[:-1], head, identity.ca_pem()) == [
        "the log is truncated: the signed head covers seq 1 to 6 but the log ends at seq 5; entry seq 6 is deleted"
    ]


def test_a_head_signed_by_another_identity_or_edited_is_refused(tmp_path, identity):
    conn = filled(tmp_path)
    entries, head = published(conn, identity, tmp_path)
    intruder = keys.create_signing_identity(tmp_path / "intruder", "intruder")
    foreign = publiclog.sign_head(conn, intruder)
    assert publiclog.verify_public_log(entries, foreign, intruder.ca_pem()) == []  # valid, but not ours
    one(publiclog.verify_public_log(entries, foreign, identity.ca_pem()), "not issued by the trust anchor", "intruder")

    edited = head | {"seq": 5, "hash": entries[4]["hash"]}  # pretends the log ends before a4
    assert publiclog.verify_public_log(entries, edited, identity.ca_pem()) == [
        "entry seq 6 is not covered by the signed head (seq 5): added after signing",
        "the signed head: the signature does not verify: the signed content was changed after signing, or signed "
        "with another key",
    ]


def test_an_edited_or_deleted_row_in_the_operators_ledger_is_named_and_not_sealed(tmp_path, identity):
    conn = filled(tmp_path)
    publiclog.seal(conn, identity)
    conn.execute("UPDATE artworks SET phash = 'ffffffffffffffff' WHERE id = 'a2'")
    conn.execute("UPDATE promotions SET promoted_by = 'mallory' WHERE seq = 1")
    conn.execute("DELETE FROM refusals")
    assert ledger.verify_ledger(conn) == [
        "artwork a2: its row in the artworks table differs from its log entry (seq 2) in phash: the row was edited "
        "outside the ledger code; the log entry holds what was recorded",
        "promotion 1: its row in the promotions table differs from its log entry (seq 5) in by: the row was edited "
        "outside the ledger code; the log entry holds what was recorded",
        "entry seq 4 (refusal r100000000000000) has no row in the refusals table: the row was deleted outside the "
        "ledger code",
    ]
    with pytest.raises(ValueError, match="(?s)refusing to sign.*artwork a2"):
        publiclog.seal(conn, identity)


def test_a_ledger_cut_back_behind_its_last_head_is_caught_and_not_sealed(tmp_path, identity):
    conn = filled(tmp_path)
    assert publiclog.verify_ledger(conn) == [
        f"{tmp_path / 'ledger' / 'head.json'}: no signed head: nothing shows the ledger was not rewritten since; "
        "publiclog.seal() signs one at the end of each run"
    ]
    publiclog.seal(conn, identity)
    for trigger in ("log_no_update", "log_no_delete"):  # what someone editing the file by hand can do
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DELETE FROM log WHERE seq = 6")
    conn.execute("DELETE FROM artworks WHERE id = 'a4'")
    assert ledger.verify_ledger(conn) == []  # consistent in itself: only the previous head tells
    assert publiclog.verify_ledger(conn, identity.ca_pem()) == [
        f"the signed head ({tmp_path / 'ledger' / 'head.json'}): the log is truncated: the signed head covers seq 1 "
        "to 6 but the log ends at seq 5; entry seq 6 is deleted"
    ]
    with pytest.raises(ValueError, match="previous head .*the log is truncated.*entry seq 6 is deleted"):
        publiclog.seal(conn, identity)


def test_an_old_ledger_gets_its_chain_backfilled(tmp_path, identity):
    path = tmp_path / "ledger" / "ledger.sqlite"
    conn = filled(tmp_path)
    ledger.record(conn, manifest("a0", created_at="2026-11-20T08:00:00+00:00"), None)  # the oldest artwork
    conn.close()
    old = sqlite3.connect(path)  # back to a version 2 ledger: the same rows, no log
    old.executescript("DROP TABLE log; PRAGMA user_version = 2;")
    old.close()

    conn = ledger.open_ledger(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == ledger.SCHEMA_VERSION == 3
    assert [(e["kind"], e["key"]) for e in ledger.log_entries(conn)] == [
        ("artwork", "a0"),
        ("artwork", "a1"),
        ("artwork", "a2"),
        ("artwork", "a3"),
        ("artwork", "a4"),
        ("refusal", REFUSAL["id"]),
        ("promotion", "1"),
    ]
    assert ledger.verify_ledger(conn) == []
    entries, head = published(conn, identity, tmp_path)
    assert publiclog.verify_public_log(entries, head, identity.ca_pem()) == []

    conn.close()
    v1 = tmp_path / "v1.sqlite"  # a version 1 ledger (artworks and watermarks only) gains every table since
    old = sqlite3.connect(v1)
    old.executescript(ledger.SCHEMA.split("CREATE TABLE IF NOT EXISTS refusals")[0] + "PRAGMA user_version = 1;")
    old.close()
    assert ledger.log_entries(ledger.open_ledger(v1)) == []


def test_a_malformed_public_log_is_reported_not_guessed(tmp_path, identity):
    with pytest.raises(FileNotFoundError, match="entries.jsonl: missing"):
        publiclog.read_public_log(tmp_path / "nowhere")
    entries, head = published(filled(tmp_path), identity, tmp_path)
    lines = (tmp_path / "public" / "entries.jsonl").read_text().splitlines()
    (tmp_path / "public" / "entries.jsonl").write_text("\n".join(lines[:1] + ["{not json"] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match="entries.jsonl line 2: not JSON"):
        publiclog.read_public_log(tmp_path / "public")

    del entries[2]["hash"]
    entries[3]["seq"] = "4"
    assert publiclog.verify_public_log(entries, head, identity.ca_pem()) == [
        "log line 3: missing or malformed hash",
        "log line 4: missing or malformed seq",
    ]
    with pytest.raises(ValueError, match="trust anchor is not a PEM certificate"):
        publiclog.verify_public_log(entries, head, "not a certificate")
    assert json.loads((tmp_path / "public" / "head.json").read_text()) == head
