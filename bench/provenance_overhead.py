"""Per-artwork cost of the provenance work (checks, manifest, watermark, ledger, signing) against bare DDIM sampling.

Runs the real generate path into a temporary folder and ledger, with the champion from the registry, the way
`generate_artworks` does (params read once, one ledger connection). Two figures, best of ROUNDS interleaved rounds:
the provenance work itself (each make_artwork's time minus the sampling inside it) against bare sampling, and the
end-to-end difference per artwork (which also counts any slowdown of sampling itself between other work; on these
shared 2-core VMs that part varies by several percent from run to run)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from atelier import paths
from atelier.config import load_params

PROMPTS = [
    "a blue spiral composition",
    "a red grid composition",
    "a golden stripes composition",
    "a green sunset landscape composition",
]
ROUNDS = 5


class _TimedPipeline:
    """The champion's pipeline, timing each call: the sampling inside make_artwork, told apart from the rest."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


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
            champ, prompt, i, g.steps, g.guidance, "", Path(tmp), params=params, conn=conn
        )
        run(0, PROMPTS[0])  # warm-up (imports, signing identity)
        bare_t, full_t, work_t = [], [], []
        timed = _TimedPipeline(champ.pipeline)
        for r in range(ROUNDS):
            champ.pipeline = timed.inner
            start = time.perf_counter()
            for i, prompt in enumerate(PROMPTS):
                champ.pipeline([prompt], seed=100 * r + i, steps=g.steps, guidance=g.guidance)
            bare_t.append((time.perf_counter() - start) / len(PROMPTS))
            champ.pipeline, timed.seconds = timed, 0.0
            start = time.perf_counter()
            for i, prompt in enumerate(PROMPTS):
                run(100 * r + i, prompt)
            full_t.append((time.perf_counter() - start) / len(PROMPTS))
            work_t.append(full_t[-1] - timed.seconds / len(PROMPTS))
        conn.close()
    bare, full, work = min(bare_t), min(full_t), min(work_t)
    overhead, end_to_end = work / bare, (full - bare) / bare
    print(
        f"bare DDIM sampling ({g.steps} steps): {bare * 1000:.0f} ms/artwork; provenance work (checks, manifest, "
        f"watermark, signing, ledger, writes): {work * 1000:.1f} ms/artwork = {overhead:.1%} of sampling time; "
        f"end to end {full * 1000:.0f} ms/artwork, +{end_to_end:.1%} (best of {ROUNDS})"
    )
    return {"bare_s": bare, "full_s": full, "provenance_s": work, "overhead": overhead, "end_to_end": end_to_end}


if __name__ == "__main__":
    main()
