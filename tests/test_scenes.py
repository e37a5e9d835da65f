"""The second built-in collection (tests/scenes.py): deterministic, free-text captions that tell the truth about
the colours drawn, mixed formats, sizes and licences, and the licence decisions the real data stages give it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image, ImageOps

from atelier.dataset import labels
from atelier.licenses import normalise
from tests.conftest import copy_repo, edit_params
from tests.scenes import COLOURS, colour_words, nearest_colour, write_scenes

N = 60


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scenes") / "scenes"
    summary = write_scenes(folder, n=N, seed=0)
    assert summary["images"] == N
    return folder


def test_same_seed_same_bytes_from_the_api_and_the_command_line(scenes, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    command = [sys.executable, "-m", "tests.scenes", str(tmp_path / "again"), "--n", str(N), "--seed", "0"]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    assert json.loads(out)["images"] == N
    first, again = _files(scenes), _files(tmp_path / "again")
    assert first.keys() == again.keys() and first == again  # every image, metadata.jsonl, layout.json, expected.json
    assert len(first) == N + 3
    other = tmp_path / "other"
    write_scenes(other, n=N, seed=1)
    assert _rows(other) != _rows(scenes)


def test_captions_are_free_text_varied_and_never_the_demo_convention(scenes):
    captions = [r["caption"] for r in _rows(scenes)]
    assert all(labels(c) is None for c in captions)
    assert all(c and "composition" not in c for c in captions)
    assert len(set(captions)) >= 0.75 * N  # mostly distinct...
    assert len({len(c.split()) for c in captions}) >= 6  # ...of many lengths
    assert sum(bool(colour_words(c)) for c in captions) >= N / 2


def _upright(data: bytes) -> Image.Image:
    """As clean sees it: EXIF orientation applied, transparency over white."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))
    return img.convert("RGB")


def test_every_colour_a_caption_names_is_drawn_where_the_layout_says(scenes):
    layout = json.loads((scenes / "layout.json").read_text(encoding="utf-8"))
    checked = 0
    for row in _rows(scenes):
        entry = layout[row["file_name"]]
        mentions = entry["mentions"]
        assert Counter(colour_words(row["caption"])) == Counter(m["colour"] for m in mentions), row["caption"]
        img = _upright((scenes / row["file_name"]).read_bytes())
        if entry["mode"] == "L":
            assert not mentions and not colour_words(row["caption"])  # no colour named in a greyscale picture
        for m in mentions:
            assert m["probes"], (row["file_name"], m)
            for fx, fy in m["probes"]:
                x, y = min(img.width - 1, int(fx * img.width)), min(img.height - 1, int(fy * img.height))
                got = nearest_colour(img.getpixel((x, y)))
                assert got == m["colour"], (row["file_name"], row["caption"], m["part"], (x, y), got)
                checked += 1
    assert checked >= N


def test_the_colour_check_would_catch_a_wrong_caption():
    red, blue = COLOURS["red"], COLOURS["blue"]
    assert nearest_colour(red) == "red" and nearest_colour(blue) == "blue" and nearest_colour((200, 60, 50)) == "red"
    assert colour_words("A Gray mountain beside a red-roofed house, in greyscale") == ["grey", "red"]


