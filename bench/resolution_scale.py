"""The resolution service's lookups at ledger scale: 10,000 and 1,000,000 synthetic artworks in a temporary ledger
(the real schema, opened with ledger.open_ledger). Times a lookup by binding (the watermark id: one indexed query)
against the same query with the index defeated (a full scan), and a lookup by content (an image: watermark read,
perceptual hash, the in-memory phash index) against the ledger's SQL phash scan (ledger.by_phash) and a plain Python
loop over the hashes. Medians of several lookups. Needs no trained model or artwork.

The rows go into the artworks and watermarks tables directly (executemany, one transaction), not through
ledger.record, which appends a log entry per row in its own transaction: that rate is measured on a few thousand rows
and reported, since filling a million that way would take the benchmark's whole budget. The lookups read only those
two tables."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from app import resolve
from atelier.hashing import phash
from provenance import ledger, watermark

SIZES = (10_000, 1_000_000)
LOOKUPS = 50  # indexed lookups timed per size (median)
SLOW_LOOKUPS = 3  # un-indexed baselines are slow: fewer
RECORD_ROWS = 1_000  # rows written through ledger.record to measure its rate


def fill(conn, n: int, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """Insert n synthetic artworks (random phashes, version 2 watermark ids 1..n) in one transaction; (s, phashes)."""
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
    at = "2026-12-02T00:00:00+00:00"
    start = time.perf_counter()
    with ledger.transaction(conn):
        conn.executemany(
            "INSERT INTO watermarks (seq, watermark_id, source, reserved_at) VALUES (?, ?, ?, ?)",
            ((i, i, f"{i:064x}", at) for i in range(1, n + 1)),
        )
        conn.executemany(
            f"INSERT INTO artworks ({', '.join(ledger.COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (f"{i:016x}", f"{i:064x}", f"{int(h):016x}", i, f'{{"id": "{i:016x}"}}', "bench", "1", at)
                for i, h in zip(range(1, n + 1), hashes)
            ),
        )
    return time.perf_counter() - start, hashes


def record_rate(folder: Path) -> float:
    """Seconds per artwork written the ledger's way (ledger.record: row + log entry, one transaction each)."""
    conn = ledger.open_ledger(folder / "record.sqlite")
    manifest = {
        "id": "",
        "artwork": {"sha256_pixels": "", "phash": "0" * 16, "created_at": "2026-12-02T00:00:00"},
        "model": {"name": "bench", "version": "1"},
    }
    start = time.perf_counter()
    for i in range(RECORD_ROWS):
        manifest["id"], manifest["artwork"]["sha256_pixels"] = f"{i:016x}", f"{i:064x}"
        ledger.record(conn, manifest, ledger.watermark_id_for(conn, f"source-{i}"))
    conn.close()
    return (time.perf_counter() - start) / RECORD_ROWS


def median_s(fn, args_list) -> float:
    times = []
    for args in args_list:
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(folder: Path, n: int, rng: np.random.Generator) -> dict:
    conn = ledger.open_ledger(folder / f"ledger-{n}.sqlite")
    fill_s, hashes = fill(conn, n, rng)
    index = resolve.PhashIndex()
    start = time.perf_counter()
    index.refresh(conn)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    index.refresh(conn)  # nothing new: the incremental refresh each lookup pays
    refresh_s = time.perf_counter() - start

    ids = rng.integers(1, n + 1, LOOKUPS)
    binding = median_s(
        lambda i: resolve.by_binding(conn, index, watermark.ALG, watermark.binding_value(i), 10),
        [(int(i),) for i in ids],
    )
    scan = median_s(
        lambda i: conn.execute("SELECT * FROM artworks WHERE watermark_id + 0 = ?", (i,)).fetchone(),
        [(int(i),) for i in ids[:SLOW_LOOKUPS]],
    )

    # by content: an image whose phash artwork #k holds (with 3 bits flipped: a re-encoded copy's distance)
    picture = Image.fromarray(rng.integers(40, 216, (8, 8, 3), dtype=np.uint8)).resize((256, 256), Image.BICUBIC)
    k = int(rng.integers(1, n + 1))
    stored = int(phash(picture), 16) ^ 0b1011
    with ledger.transaction(conn):
        conn.execute("UPDATE artworks SET phash = ? WHERE watermark_id = ?", (f"{stored:016x}", k))
    hashes[k - 1] = np.uint64(stored)
    index = resolve.PhashIndex()
    index.refresh(conn)
    found = resolve.by_content(conn, index, picture, 10)["matches"]
    assert found and found[0]["manifestId"] == f"{k:016x}", found
    content = median_s(lambda: resolve.by_content(conn, index, picture, 10), [()] * 5)
    query = phash(picture)
    near = median_s(lambda: index.near(query, resolve.PHASH_MAX_BITS, 10), [()] * LOOKUPS)
    sql = median_s(lambda: ledger.by_phash(conn, query, max_distance=resolve.PHASH_MAX_BITS), [()] * SLOW_LOOKUPS)
    plain = [int(h) for h in hashes]
    q = int(query, 16)
    loop = median_s(
        lambda: [i for i, h in enumerate(plain) if (h ^ q).bit_count() <= resolve.PHASH_MAX_BITS], [()] * SLOW_LOOKUPS
    )
    conn.close()
    return {
        "entries": n,
        "fill_s": round(fill_s, 2),
        "index_build_s": round(build_s, 3),
        "index_refresh_ms": round(refresh_s * 1e3, 3),
        "by_binding_ms": round(binding * 1e3, 3),
        "binding_scan_ms": round(scan * 1e3, 2),
        "by_content_ms": round(content * 1e3, 1),
        "phash_index_ms": round(near * 1e3, 3),
        "phash_sql_ms": round(sql * 1e3, 1),
        "phash_python_loop_ms": round(loop * 1e3, 1),
    }


def main() -> dict:
    rng = np.random.default_rng(20)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["record_ms_per_artwork"] = round(record_rate(Path(tmp)) * 1e3, 2)
        for n in SIZES:
            r = measure(Path(tmp), n, rng)
            results[str(n)] = r
            print(
                f"{n:>9,} entries (filled in {r['fill_s']} s): by binding {r['by_binding_ms']} ms (scan "
                f"{r['binding_scan_ms']} ms, ratio {r['binding_scan_ms'] / r['by_binding_ms']:.0f}); by content "
                f"{r['by_content_ms']} ms, of which the phash index {r['phash_index_ms']} ms (SQL scan "
                f"{r['phash_sql_ms']} ms, Python loop {r['phash_python_loop_ms']} ms, ratio "
                f"{r['phash_python_loop_ms'] / r['phash_index_ms']:.0f}); index built in {r['index_build_s']} s, "
                f"refreshed in {r['index_refresh_ms']} ms",
                flush=True,
            )
    print(f"ledger.record: {results['record_ms_per_artwork']} ms per artwork (row + log entry, one transaction)")
    return results


if __name__ == "__main__":
    main()
