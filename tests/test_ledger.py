"""The artwork ledger: watermark ids sequential and stable per source, idempotent upserts, lookups by watermark,
perceptual hash, pixels and model version, and two processes writing at once."""

import copy
import io
import multiprocessing

import pytest
from PIL import Image

from atelier.hashing import phash, pixels_sha256
from provenance import ledger, watermark
from tests.test_watermark import artwork

BASE = {
    "schema": "atelier.provenance/1",
    "model": {"name": "atelier-diffusion", "version": "3"},
    "artwork": {"phash": "0" * 16, "sha256_pixels": "0" * 64, "created_at": "2026-11-23T20:00:00+00:00"},
}


def manifest(artwork_id: str, version: str = "3", phash_hex: str = "0" * 16, **artwork) -> dict:
    """The fields the ledger indexes (the rest of a real manifest is stored as is)."""
    m = copy.deepcopy(BASE)
    m["id"] = artwork_id
    m["model"]["version"] = version
    m["artwork"].update(sha256_pixels=artwork_id.ljust(64, "0"), phash=phash_hex, **artwork)
    return m


def test_watermark_ids_are_stable_per_source_and_sequential(tmp_path):
    conn = ledger.open_ledger(tmp_path / "l.sqlite")
    ids = [ledger.watermark_id_for(conn, f"source-{i}") for i in range(120)]
    assert ledger.watermark_id_for(conn, "source-7") == ids[7]
    assert ids == list(range(1, 121))  # version 2: the mark's own code keeps ids apart (tests/test_watermark_ids.py)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_record_is_an_idempotent_upsert_and_refuses_a_reused_watermark(tmp_path):
    conn = ledger.open_ledger(tmp_path / "l.sqlite")
    wm = ledger.watermark_id_for(conn, "s1")
    ledger.record(conn, manifest("a1"), wm)
    again = manifest("a1", created_at="2026-11-24T08:00:00+00:00")
    ledger.record(conn, again, wm)  # the same artwork regenerated
    assert conn.execute("SELECT COUNT(*) FROM artworks").fetchone()[0] == 1
    assert ledger.get(conn, "a1")["created_at"] == "2026-11-24T08:00:00+00:00"
    assert ledger.get(conn, "a1")["manifest"] == again
    with pytest.raises(ValueError, match="already belongs to artwork a1"):
        ledger.record(conn, manifest("b2"), wm)
    ledger.record(conn, manifest("c3"), None)  # an image that could not carry a watermark
    assert ledger.all_watermark_ids(conn) == [wm]
    assert ledger.get(conn, "nope") is None


def test_lookups_by_watermark_phash_pixels_and_model_version(tmp_path):
    conn = ledger.open_ledger(tmp_path / "l.sqlite")
    ids = {}
    for k, (art, version, ph) in enumerate(
        [("a1", "3", "ffff000000000000"), ("a2", "3", "ffff00000000000f"), ("a3", "4", "00000000ffffffff")]
    ):
        ids[art] = ledger.watermark_id_for(conn, f"s{k}")
        ledger.record(conn, manifest(art, version, ph), ids[art])

    assert ledger.by_watermark_id(conn, ids["a2"])["id"] == "a2"  # version 1 matching: tests/test_watermark_ids.py
    assert ledger.by_watermark_id(conn, 99) is None

    near = ledger.by_phash(conn, "ffff000000000001", max_distance=8)
    assert [(r["id"], r["distance"]) for r in near] == [("a1", 1), ("a2", 3)]
    assert ledger.by_sha256_pixels(conn, "a3".ljust(64, "0"))["id"] == "a3"
    assert [r["id"] for r in ledger.by_model_version(conn, "atelier-diffusion", 3)] == ["a1", "a2"]
    assert len(ledger.by_model_version(conn, "atelier-diffusion")) == 3


def _writer(path, worker):
    conn = ledger.open_ledger(path)
    for i in range(15):
        source = "shared" if i == 7 else f"w{worker}-{i}"
        wm = ledger.watermark_id_for(conn, source)
        ledger.record(conn, manifest(f"{source}-art"), wm)


