"""`make bench`: run every benchmark after `make run` (they use the trained models in models/)."""

from __future__ import annotations

import sys

from bench import clip_embedding, ledger_audit, noop_repro, provenance_overhead

BENCHMARKS = {"clip_embedding": clip_embedding.main, "provenance_overhead": provenance_overhead.main,
              "noop_repro": noop_repro.main, "ledger_audit": ledger_audit.main}

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(BENCHMARKS)
    for name in chosen:
        print(f"\n== {name}")
        BENCHMARKS[name]()
