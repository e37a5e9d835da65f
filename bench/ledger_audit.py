"""Auditing at ledger scale: 10,000 artworks in a temporary ledger. Times the audit's ledger work per artwork —
the ledger-copy check (lookup by id, manifest parsed) for every entry, and the recovery of a stripped copy by
watermark (nearest of 10,000 ids) confirmed by perceptual hash — against a bare sqlite primary-key SELECT loop."""

from __future__ import annotations

import copy
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from PIL import Image

from atelier import paths
from atelier.hashing import phash
from provenance import ledger, watermark

ENTRIES = 10_000


def main() -> dict:
    sidecars = sorted(paths.ARTWORKS.glob("*.provenance.json"))
    if not sidecars:
        raise SystemExit("run `make run` first: the benchmark copies a real artwork's manifest")
    template = json.loads(sidecars[0].read_text())
    with tempfile.TemporaryDirectory() as tmp:
        conn = ledger.open_ledger(Path(tmp) / "ledger.sqlite")
        start = time.perf_counter()
        ids = []
        for i in range(ENTRIES):
            m = copy.deepcopy(template)
            m["id"] = f"{i:016x}"
            m["artwork"]["sha256_pixels"] = f"{i:064x}"
            wm = ledger.watermark_id_for(conn, f"source-{i}")
            ledger.record(conn, m, wm)
            ids.append(m["id"])
        fill = time.perf_counter() - start

        start = time.perf_counter()
        for artwork_id in ids:
            assert ledger.get(conn, artwork_id)["manifest"]["id"] == artwork_id
        ours = (time.perf_counter() - start) / ENTRIES
        bare_conn = sqlite3.connect(Path(tmp) / "ledger.sqlite")
        start = time.perf_counter()
        for artwork_id in ids:
            bare_conn.execute("SELECT manifest FROM artworks WHERE id = ?", (artwork_id,)).fetchone()
        bare = (time.perf_counter() - start) / ENTRIES

        # a stripped copy of artwork #1234: mark a real image with its watermark id, then recover it
        target = ledger.get(conn, ids[1234])
        image = Image.open(paths.ARTWORKS / template["artwork"]["file"]).convert("RGB")
        marked = watermark.embed(image, target["watermark_id"])
        start = time.perf_counter()
        found = ledger.by_mark(conn, marked)
        candidates = ledger.by_phash(conn, phash(marked), max_distance=10)
        recover = time.perf_counter() - start
        conn.close()
        bare_conn.close()
    assert found is not None and found["id"] == ids[1234] and candidates
    print(
        f"filled {ENTRIES:,} ledger entries in {fill:.1f} s; ledger-copy check {ours * 1e3:.3f} ms/artwork "
        f"({ours * ENTRIES:.1f} s for all {ENTRIES:,}) vs bare sqlite SELECT {bare * 1e3:.3f} ms (ratio "
        f"{bare / ours:.2f}); recovery of a stripped copy among {ENTRIES:,}: {recover:.2f} s"
    )
    return {"fill_s": fill, "check_ms": ours * 1e3, "bare_ms": bare * 1e3, "recover_s": recover}


if __name__ == "__main__":
    main()