def test_sizes_formats_and_licences_are_mixed(scenes):
    rows = _rows(scenes)
    formats, modes, orientations, sizes = Counter(), Counter(), Counter(), []
    for row in rows:
        with Image.open(scenes / row["file_name"]) as img:
            formats[img.format] += 1
            modes[img.mode] += 1
            orientations[img.getexif().get(0x0112)] += 1
            sizes.append(img.size)
    assert set(formats) == {"PNG", "JPEG", "WEBP", "GIF"}
    assert {"RGB", "RGBA", "L", "P"} <= set(modes)
    assert set(orientations) - {None}, orientations  # some JPEGs stored sideways
    assert min(min(s) for s in sizes) <= 64 and max(max(s) for s in sizes) >= 250
    assert sum(w != h for w, h in sizes) >= N / 3
    assert len({w / h for w, h in sizes}) >= 8

    statuses = Counter(normalise(r.get("license"), r.get("license_url"))[2] for r in rows)
    assert statuses["ok"] and statuses["missing"] and statuses["unknown"]
    spdx = Counter(normalise(r.get("license"), r.get("license_url"))[0] for r in rows)
    assert {
        "CC0-1.0",
        "CC-BY-4.0",
        "CC-BY-SA-4.0",
        "LicenseRef-PDM-1.0",
        "CC-BY-NC-4.0",
        "LicenseRef-All-Rights-Reserved",
    } <= set(spdx)
    assert len({r.get("license") for r in rows}) >= 12  # many spellings of the same few licences
    assert any(not r.get("license") and r.get("license_url") for r in rows)  # a licence given by its URL only
    assert (
        any("license" not in r for r in rows)
        or any(r.get("license") is None for r in rows)
        or any(r.get("license") == "" and not r.get("license_url") for r in rows)
    )
    creators = [r.get("creator") for r in rows]
    assert any(not c for c in creators) and any(c and not c.isascii() for c in creators)
    assert all(r["title"] and r["source_url"].startswith("https://") for r in rows)
    assert any("/" in r["file_name"] for r in rows)  # some files in sub-folders


def test_through_the_real_ingest_clean_and_license_stages(tmp_path):
    """The collection as the only source of a copy of the project: `python -m stages.ingest|clean|license`."""
    root = copy_repo(tmp_path / "ws")
    write_scenes(root / "data" / "sources" / "scenes", n=N, seed=0)
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))

    def run(*module_and_args: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", *module_and_args], cwd=root, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, (module_and_args, proc.stdout[-2000:], proc.stderr[-4000:])

    # as docs/sources-and-rights.md says
    run("app.cli", "sources", "add", "scenes", "data/sources/scenes", "--kind", "folder")
    sources = yaml.safe_load((root / "params.yaml").read_text())["ingest"]["sources"]
    assert {"name": "scenes", "kind": "folder", "path": "data/sources/scenes"} in sources
    edit_params(root, ingest={"sources": [s for s in sources if s["name"] != "demo"]})  # without the demo
    for stage in ("ingest", "clean", "license"):
        run(f"stages.{stage}")

    data = root / "data"
    raw = pd.read_parquet(data / "raw" / "records.parquet")
    clean = pd.read_parquet(data / "clean" / "records.parquet")
    rejects = pd.read_parquet(data / "clean" / "rejects.parquet")
    train = pd.read_parquet(data / "licensed" / "train.parquet")
    excluded = pd.read_parquet(data / "licensed" / "excluded.parquet")
    assert len(raw) == N and raw["ingest_error"].isna().all()
    assert rejects.empty, rejects[["source_uri", "reason", "detail"]].to_dict("records")  # every file decodes,
    assert len(clean) == N  # none is a duplicate

    layout = json.loads((data / "sources" / "scenes" / "layout.json").read_text(encoding="utf-8"))
    expected = json.loads((data / "sources" / "scenes" / "expected.json").read_text(encoding="utf-8"))
    assert set(expected.values()) == {
        "license_forbids:non_commercial",
        "license_forbids:training",
        "license_missing",
        "license_unknown",
    }
    assert dict(zip(excluded["source_uri"], excluded["reason"])) == expected
    assert set(train["source_uri"]) == {name for name, e in layout.items() if e["expected"] == "train"}
    spdx_of = {
        "CC0-1.0": "CC0-1.0",
        "CC-BY-4.0": "CC-BY-4.0",
        "CC-BY-SA-4.0": "CC-BY-SA-4.0",
        "PDM": "LicenseRef-PDM-1.0",
    }
    for r in train.to_dict("records"):
        assert r["license_spdx"] == spdx_of[layout[r["source_uri"]]["license_category"]], r["source_uri"]

    sizes = {r["source_uri"]: (r["width"], r["height"]) for r in clean.to_dict("records")}
    assert sizes == {name: tuple(e["size"]) for name, e in layout.items()}  # upright sizes, EXIF applied
    by_uri = {r["source_uri"]: r for r in raw.to_dict("records")}
    for row in _rows(data / "sources" / "scenes"):
        assert by_uri[row["file_name"]]["caption"] == row["caption"]
    attribution = (data / "licensed" / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert any(c and c in attribution for c in train["creator"] if not c.isascii())
