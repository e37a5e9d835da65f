"""Single-prompt latency of `atelier generate` as a whole process (imports, the champion from the registry, the
prompt checks, sampling, the provenance work, signing, the ledger and the gallery), against a bare process that
imports the model code, loads the same model from models/diffusion (either backend) and samples the same prompt and
seed. Median of
ROUNDS interleaved runs after one warm-up each (the first call of a new version fills the champion cache).

Then the warm path and the light commands, each a whole process against `python -c pass` in the same rounds: one
artwork through a running `atelier studio`, `atelier --help`, and `atelier audit` of one artwork."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from atelier import paths

PROMPT = os.environ.get("ATELIER_BENCH_PROMPT", "a blue spiral composition")
ROUNDS = int(os.environ.get("ATELIER_BENCH_ROUNDS", 5))
BARE = """
import sys
from atelier.models.generator import load_generator
pipe = load_generator(sys.argv[1])
pipe([sys.argv[2]], seed=7, steps=25, guidance=3.0)[0].save(sys.argv[3])
"""


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=paths.ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> dict:
    with tempfile.TemporaryDirectory() as out:
        ours_cmd = [
            sys.executable,
            "-m",
            "app.cli",
            "generate",
            PROMPT,
            "--seed",
            "7",
            "--steps",
            "25",
            "--guidance",
            "3.0",
            "--out",
            out,
        ]
        bare_cmd = [sys.executable, "-c", BARE, str(paths.DIFFUSION_DIR), PROMPT, f"{out}/bare.png"]
        _time(ours_cmd), _time(bare_cmd)  # warm-up: file caches, and the champion cache of this version
        ours, bare = [], []
        for _ in range(ROUNDS):
            ours.append(_time(ours_cmd))
            bare.append(_time(bare_cmd))
    o, b = statistics.median(ours), statistics.median(bare)
    print(
        f"atelier generate, one prompt: median {o:.2f} s (min {min(ours):.2f}); bare sampling process: median "
        f"{b:.2f} s (min {min(bare):.2f}); ratio {o / b:.2f} ({ROUNDS} rounds)"
    )
    return {"atelier_s": o, "baseline_s": b, "ratio": o / b, **warm_and_light()}


def warm_and_light() -> dict:
    """Medians of whole processes: generate through a running studio, --help, audit of one artwork, `python -c pass`."""
    from app import studio

    if studio.find() is not None:
        raise RuntimeError("a studio already runs for this checkout; stop it before the benchmark starts its own")
    artwork = next(iter(sorted(paths.ARTWORKS.glob("*.png"))), None)
    if artwork is None:
        raise RuntimeError(f"no artwork in {paths.ARTWORKS}; run `make run` first")
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "studio", "--port", "0"],
        cwd=paths.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while (found := studio.find()) is None or found["pid"] != server.pid:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the studio did not start")
            time.sleep(0.2)
        with tempfile.TemporaryDirectory() as out:
            commands = {
                "studio_generate": [sys.executable, "-m", "app.cli", "generate", PROMPT, "--seed", "7", "--out", out],
                "help": [sys.executable, "-m", "app.cli", "--help"],
                "audit": [sys.executable, "-m", "app.cli", "audit", str(artwork)],
                "python_pass": [sys.executable, "-c", "pass"],
            }
            for cmd in commands.values():
                _time(cmd)  # warm-up
            times = {name: [] for name in commands}
            for _ in range(ROUNDS):
                for name, cmd in commands.items():
                    times[name].append(_time(cmd))
    finally:
        server.terminate()
        server.wait(timeout=60)
    medians = {f"{name}_s": statistics.median(t) for name, t in times.items()}
    print(
        "whole processes, medians of "
        f"{ROUNDS} rounds: one artwork through the studio {medians['studio_generate_s']:.2f} s, atelier --help "
        f"{medians['help_s']:.2f} s, atelier audit (one artwork) {medians['audit_s']:.2f} s, python -c pass "
        f"{medians['python_pass_s']:.2f} s"
    )
    return medians


if __name__ == "__main__":
    main()
