"""URL opt-outs re-checked (ingest.recheck_after_days, `atelier sources recheck`): a local web server whose
robots.txt changes between two runs of the real ingest; the work is excluded with the new signal's reason, and the
re-check names the record it was."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime

import pyarrow.parquet as pq
import yaml

from atelier.config import EngineParams, IngestParams
from atelier.io import ParquetStream
from atelier.parallel import Engine
from stages.ingest import INDEX_SCHEMA, RAW_SCHEMA, ingest_all, load_previous, mark_due, recheck_due, recheck_report
from tests.test_url_source import Route, png, serve, url_source  # noqa: F401 (serve: the web server fixture)
from tests.workspace import copy_project

ALLOW = b"User-agent: *\nAllow: /\n"
DISALLOW_A = b"User-agent: *\nDisallow: /a.png\n"
DAY = 86400.0


def run(tmp_path, source, now: float, days: float = 30) -> tuple[dict, dict]:
    """One ingest run in `tmp_path` (its own raw store and index): (records by URL, re-checks)."""
    p = IngestParams(sources=[source], recheck_after_days=days)
    index, compacted = tmp_path / "index.parquet", tmp_path / "index.compacted"
    previous = load_previous(index, compacted)
    (tmp_path / "packs").mkdir(exist_ok=True)
    with (
        Engine(EngineParams(workers=1)) as engine,
        ParquetStream(tmp_path / "raw.parquet", RAW_SCHEMA) as out,
        ParquetStream(index, INDEX_SCHEMA) as idx,
    ):
        _, _, _, rechecks = ingest_all(p, engine, tmp_path / "packs", out, idx, previous, now)
    records = pq.read_table(tmp_path / "raw.parquet").to_pylist()
    return {r["source_uri"]: r for r in records}, rechecks


def reason(record: dict) -> str | None:
    return None if record["ingest_error"] is None else record["ingest_error"].partition(": ")[0]


def site_and_source(tmp_path, serve):
    site = serve(
        {"/robots.txt": Route(ALLOW), "/a.png": Route(png((200, 10, 10))), "/b.png": Route(png((10, 200, 10)))}
    )
    urls = [f"{site.url}/a.png", f"{site.url}/b.png"]
    return site, urls, url_source(tmp_path, urls)


def test_forced_recheck_excludes_a_work_whose_robots_txt_changed(tmp_path, serve):
    site, (a, b), source = site_and_source(tmp_path, serve)
    t0 = time.time()  # the source stamps each fetch with the clock; runs are then placed days later
    first, rechecks = run(tmp_path, source, t0)
    assert reason(first[a]) is None and reason(first[b]) is None
    assert rechecks["changed"] == [] and not rechecks["rechecked"]
    fetched = pq.read_table(tmp_path / "index.parquet").column("fetched_at").to_pylist()
    assert all(t0 <= t <= time.time() for t in fetched)
    first_fetch = datetime.fromtimestamp(fetched[0], UTC).isoformat(timespec="seconds")

    site.routes["/robots.txt"] = Route(DISALLOW_A)  # the rights holder reserves a.png after our first fetch
    second, rechecks = run(tmp_path, source, t0 + DAY)  # not due yet: nothing is fetched, nothing changes
    assert reason(second[a]) is None and site.hits["/a.png"] == 1 and site.hits["/robots.txt"] == 1
    assert not rechecks["rechecked"]

    index = tmp_path / "index.parquet"  # what the flow asks before a run: is a re-check due (then ingest is forced)?
    assert not recheck_due(index, 30, t0 + DAY) and recheck_due(index, 30, t0 + 31 * DAY)
    assert mark_due(tmp_path / "index.parquet", tmp_path / "index.compacted", ["web"]) == {"web": 2}
    assert recheck_due(index, 30, t0 + DAY)  # marked by `atelier sources recheck`: due whatever its age
    third, rechecks = run(tmp_path, source, t0 + 2 * DAY)
    assert reason(third[a]) == "opted_out:robots_txt" and "Disallow: /a.png" in third[a]["ingest_error"]
    assert reason(third[b]) is None
    assert site.hits["/robots.txt"] == 2 and site.hits["/a.png"] == 1  # refused before the request, as always
    assert rechecks["rechecked"] == {"web": 2}
    assert [(c["url"], c["reason"], c["record_id"]) for c in rechecks["changed"]] == [
        (a, "opted_out:robots_txt", first[a]["record_id"])
    ]

    report = recheck_report(rechecks, t0 + 2 * DAY, 30)
    assert report["changed"][0]["fetched_before"] == first_fetch and report["lineage"] is None
    seen = []
    report = recheck_report(rechecks, t0 + 2 * DAY, 30, lambda ids: seen.append(ids) or {"versions": []})
    assert seen == [[first[a]["record_id"]]] and report["lineage"] == {"versions": []}

    # the next run (not due) keeps the exclusion: a refused URL is always fetched again, never reused
    fourth, rechecks = run(tmp_path, source, t0 + 3 * DAY)
    assert reason(fourth[a]) == "opted_out:robots_txt" and reason(fourth[b]) is None


def test_recheck_after_zero_days_checks_every_run(tmp_path, serve):
    site, (a, b), source = site_and_source(tmp_path, serve)
    t0 = time.time()  # the source stamps each fetch with the clock; runs are then placed days later
    first, _ = run(tmp_path, source, t0, days=0)
    assert reason(first[a]) is None
    site.routes["/robots.txt"] = Route(DISALLOW_A)
    second, rechecks = run(tmp_path, source, time.time() + 1, days=0)  # a second after the first run ended
    assert reason(second[a]) == "opted_out:robots_txt" and reason(second[b]) is None
    assert [c["url"] for c in rechecks["changed"]] == [a]
    assert site.hits["/b.png"] == 2  # fetched again: its headers are checked anew too


def test_a_header_opt_out_published_later_is_found_by_the_recheck(tmp_path, serve):
    site, (a, b), source = site_and_source(tmp_path, serve)
    t0 = time.time()  # the source stamps each fetch with the clock; runs are then placed days later
    run(tmp_path, source, t0)
    site.routes["/b.png"] = Route(png((10, 200, 10)), headers=[("X-Robots-Tag", "noai")])
    same, _ = run(tmp_path, source, t0 + 29 * DAY)
    assert reason(same[b]) is None
    later, rechecks = run(tmp_path, source, t0 + 31 * DAY)  # past recheck_after_days
    assert reason(later[b]) == "opted_out:x_robots_tag" and reason(later[a]) is None
    assert [c["reason"] for c in rechecks["changed"]] == ["opted_out:x_robots_tag"]


def test_sources_recheck_command_marks_the_fetches_due(tmp_path, serve):
    site, (a, b), source = site_and_source(tmp_path, serve)
    run(tmp_path, source, time.time())
    root = copy_project(tmp_path / "ws")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"]["sources"].append(source.model_dump(exclude_defaults=True) | {"kind": "urls"})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".atelier").mkdir(exist_ok=True)
    shutil.copy(tmp_path / "index.parquet", root / ".atelier" / "ingest-index.parquet")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "sources", "recheck", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )

    wrong = cli("demo")
    assert wrong.returncode == 2 and "'demo' is not a url source" in wrong.stderr
    done = cli("web")
    assert done.returncode == 0, done.stderr
    assert "2 earlier fetches of 'web' marked due" in done.stdout
    index = pq.read_table(root / ".atelier" / "ingest-index.parquet").to_pydict()
    assert index["recheck_due"] == [True, True] and all(index["fetched_at"])  # the fetch times are kept
