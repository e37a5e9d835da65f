"""Per-artwork cost of the provenance work (checks, manifest, watermark, ledger, signing) against bare DDIM sampling.

Runs the real generate path into a temporary folder and ledger, with the champion from the registry, the way
`generate_artworks` does (params read once, one ledger connection). Interleaved rounds, best of ROUNDS."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from atelier import paths
from atelier.config import load_params

PROMPTS = ["a blue spiral composition", "a red grid composition", "a golden stripes composition",
           "a green sunset landscape composition"]
ROUNDS = 3


def main() -> dict:
    from provenance import ledger
    from stages import generate

    params = load_params()
    g = params.generate
    champ = generate.load_champion(params.registry.model_name)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ATELIER_SIGNING_DIR", str(Path(tmp) / "keys"))
        paths.LEDGER = Path(tmp) / "ledger.sqlite"  # keep the project's ledger out of the benchmark
        conn = ledger.open_ledger(paths.LEDGER)
        run = lambda i, prompt: generate.make_artwork(  # noqa: E731
            champ, prompt, i, g.steps, g.guidance, "", Path(tmp), params=params, conn=conn)
        run(0, PROMPTS[0])  # warm-up (imports, signing identity)
        bare_t, full_t = [], []
        for r in range(ROUNDS):
            start = time.perf_counter()
            for i, prompt in enumerate(PROMPTS):
                champ.pipeline([prompt], seed=100 * r + i, steps=g.steps, guidance=g.guidance)
            bare_t.append((time.perf_counter() - start) / len(PROMPTS))
            start = time.perf_counter()
            for i, prompt in enumerate(PROMPTS):
                run(100 * r + i, prompt)
            full_t.append((time.perf_counter() - start) / len(PROMPTS))
        conn.close()
    bare, full = min(bare_t), min(full_t)
    overhead = (full - bare) / bare
    print(f"bare DDIM sampling ({g.steps} steps): {bare * 1000:.0f} ms/artwork; with provenance: {full * 1000:.0f} "
          f"ms/artwork; overhead {overhead:.1%} of sampling time (best of {ROUNDS})")
    return {"bare_s": bare, "full_s": full, "overhead": overhead}


if __name__ == "__main__":
    main()
