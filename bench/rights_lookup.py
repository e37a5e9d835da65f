"""The rights desk's lookups at 10,000 and 100,000 training records (issue 29): median and 95th percentile of a
lookup by picture (decode, sha256, perceptual hash against every record, duplicate groups, versions, citing artworks,
requests) and by creator name (the licence stage's identity rules over every record), in a scratch workspace: raw and
clean tables of synthetic records, a SQLite registry with one version trained on all of them, an empty ledger.

Baseline (same run): a bare pandas lookup of the same picture's sha256 in the same raw table (read the Parquet file,
compare one column), the least any lookup by picture must do."""

from __future__ import annotations

import hashlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from app import rights_desk
from atelier import lineage, paths
from atelier.config import load_params
from provenance import ledger
from provenance.rights_requests import WorkIndex

SIZES = tuple(int(n) for n in os.environ.get("ATELIER_BENCH_RIGHTS_SIZES", "10000,100000").split(","))
LOOKUPS = int(os.environ.get("ATELIER_BENCH_RIGHTS_LOOKUPS", 30))


def _workspace(root: Path, n: int, picture: bytes) -> None:
    rng = np.random.default_rng(0)
    ids = [hashlib.sha256(f"work {i}".encode()).hexdigest() for i in range(n)]
    ids[n // 2] = hashlib.sha256(picture).hexdigest()  # the picture looked up is one of the works
    hashes = [f"{int(h):016x}" for h in rng.integers(0, 2**63, n)]
    raw = pd.DataFrame(
        {
            "record_id": ids,
            "source": "bench",
            "source_uri": [f"bench/{i}.png" for i in range(n)],
            "title": [f"Work {i}" for i in range(n)],
            "creator": [f"Artist {i % 997}" for i in range(n)],
            "license_raw": "CC-BY-4.0",
            "license_url": None,
            "source_url": [f"https://example.org/works/{i}" for i in range(n)],
        }
    )
    for name in (
        "RAW_RECORDS",
        "CLEAN_RECORDS",
        "CLEAN_REJECTS",
        "CLEAN_DECODED",
        "TRAIN_RECORDS",
        "LEDGER",
        "OPT_OUT",
    ):
        setattr(paths, name, root / getattr(paths, name).relative_to(paths.ROOT))
    paths.ROOT = root
    for p in (paths.RAW_RECORDS, paths.CLEAN_RECORDS):
        p.parent.mkdir(parents=True, exist_ok=True)
    raw.to_parquet(paths.RAW_RECORDS)
    clean = raw.assign(phash=hashes)
    clean.to_parquet(paths.CLEAN_RECORDS)
    pd.DataFrame(columns=["record_id", "reason", "detail"]).to_parquet(paths.CLEAN_REJECTS)
    clean[["record_id", "phash"]].to_parquet(paths.CLEAN_DECODED)
    md5 = hashlib.md5(str(n).encode()).hexdigest()
    lineage.cache_path(md5).parent.mkdir(parents=True, exist_ok=True)
    clean.to_parquet(lineage.cache_path(md5))
    from registry import tracking

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    c = tracking.client()
    name = load_params().registry.model_name
    c.create_registered_model(name)
    run = c.create_run(c.create_experiment("bench", artifact_location=(root / "art").as_uri()))
    c.create_model_version(name, (root / "art").as_uri(), run_id=run.info.run_id)
    c.set_model_version_tag(name, "1", "dataset_md5", md5)
    c.set_registered_model_alias(name, "champion", "1")


def _times(fn, n: int) -> tuple[float, float]:
    fn()  # warm-up: the index is built, the files are in the page cache
    t = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        t.append(time.perf_counter() - start)
    t.sort()
    return statistics.median(t), t[min(len(t) - 1, round(0.95 * (len(t) - 1)))]


def main() -> dict:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, "PNG")
    picture = buf.getvalue()
    saved = {k: getattr(paths, k) for k in dir(paths) if k.isupper()}
    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    results = {}
    try:
        for n in SIZES:
            with tempfile.TemporaryDirectory(prefix="atelier-rights-bench-") as tmp:
                _workspace(Path(tmp), n, picture)
                conn = ledger.open_ledger()
                index = WorkIndex(load_params().registry.model_name)
                by_image = _times(lambda: rights_desk.lookup_image(conn, index, picture), LOOKUPS)
                by_name = _times(lambda: rights_desk.lookup_name(conn, index, "Artist 7"), LOOKUPS)
                sha = hashlib.sha256(picture).hexdigest()
                bare = _times(
                    lambda: pd.read_parquet(paths.RAW_RECORDS, columns=["record_id"])["record_id"].eq(sha).any(),
                    LOOKUPS,
                )
                found = rights_desk.lookup_image(conn, index, picture)["works"]
                assert found and found[0]["versions"][0]["champion"], "the benchmark's picture was not found"
                conn.close()
                for k, v in saved.items():
                    setattr(paths, k, v)
            results[f"{n}_records"] = {
                "image_median_ms": by_image[0] * 1000,
                "image_p95_ms": by_image[1] * 1000,
                "name_median_ms": by_name[0] * 1000,
                "name_p95_ms": by_name[1] * 1000,
                "bare_sha256_median_ms": bare[0] * 1000,
            }
            r = results[f"{n}_records"]
            print(
                f"rights lookup at {n:,} records: by picture median {r['image_median_ms']:.0f} ms (p95 "
                f"{r['image_p95_ms']:.0f}), by name median {r['name_median_ms']:.0f} ms (p95 {r['name_p95_ms']:.0f}); "
                f"bare pandas sha256 lookup {r['bare_sha256_median_ms']:.0f} ms"
            )
    finally:
        for k, v in saved.items():
            setattr(paths, k, v)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env
    return results


if __name__ == "__main__":
    main()
