"""Wall time of a `dvc repro` with nothing changed (promote re-reads the registry; nothing else runs)."""

from __future__ import annotations

import time

from atelier import dvc


def main() -> dict:
    start = time.perf_counter()
    out = dvc.repro()
    seconds = time.perf_counter() - start
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    print(f"no-op dvc repro: {seconds:.1f} s; stages run: {[r.split(chr(39))[1] for r in ran]}")
    return {"seconds": seconds, "ran": ran}


if __name__ == "__main__":
    main()
