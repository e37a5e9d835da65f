"""Per-artwork cost of the provenance work (checks, manifest, watermark, ledger, signing) against bare DDIM sampling.

Runs the real generate path into a temporary folder and ledger, with the champion from the registry."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from atelier import paths
from atelier.config import load_params

PROMPTS = ["a blue spiral composition", "a red grid composition", "a golden stripes composition",
           "a green sunset landscape composition"]


def main() -> dict:
    from stages import generate

    g = load_params().generate
    champ = generate.load_champion(load_params().registry.model_name)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ATELIER_SIGNING_DIR", str(Path(tmp) / "keys"))
        paths.LEDGER = Path(tmp) / "ledger.sqlite"  # keep the project's ledger out of the benchmark
        generate.make_artwork(champ, PROMPTS[0], 0, g.steps, g.guidance, "", Path(tmp))  # warm-up (imports)
        start = time.perf_counter()
        for i, prompt in enumerate(PROMPTS):
            champ.pipeline([prompt], seed=100 + i, steps=g.steps, guidance=g.guidance)
        bare = (time.perf_counter() - start) / len(PROMPTS)
        start = time.perf_counter()
        for i, prompt in enumerate(PROMPTS):
            generate.make_artwork(champ, prompt, 100 + i, g.steps, g.guidance, "", Path(tmp))
        full = (time.perf_counter() - start) / len(PROMPTS)
    overhead = (full - bare) / bare
    print(f"bare DDIM sampling ({g.steps} steps): {bare * 1000:.0f} ms/artwork; with provenance: {full * 1000:.0f} "
          f"ms/artwork; overhead {overhead:.0%} of sampling time")
    return {"bare_s": bare, "full_s": full, "overhead": overhead}


if __name__ == "__main__":
    main()
