"""The ledger on the team's PostgreSQL (issue 27, item 4): the same chain and guarantees as the SQLite file (edits and
deletions refused by the database, rows checked against the log, erasure keeping the chain), writers on several
machines (processes) serialised with no entry lost or stored twice, and an embedded ledger migrated with its chain
verified on both sides. A server that is down is named, with how to start it."""

import multiprocessing
import sqlite3

import pytest

from provenance import keys, ledger, ledger_pg, publiclog
from tests.team import fresh_database, services
from tests.test_ledger import manifest
from tests.test_ledger_chain import MODEL, REFUSAL, filled


@pytest.fixture(scope="module")
def team():
    with services(only=("postgres",)) as team:
        yield team


@pytest.fixture
def url(team):
    return fresh_database(team)


def fill(conn) -> None:
    """The log of tests/test_ledger_chain.filled(): artworks a1-a3, refusal r1, promotion 1, artwork a4."""
    for i, art in enumerate(("a1", "a2", "a3")):
        ledger.record(conn, manifest(art), ledger.watermark_id_for(conn, f"s{i}"))
    ledger.record_refusal(conn, REFUSAL)
    ledger.record_promotion(conn, MODEL, "3", "alice", "2026-11-25T10:00:00+00:00", "better CLIPScore", None)
    ledger.record(conn, manifest("a4"), None)


def test_the_chain_on_postgresql_equals_the_files_and_edits_are_refused(url, tmp_path):
    conn = ledger.open_ledger(url)
    assert isinstance(conn, ledger_pg.PgConnection)
    fill(conn)
    embedded = filled(tmp_path)
    assert _content(conn) == _content(embedded)  # the same entries in the same order
    assert ledger.log_entries(conn)[0]["hash"] == ledger.log_entries(embedded)[0]["hash"]  # same bytes, same chain
    assert ledger.verify_ledger(conn) == []
    assert ledger.promotions(conn) == ledger.promotions(embedded)
    assert [r["id"] for r in ledger.by_phash(conn, "0" * 16)] == [r["id"] for r in ledger.by_phash(embedded, "0" * 16)]
    assert ledger.get(conn, "a2")["manifest"] == manifest("a2")

    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE log SET key = 'b2' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM log WHERE seq = 6")
    with pytest.raises(ValueError, match="watermark id 1 already belongs to artwork a1"):
        ledger.record(conn, manifest("a9"), ledger.watermark_id_for(conn, "s0"))  # the database's unique rule
    conn.execute("UPDATE artworks SET phash = 'ffffffffffffffff' WHERE id = 'a2'")
    assert ledger.verify_ledger(conn) == [
        "artwork a2: its row in the artworks table differs from its log entry (seq 2) in phash: the row was edited "
        "outside the ledger code; the log entry holds what was recorded"
    ]


def _content(conn) -> list[dict]:
    """The log without its hashes and the promotions' random nonces (which differ between any two ledgers)."""
    out = []
    for e in ledger.log_entries(conn):
        e = {k: v for k, v in e.items() if k not in ("hash", "prev", "entry_sha256")}
        e.get("entry", {}).pop("nonce", None)
        out.append(e)
    return out


def test_erasure_keeps_the_chain_and_the_append_only_rule(url):
    conn = ledger.open_ledger(url)
    fill(conn)
    entry = ledger.erase_record(conn, "wiki-12", "d" * 64, "2026-12-01T00:00:00+00:00", "erasure request")
    assert entry["entries_erased"] == [4] and entry["refusals"] == [REFUSAL["id"]]
    assert ledger.verify_ledger(conn) == []
    assert ledger.refusals(conn)[0]["nearest"][0]["creator"] == ledger.ERASED_VALUE
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM log WHERE seq = 1")


def test_the_head_is_signed_and_checked_against_the_shared_log(url, tmp_path, monkeypatch):
    from atelier import paths

    monkeypatch.setattr(paths, "LEDGER", tmp_path / "ledger" / "ledger.sqlite")
    identity = keys.create_signing_identity(tmp_path / "keys", "test")
    conn = ledger.open_ledger(url)
    fill(conn)
    head = publiclog.seal(conn, identity)
    assert head["seq"] == 6 and (tmp_path / "ledger" / "head.json").is_file()
    assert publiclog.verify_ledger(conn) == []


def _writer(url: str, prefix: str, n: int) -> None:
    conn = ledger.open_ledger(url)
    for i in range(n):
        ledger.record(conn, manifest(f"{prefix}{i:03d}"), ledger.watermark_id_for(conn, f"{prefix}{i}"))
    conn.close()


def test_concurrent_writers_lose_and_duplicate_nothing(url):
    ledger.open_ledger(url).close()
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(url, prefix, 25)) for prefix in ("a", "b", "c")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    conn = ledger.open_ledger(url)
    log = ledger.log_entries(conn)
    assert [e["seq"] for e in log] == list(range(1, 76))
    assert sorted(e["key"] for e in log) == sorted(f"{p}{i:03d}" for p in "abc" for i in range(25))
    assert sorted(ledger.all_watermark_ids(conn)) == list(range(1, 76))
    assert ledger.verify_ledger(conn) == []


def test_an_embedded_ledger_migrates_with_its_chain_verified_on_both_sides(url, tmp_path):
    source = filled(tmp_path)
    target = ledger.open_ledger(url)
    done = ledger.migrate(source, target)
    assert done["entries"] == 6 and done["artworks"] == 4 and done["promotions"] == 1
    assert ledger.log_entries(target) == ledger.log_entries(source)
    assert ledger.verify_ledger(target) == []
    ledger.record_promotion(target, MODEL, "4", "bob", "2026-12-01T10:00:00+00:00", "votes", "3")
    assert [p["version"] for p in ledger.promotions(target)] == ["3", "4"] and ledger.verify_ledger(target) == []
    with pytest.raises(ValueError, match="already holds log entries"):
        ledger.migrate(source, target)


def test_a_ledger_server_that_is_down_is_named_with_how_to_start_it(team):
    down = team.env()["ATELIER_LEDGER_URL"].rsplit(":", 1)[0] + ":1/atelier"  # nothing listens on port 1
    with pytest.raises(sqlite3.OperationalError, match=r"team ledger at postgresql://atelier@127\.0\.0\.1:1/atelier "):
        ledger.open_ledger(down)
    try:
        ledger.open_ledger(down)
    except sqlite3.OperationalError as e:
        assert "atelier services up" in str(e) and team.secrets()["db_password"] not in str(e)
