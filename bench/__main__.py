"""`make bench`: every benchmark, each against a plain-library baseline measured in the same run, then a summary.

Run after `make run` (clip_embedding, provenance_overhead, noop_repro and ledger_audit use the trained models and the
artworks). `python -m bench NAME...` runs only the named ones."""

from __future__ import annotations

import json
import os
import sys
import time

from atelier import paths
from atelier.io import write_json
from bench import (
    best_of_k,
    clip_embedding,
    evaluation,
    faces,
    generate_latency,
    gpu,
    ingest_clean,
    ledger_audit,
    noop_repro,
    provenance_overhead,
    rawstore,
    resolution_scale,
    rights_lookup,
    team,
    training,
    watermark_robustness,
)

BENCHMARKS = {
    "ingest_clean": ingest_clean.main,
    "training": training.main,
    "clip_embedding": clip_embedding.main,
    "provenance_overhead": provenance_overhead.main,
    "noop_repro": noop_repro.main,
    "ledger_audit": ledger_audit.main,
    "evaluation": evaluation.main,
    "generate_latency": generate_latency.main,
    "best_of_k": best_of_k.main,
    "gpu": gpu.main,
    "rights_lookup": rights_lookup.main,
    "faces": faces.main,
    "rawstore": rawstore.main,
    "resolution_scale": resolution_scale.main,
    "team": team.main,
    "watermark_robustness": watermark_robustness.main,
}


def isolated(benchmark) -> dict:
    """Run one benchmark, then put back the environment and atelier.paths as they were: a benchmark that points the
    signing folder, the data key or the ledger at its scratch folder must not leave the next one there (a generate
    process started later would sign with a throwaway identity and refuse to seal the project's ledger)."""
    env = dict(os.environ)
    saved = {k: getattr(paths, k) for k in dir(paths) if k.isupper()}
    try:
        return benchmark()
    finally:
        os.environ.clear()
        os.environ.update(env)
        for k, v in saved.items():
            setattr(paths, k, v)


if __name__ == "__main__":
    chosen = sys.argv[1:] or list(BENCHMARKS)
    results, start = {}, time.perf_counter()
    for name in chosen:
        print(f"\n== {name}", flush=True)
        began = time.perf_counter()
        results[name] = {**isolated(BENCHMARKS[name]), "wall_s": round(time.perf_counter() - began, 1)}
    write_json(paths.REPORTS / "bench.json", results)
    print(
        f"\nall benchmarks: {time.perf_counter() - start:.0f} s; figures in {paths.relative(paths.REPORTS)}/bench.json"
    )
    print(json.dumps(results, indent=1, default=str))
