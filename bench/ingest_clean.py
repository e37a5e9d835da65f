"""Ingest + clean throughput on a generated set of images, against a single-process Pillow loop doing the same
read, hash, decode, perceptual hash, resize and PNG write; peak memory at two sizes; an incremental run.

Runs the real stage processes (`python -m stages.ingest`, `python -m stages.clean`) in a scratch copy of the
project, on the engine params.yaml names (2 local processes by default). The incremental run is timed twice: as the
two stage processes, and as the stages' work in one process whose imports are done (the interpreter start and the
imports, about a second, do not depend on the data). Two baselines: the Pillow loop without face detection, and the
same-work loop that also detects faces (dlib, the same bounded size). Sizes: ATELIER_BENCH_IMAGES (2,000) and
ATELIER_BENCH_IMAGES_LARGE (50,000, for the memory comparison, at 10,000 and 50,000 records).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageDraw

from atelier import faces
from atelier.declared import add_source
from tests.workspace import copy_project, edit_params

SIZE = int(os.environ.get("ATELIER_BENCH_SIZE", 512))  # generated images for throughput: SIZExSIZE JPEG, q90

REPEATS = 3  # stage-work timings are the median of this many runs from the same state
MEMORY_SMALL = 10_000  # records of the smaller memory run
SMALL = 48  # for the memory comparison at 10,000 and 50,000 records: tiny images, the records are what count
RESOLUTION = 32  # the training resolution clean writes


def make_images(folder: Path, n: int, start: int = 0, size: int = SIZE) -> None:
    """n distinct JPEGs and their metadata.jsonl rows (appended) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "metadata.jsonl").open("a") as meta:
        for i in range(start, start + n):
            rng = random.Random(i)
            img = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
            draw = ImageDraw.Draw(img)
            for _ in range(6):
                x, y = rng.randrange(size), rng.randrange(size)
                draw.ellipse(
                    (x, y, x + rng.randrange(size // 16, size // 4), y + rng.randrange(size // 16, size // 4)),
                    fill=tuple(rng.randrange(256) for _ in range(3)),
                )
            name = f"img_{i:06d}.jpg"
            img.save(folder / name, quality=90)
            meta.write(
                json.dumps(
                    {
                        "file_name": name,
                        "title": f"Bench {i}",
                        "creator": f"Artist {i % 97}",
                        "caption": "a bench composition",
                        "license": "CC0-1.0",
                    }
                )
                + "\n"
            )


def pillow_baseline(folder: Path, out: Path, detect_faces: bool = False) -> float:
    """Seconds for a plain single-process loop over the same files: read, sha256, decode, phash, resize, save. With
    `detect_faces`, the same-work loop (issue 28, item 7): also dlib's HOG frontal face detector on a grey copy at the
    bounded size clean looks at, upsampled once (atelier/faces.py's settings), written plainly."""
    detector = None
    if detect_faces:
        import dlib

        detector = dlib.get_frontal_face_detector()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for line in (folder / "metadata.jsonl").open():
        data = (folder / json.loads(line)["file_name"]).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        img = Image.open(io.BytesIO(data)).convert("RGB")
        imagehash.phash(img)
        if detector is not None:
            side = max(img.size)
            scale = min(faces.DETECT_MAX_SIDE, max(faces.DETECT_MIN_SIDE, side)) / side
            grey = img.convert("L").resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
            detector.run(np.asarray(grey), 1, faces.SCORE_THRESHOLD)
        scale = RESOLUTION / min(img.size)
        img = img.resize(
            (max(RESOLUTION, round(img.width * scale)), max(RESOLUTION, round(img.height * scale))), Image.LANCZOS
        )
        img.crop((0, 0, RESOLUTION, RESOLUTION)).save(out / f"{digest}.png")
    return time.perf_counter() - start


def run_stages(root: Path) -> tuple[float, int]:
    """Wall seconds of ingest then clean in `root`, and the peak RSS (MiB) of any one of their processes."""
    probe = (
        "import resource, subprocess, sys\n"
        "for s in ('ingest', 'clean'):\n"
        "    subprocess.run([sys.executable, '-m', f'stages.{s}'], check=True, stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    start = time.perf_counter()
    done = _probe(root, probe)
    return time.perf_counter() - start, int(done.stdout.split()[-1]) // 1024


def _probe(root: Path, probe: str) -> subprocess.CompletedProcess:
    """Run Python code `probe` in a fresh process in the project copy `root`; its error output on failure."""
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "ATELIER_QUIET": "1"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"the stage probe in {root} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def stage_work(root: Path) -> float:
    """Seconds of ingest then clean in `root` in one process whose imports are done before the clock starts: the
    work that depends on the data. That includes the modules imported lazily: pandas (pyarrow imports it when it
    first builds a table from Python rows) and scipy.fftpack (imagehash's first perceptual hash)."""
    probe = (
        "import time, pandas, scipy.fftpack, stages.ingest, stages.clean\n"
        "start = time.perf_counter()\n"
        "stages.ingest.main(); stages.clean.main()\n"
        "print(time.perf_counter() - start)\n"
    )
    done = _probe(root, probe)
    return float(done.stdout.split()[-1])


def params_faces(root: Path) -> str:
    import yaml

    return yaml.safe_load((root / "params.yaml").read_text())["clean"]["faces"]


def workspace(tmp: Path, name: str, n: int, size: int = SIZE) -> Path:
    root = copy_project(tmp / name)
    source = root / "data/sources/bench"
    make_images(source, n, size=size)
    edit_params(root, ingest={"sources": [{"name": "bench", "kind": "folder", "path": "data/sources/bench"}]})
    add_source(root, "bench", "data/sources/bench")  # its dvc.yaml dep: ingest refuses an undeclared source
    return root


OUTPUTS = ("data/raw", "data/clean", ".atelier")  # what ingest and clean leave for the next run


def repeated_work(root: Path, state: Path | None, repeats: int = REPEATS) -> float:
    """Median of `repeats` stage-work timings, each starting from the outputs saved in `state` (None: from
    nothing). Saved and restored as hard links (the stages replace files, never write into them), so every file,
    inode included, is as the run left it."""
    timings = []
    for _ in range(repeats):
        for rel in OUTPUTS:
            shutil.rmtree(root / rel, ignore_errors=True)
            if state is not None and (state / rel).exists():
                shutil.copytree(state / rel, root / rel, copy_function=os.link)
        os.sync()
        timings.append(stage_work(root))
    return statistics.median(timings)


def save_outputs(root: Path, state: Path) -> None:
    for rel in OUTPUTS:
        if (root / rel).exists():
            shutil.copytree(root / rel, state / rel, copy_function=os.link)


def main() -> dict:
    n = int(os.environ.get("ATELIER_BENCH_IMAGES", 2_000))  # with face detection on, 10,000 take minutes per run
    n_large = int(os.environ.get("ATELIER_BENCH_IMAGES_LARGE", 50_000))
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp:
        root = workspace(Path(tmp), "small", n)
        twin = copy_project(Path(tmp) / "twin")  # the same images, for the stage-work timings
        shutil.copytree(root / "data/sources/bench", twin / "data/sources/bench", copy_function=os.link)
        for declared in ("params.yaml", "dvc.yaml"):  # the source and its dvc.yaml dep: ingest refuses it undeclared
            shutil.copy2(root / declared, twin / declared)
        base = pillow_baseline(root / "data/sources/bench", Path(tmp) / "baseline")
        same = pillow_baseline(root / "data/sources/bench", Path(tmp) / "same-work", detect_faces=True)
        full, _ = run_stages(root)
        full_work = repeated_work(twin, None)
        save_outputs(twin, Path(tmp) / "after-full")
        for folder in (root, twin):
            make_images(folder / "data/sources/bench", n // 100, start=n)  # 1% new images
        incremental, _ = run_stages(root)
        incremental_work = repeated_work(twin, Path(tmp) / "after-full")
        results = {
            "images": n,
            "baseline_images_per_s": n / base,
            "atelier_images_per_s": n / full,
            "ratio": base / full,
            "same_work_images_per_s": n / same,
            "same_work_ratio": same / full,
            "faces": params_faces(root),
            "incremental_s": incremental,
            "full_s": full,
            "incremental_fraction": incremental / full,
            "full_work_s": full_work,
            "incremental_work_s": incremental_work,
            "incremental_work_fraction": incremental_work / full_work,
        }
        print(
            f"ingest+clean of {n:,} images (clean.faces: {results['faces']}): {n / full:,.0f} images/s ({full:.1f} s); "
            f"single-process Pillow loop without face detection {n / base:,.0f} images/s ({base:.1f} s), ratio "
            f"{base / full:.2f}; the same-work loop (with dlib face detection) {n / same:,.0f} images/s "
            f"({same:.1f} s), ratio {same / full:.2f}"
        )
        print(
            f"incremental run with 1% new images: stage work (median of {REPEATS}) {incremental_work:.2f} s = "
            f"{incremental_work / full_work:.1%} of the full run's {full_work:.1f} s; as two stage processes "
            f"(interpreter start and imports included) {incremental:.2f} s = {incremental / full:.1%} of {full:.1f} s"
        )
        if not n_large:  # ATELIER_BENCH_IMAGES_LARGE=0: throughput and incremental only
            return results
        small = workspace(Path(tmp), "memory-small", MEMORY_SMALL, size=SMALL)
        _, peak = run_stages(small)
        large = workspace(Path(tmp), "memory-large", n_large, size=SMALL)
        _, peak_large = run_stages(large)
        results.update(
            peak_rss_mib=peak, images_large=n_large, peak_rss_large_mib=peak_large, memory_ratio=peak_large / peak
        )
        print(
            f"peak memory (largest process): {peak} MiB at {MEMORY_SMALL:,} records, {peak_large} MiB at {n_large:,} "
            f"records; ratio {peak_large / peak:.2f}"
        )
    return results


if __name__ == "__main__":
    main()