def test_two_processes_can_write_at_once(tmp_path):
    path = tmp_path / "l.sqlite"
    procs = [multiprocessing.get_context("spawn").Process(target=_writer, args=(path, w)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    conn = ledger.open_ledger(path)
    assert conn.execute("SELECT COUNT(*) FROM artworks").fetchone()[0] == 29
    assert conn.execute("SELECT COUNT(*) FROM watermarks").fetchone()[0] == 29
    ids = ledger.all_watermark_ids(conn)
    assert len(ids) == len(set(ids)) == 29


def make(conn, seed: int) -> dict:
    """The generate stage's order: reserve an id for the unmarked pixels, embed, then hash and record."""
    unmarked = artwork(seed)
    wm = ledger.watermark_id_for(conn, pixels_sha256(unmarked))
    marked = watermark.embed(unmarked, wm)
    sha = pixels_sha256(marked)
    m = manifest(sha[:16], phash_hex=phash(marked))
    m["artwork"]["sha256_pixels"] = sha
    ledger.record(conn, m, wm)
    return {"manifest": m, "image": marked, "watermark_id": wm}


def test_regenerating_is_idempotent_and_a_stripped_copy_is_traced(tmp_path):
    conn = ledger.open_ledger(tmp_path / "l.sqlite")
    first, _, third = make(conn, 1), make(conn, 2), make(conn, 3)
    again = make(conn, 1)  # same model, prompt and seed: same pixels, same id, same row
    assert again["manifest"]["id"] == first["manifest"]["id"]
    assert conn.execute("SELECT COUNT(*) FROM artworks").fetchone()[0] == 3

    buf = io.BytesIO()
    third["image"].save(buf, format="JPEG", quality=75)  # manifest stripped, pixels re-encoded
    copy_ = Image.open(io.BytesIO(buf.getvalue()))
    hit = ledger.by_mark(conn, copy_)
    assert hit["id"] == third["manifest"]["id"]
    assert hit["id"] in [r["id"] for r in ledger.by_phash(conn, phash(copy_), max_distance=6)]  # confirmed


@pytest.mark.slow
def test_auditing_against_ten_thousand_ledger_entries(tmp_path):
    """Load (reliability issue): a ledger of 10,000 artworks. Every entry is found by id and by pixel hash, and a
    stripped, re-encoded copy of one of them is recovered by its watermark and confirmed by perceptual hash.
    The figures are printed for the closing note (bench/ledger_audit.py measures them against bare sqlite)."""
    import time

    conn = ledger.open_ledger(tmp_path / "l.sqlite")
    image = artwork(7)
    start = time.perf_counter()
    ids = []
    for i in range(10_000):
        wm = ledger.watermark_id_for(conn, f"source-{i}")
        ledger.record(conn, manifest(f"{i:016x}", phash_hex=f"{(i * 2654435761) % 2**64:016x}"), wm)
        ids.append(wm)
    fill = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(10_000):
        assert ledger.get(conn, f"{i:016x}")["manifest"]["id"] == f"{i:016x}"
        assert ledger.by_sha256_pixels(conn, f"{i:016x}".ljust(64, "0"))["id"] == f"{i:016x}"
    lookups = time.perf_counter() - start

    target = f"{7777:016x}"
    marked = watermark.embed(image, ids[7777])
    ledger.record(conn, manifest(target, phash_hex=phash(marked)), ids[7777])  # its real perceptual hash
    buf = io.BytesIO()
    marked.save(buf, format="JPEG", quality=90)  # credentials stripped: a re-encoded copy
    copy_ = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    start = time.perf_counter()
    found = ledger.by_mark(conn, copy_)
    near = ledger.by_phash(conn, phash(copy_), max_distance=10)
    recover = time.perf_counter() - start
    assert found is not None and found["id"] == target
    assert target in {row["id"] for row in near}
    print(
        f"ledger of 10,000: filled in {fill:.1f} s; 20,000 lookups in {lookups:.2f} s; "
        f"stripped copy recovered in {recover:.2f} s"
    )
