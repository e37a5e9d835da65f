"""The cost of encrypting the raw store (issue 18, item 3): writing and reading packs of image-sized blobs in plain
form and encrypted (AES-256-GCM, deterministic nonces; reading also checks each record's sha256), in the same run,
on the same bytes. Random bytes stand in for images: compressed formats are as incompressible. A temporary key
folder is used, never the operator's.

`python -m bench.rawstore` prints MB/s for each and the encrypted/plain ratio of the time."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

RECORDS = 2048
SIZE = 48 * 1024  # bytes per record: a 256-512 px JPEG
PACK = 128  # records per pack (engine.chunk_size)
ROUNDS = 3  # best of


def _best(fn) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ATELIER_DATA_KEY_DIR"] = str(Path(tmp) / "keys")
        from atelier import rawstore

        key = rawstore.data_key(create=True)
        blobs = [os.urandom(SIZE) for _ in range(RECORDS)]
        rows = [(hashlib.sha256(b).hexdigest(), b) for b in blobs]
        chunks = [rows[i : i + PACK] for i in range(0, RECORDS, PACK)]
        mb = RECORDS * SIZE / 1e6
        result = {"records": RECORDS, "bytes_per_record": SIZE, "records_per_pack": PACK}
        for mode, k in (("plain", None), ("encrypted", key)):
            folder = Path(tmp) / mode
            n = [0]

            def write():
                n[0] += 1
                for chunk in chunks:  # a new folder each round: write_pack skips a pack that exists
                    rawstore.write_pack(folder / str(n[0]), chunk, key=k)

            def read():
                for pack in (folder / "1").iterdir():
                    rawstore.read_pack(pack)

            w, r = _best(write), _best(read)
            result[mode] = {
                "write_mb_s": round(mb / w, 1),
                "read_mb_s": round(mb / r, 1),
                "write_s": round(w, 3),
                "read_s": round(r, 3),
            }
        for op in ("write", "read"):
            result[f"{op}_time_ratio"] = round(result["encrypted"][f"{op}_s"] / result["plain"][f"{op}_s"], 2)
        print(f"raw store, {RECORDS} records of {SIZE // 1024} KiB in packs of {PACK}:")
        for mode in ("plain", "encrypted"):
            r = result[mode]
            print(f"  {mode:9s}: write {r['write_mb_s']:7.1f} MB/s, read {r['read_mb_s']:7.1f} MB/s")
        print(
            f"  encrypted/plain time: write {result['write_time_ratio']}x, read {result['read_time_ratio']}x "
            "(read checks every record's sha256 when encrypted)"
        )
        return result


if __name__ == "__main__":
    main()
