"""Hostile inputs through the real data stage cores (ingest -> clean -> license) in a temporary folder.

Every file and metadata row below is built by this test. Each one must end either processed correctly or refused
with a specific reason; none may crash a stage or disappear: rows in = clean + rejects, clean = train + excluded.
The tables are written to Parquet on the way, as the stages do (a lone surrogate once crashed that write).

Decisions recorded here: a field longer than ingest.max_field_chars (the 1 MB caption) is refused as
`metadata_malformed`, not cut; a second row naming the same file is `duplicate_exact`; bytes that are not UTF-8 refuse
their row (never silently replaced); a `noai` value that is not an explicit no opts the work out (fail closed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from atelier import dvc, paths
from atelier.config import FolderSourceParams as SourceParams
from atelier.config import IngestParams, load_params
from atelier.io import atomic_dir, write_parquet
from atelier.rawstore import read_bytes, read_pack
from stages.clean import clean_records
from stages.ingest import RAW_COLUMNS, ingest_source
from stages.license import attribution_markdown, license_records, read_opt_outs, summarise
from tests.conftest import copy_repo, edit_params

MAX_FILE_BYTES = IngestParams.model_fields["max_file_bytes"].default

PARAMS = load_params()  # the project's real clean limits (max_pixels 40M) and license policy


# ---- builders: every hostile file is made here, byte by byte where Pillow would refuse to write it --------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))


def png_bomb(side: int = 30000) -> bytes:
    """A real 1-bit PNG of side x side pixels (900 Mpx, ~112 MB of pixel data) in ~110 KB of zlib."""
    row = b"\x00" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row * 1000) for _ in range(side // 1000)) + z.flush()
    return _png_header(side, side, 1, 0) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def ztxt_bomb() -> bytes:
    """A small valid PNG carrying a zTXt metadata chunk that inflates to 20 MB."""
    good = encode(noise(90), "PNG")
    text = _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * (20 << 20), 9))
    return good[:33] + text + good[33:]  # right after IHDR


def noise(seed: int, size: int = 64) -> Image.Image:
    """A distinct picture per seed (perceptual hashes of noise are far apart: no accidental near duplicates)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def sixteen_bit(seed: int) -> bytes:
    values = np.random.default_rng(seed).integers(0, 65536, (64, 64), dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    return encode(img, "PNG")


def palette_with_transparency(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 16, (64, 64), dtype=np.uint8), "P")
    img.putpalette(rng.integers(0, 256, 48, dtype=np.uint8).tobytes())
    return encode(img, "PNG", transparency=0)


def jpeg_with_orientation(seed: int, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(noise(seed), "JPEG", exif=exif.tobytes())


def animated(fmt: str, seeds: tuple[int, int]) -> bytes:
    first, second = (noise(s) for s in seeds)
    return encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)


# ---- the corpus ---------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    row: dict | bytes | None  # a metadata row (written as JSON), the raw bytes of the line, or None (CSV_TEXT has it)
    expect: str  # the reject reason, the exclusion reason, or "allowed:<SPDX>"
    detail: str = ""  # text the reject's detail must contain (case-insensitive)


FILES: dict[str, bytes] = {}


def image(name: str, data: bytes) -> str:
    FILES[name] = data
    return name


def row(file_name: str, license: str = "CC0-1.0", **fields) -> dict:
    return {
        "file_name": file_name,
        "title": f"Work {file_name}",
        "creator": f"Creator {file_name[:12]}",
        "caption": "an abstract composition",
        "license": license,
        "source_url": "https://example.org/w",
        **fields,
    }


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


JSONL_CASES = [
    # decompression bombs and lying headers
    Case(
        "PNG bomb: 30000x30000, real compressed data",
        row(image("bomb.png", png_bomb())),
        "decompression_bomb",
        "900000000 pixels",
    ),
    Case(
        "real image above clean.max_pixels (6400x6400)",
        row(image("huge.png", encode(Image.new("1", (6400, 6400)), "PNG"))),
        "decompression_bomb",
        "max_pixels",
    ),
    Case(
        "header claims 30000x30000, no data",
        row(image("claims.png", _png_header(30000, 30000) + _chunk(b"IEND", b""))),
        "decompression_bomb",
    ),
    Case(
        "header claims 4000x4000, no data",
        row(image("empty_idat.png", _png_header(4000, 4000) + _chunk(b"IEND", b""))),
        "undecodable",
        "corrupt",
    ),
    Case(
        "zTXt metadata bomb (20 MB of text)",
        row(image("ztxt.png", ztxt_bomb())),
        "decompression_bomb",
        "metadata chunk",
    ),
    # broken and disguised files
    Case("truncated PNG", row(image("half.png", _truncated(encode(noise(1), "PNG")))), "undecodable"),
    Case(
        "truncated JPEG",
        row(image("half.jpg", _truncated(encode(noise(2), "JPEG", quality=95)))),
        "undecodable",
        "truncated",
    ),
    Case("ZIP named .png", row(image("archive.png", b"PK\x03\x04" + bytes(200))), "unsupported_format", "ZIP"),
    Case(
        "HTML named .jpg",
        row(image("page.jpg", b"<!DOCTYPE html><html><script>alert(1)</script></html>")),
        "unsupported_format",
        "HTML",
    ),
    Case(
        "SVG file",
        row(
            image(
                "drawing.svg",
                b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
                b'width="64" height="64"><script>alert(1)</script></svg>',
            )
        ),
        "unsupported_format",
        "SVG",
    ),
    Case(
        "EPS named .png (Pillow would run Ghostscript)",
        row(image("post.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n")),
        "unsupported_format",
        "PostScript",
    ),
    Case(
        "ICO (a format Pillow reads, not accepted)",
        row(image("icon.ico", encode(noise(3), "ICO"))),
        "unsupported_format",
        "ICO",
    ),
    Case("zero-byte file", row(image("zero.png", b"")), "empty_file"),
    Case("8x8 image", row(image("tiny.png", encode(noise(4, 8), "PNG"))), "too_small"),
    # odd but valid images: processed
    Case("CMYK JPEG", row(image("cmyk.jpg", encode(noise(10).convert("CMYK"), "JPEG", quality=95))), "allowed:CC0-1.0"),
    Case("16-bit PNG (I;16)", row(image("sixteen.png", sixteen_bit(11))), "allowed:CC0-1.0"),
    Case("palette PNG with transparency", row(image("palette.png", palette_with_transparency(12))), "allowed:CC0-1.0"),
    Case("animated GIF (first frame used)", row(image("anim.gif", animated("GIF", (13, 14)))), "allowed:CC0-1.0"),
    Case("animated WebP (first frame used)", row(image("anim.webp", animated("WEBP", (15, 16)))), "allowed:CC0-1.0"),
    Case("PNG named .jpg", row(image("really_png.jpg", encode(noise(17), "PNG"))), "allowed:CC0-1.0"),
    Case(
        "EXIF orientation 60000 (nonsense)", row(image("exif.jpg", jpeg_with_orientation(18, 60000))), "allowed:CC0-1.0"
    ),
    # file system tricks (made in make_specials)
    Case("file_name is a folder", row("a_folder.png"), "file_unreadable", "folder"),
    Case("broken symlink", row("broken_link.png"), "file_missing", "link to nothing"),
    Case("symlink loop", row("loop_a.png"), "file_unreadable", "loop"),
    Case("symlink to a file outside the source", row("escape_link.png"), "path_outside_source"),
    Case("named pipe (reading would hang)", row("pipe.png"), "file_unreadable", "not a regular file"),
    Case("sparse file over ingest.max_file_bytes", row("sparse.png"), "file_too_large"),
    Case("file_name of 300 characters", row("n" * 300 + ".png"), "file_unreadable", "too long"),
    Case("absolute file_name", row("/etc/passwd"), "path_outside_source"),
    # metadata
    Case("NUL byte in file_name", row("nul\u0000.png"), "metadata_malformed", "NUL"),
    Case(
        "NUL bytes in title and caption (dropped)",
        row(image("nul_text.png", encode(noise(20), "PNG")), title="Ti\u0000tle", caption="a\u0000b"),
        "allowed:CC0-1.0",
    ),
    Case(
        "1 MB caption",
        row(image("long_caption.png", encode(noise(21), "PNG")), caption="x" * (1 << 20)),
        "metadata_malformed",
        "caption",
    ),
    Case(
        "CSV injection in title",
        row(
            image("formula.png", encode(noise(22), "PNG")),
            license="CC-BY-4.0",
            title='=HYPERLINK("http://x","y")',
            creator="@SUM(1+1)",
        ),
        "allowed:CC-BY-4.0",
    ),
    Case(
        "HTML and <script> in title and caption",
        row(
            image("script.png", encode(noise(23), "PNG")),
            license="CC-BY-4.0",
            title="<script>alert('t')</script><img src=x onerror=alert(1)>",
            caption="<b>bold</b><script>alert('c')</script>",
        ),
        "allowed:CC-BY-4.0",
    ),
    Case(
        "Markdown link, pipes and newlines in title",
        row(
            image("md.png", encode(noise(24), "PNG")),
            license="CC-BY-4.0",
            title="[click](javascript:alert(1)) | x\n| y",
            creator="Ren\u202eé",
        ),
        "allowed:CC-BY-4.0",
    ),
    Case(
        "U+2028 and NEL inside a caption (not line breaks in JSON Lines)",
        json.dumps(
            row(image("sep.png", encode(noise(25), "PNG")), caption="one\u2028two\x85three"), ensure_ascii=False
        ).encode(),
        "allowed:CC0-1.0",
    ),
    Case("duplicate file_name: first row", row(image("dup.png", encode(noise(26), "PNG"))), "allowed:CC0-1.0"),
    Case("duplicate file_name: second row", row("dup.png", title="Same file again"), "duplicate_exact", "dup.png"),
    Case(
        "latin-1 bytes in a row",
        '{"file_name": "latin.png", "creator": "Ren\u00e9"}'.encode("latin-1"),
        "metadata_malformed",
        "UTF-8",
    ),
    Case(
        "JSON escape of a lone surrogate",
        b'{"file_name": "s.png", "title": "\\ud800"}',
        "metadata_malformed",
        "surrogate",
    ),
    Case("JSON nested 100000 deep", b"[" * 100000 + b"]" * 100000, "metadata_malformed", "nested"),
    Case(
        "JSON integer of 5000 digits",
        b'{"file_name": "i.png", "title": ' + b"9" * 5000 + b"}",
        "metadata_malformed",
        "digits",
    ),
    Case(
        "title is a JSON object",
        row(image("obj.png", encode(noise(27), "PNG")), title={"a": 1}),
        "metadata_malformed",
        "object",
    ),
    Case("not JSON at all", b'{"file_name": "x.png", "title": ', "metadata_malformed", "not valid JSON"),
    # licenses and flags
    Case(
        "license 'CC-BY-4.0 OR MIT'",
        row(image("or.png", encode(noise(30), "PNG")), license="CC-BY-4.0 OR MIT"),
        "allowed:CC-BY-4.0",
    ),
    Case(
        "license 'CC-BY-4.0 AND CC-BY-NC-4.0'",
        row(image("and.png", encode(noise(31), "PNG")), license="CC-BY-4.0 AND CC-BY-NC-4.0"),
        "license_forbids:non_commercial",
    ),
    Case(
        "license ' cc by 4.0 '",
        row(image("spaced.png", encode(noise(32), "PNG")), license=" cc by 4.0 "),
        "allowed:CC-BY-4.0",
    ),
    Case(
        "license '(CC0-1.0 OR MIT) AND All-Rights-Reserved'",
        row(
            image("paren.png", encode(noise(33), "PNG")), license="(CC0-1.0 OR MIT) AND LicenseRef-All-Rights-Reserved"
        ),
        "license_forbids:training",
    ),
    Case(
        "license text that merely mentions a CC URL",
        row(
            image("mention.png", encode(noise(34), "PNG")),
            license="All rights reserved; we do NOT grant https://creativecommons.org/licenses/by/4.0",
        ),
        "license_unknown",
    ),
    Case(
        "license 'MIT)' (unbalanced)",
        row(image("unbalanced.png", encode(noise(35), "PNG")), license="MIT)"),
        "license_unknown",
    ),
    Case(
        "license 'cc-by-nc-4.0' in odd case",
        row(image("case.png", encode(noise(36), "PNG")), license="Cc-By-Nc-4.0"),
        "license_forbids:non_commercial",
    ),
    Case(
        "noai 'noai, noimageai'",
        row(image("robots.png", encode(noise(37), "PNG")), noai="noai, noimageai"),
        "opted_out:noai_flag",
    ),
    Case(
        "noai 'maybe' (fails closed)",
        row(image("maybe.png", encode(noise(38), "PNG")), noai="maybe"),
        "opted_out:noai_flag",
    ),
    Case("noai 'false'", row(image("noai_false.png", encode(noise(39), "PNG")), noai="false"), "allowed:CC0-1.0"),
]

CSV_TEXT = (
    "\ufefffile_name,title,creator,caption,license\n"
    "csv_ok.png,Ti\x00tle,Ann,a grid,CC0-1.0\n"
    'csv_formula.png,"=1+2","+cmd|\' /C calc\'!A0",x,CC-BY-4.0\n'
    'csv_wide.png,T,Ann,"' + "y" * 200_000 + '",CC0-1.0\n'
    "csv_short.png,only three fields\n"
)
CSV_LATIN1_ROW = "csv_latin.png,Caf\u00e9,x,y,CC0-1.0\n".encode("latin-1")  # é as the single byte 0xE9
CSV_CASES = [  # the CSV source's rows, in file order (line numbers 2..)
    Case("CSV with BOM; NUL in a title", None, "allowed:CC0-1.0"),
    Case("CSV injection in title and creator (CSV)", None, "allowed:CC-BY-4.0"),
    Case("CSV field of 200000 characters", None, "metadata_malformed", "field larger than field limit"),
    Case("CSV row with the wrong number of fields", None, "metadata_malformed", "fields"),
    Case("CSV row in latin-1", None, "metadata_malformed", "UTF-8"),
]


def make_specials(folder: Path) -> None:
    (folder / "a_folder.png").mkdir()
    os.symlink("nowhere.png", folder / "broken_link.png")
    os.symlink("loop_b.png", folder / "loop_a.png")
    os.symlink("loop_a.png", folder / "loop_b.png")
    os.symlink("/etc/hostname", folder / "escape_link.png")
    os.mkfifo(folder / "pipe.png")
    with open(folder / "sparse.png", "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """Build both sources, run ingest -> clean -> license exactly as the stages' main() do, minus params files."""
    tmp = tmp_path_factory.mktemp("hostile")
    jsonl, csv_src = tmp / "jsonl", tmp / "csv"
    jsonl.mkdir()
    csv_src.mkdir()
    for name, data in FILES.items():
        (jsonl / name).write_bytes(data)
    make_specials(jsonl)
    lines = [c.row if isinstance(c.row, bytes) else json.dumps(c.row).encode() for c in JSONL_CASES]
    (jsonl / "metadata.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")  # with a UTF-8 BOM
    for i, name in enumerate(["csv_ok.png", "csv_formula.png", "csv_wide.png", "csv_short.png"]):
        (csv_src / name).write_bytes(encode(noise(50 + i), "PNG"))
    (csv_src / "metadata.csv").write_bytes(CSV_TEXT.encode("utf-8") + CSV_LATIN1_ROW)

    raw_images = tmp / "raw_images"
    records = ingest_source(SourceParams(name="jsonl", kind="folder", path=str(jsonl)), raw_images) + ingest_source(
        SourceParams(name="csv", kind="folder", path=str(csv_src)), raw_images
    )
    raw = _round_trip(tmp / "raw.parquet", pd.DataFrame(records, columns=RAW_COLUMNS))
    saved: dict[str, Image.Image] = {}
    clean, rejects = clean_records(raw, load_bytes=read_bytes, p=PARAMS.clean, on_image=saved.__setitem__)
    clean = _round_trip(tmp / "clean.parquet", clean)
    rejects = _round_trip(tmp / "rejects.parquet", rejects)
    train, excluded = license_records(clean, PARAMS.license.policy, read_opt_outs(paths.OPT_OUT))
    train = _round_trip(tmp / "train.parquet", train)
    excluded = _round_trip(tmp / "excluded.parquet", excluded)
    outcome = {}
    for frame in (rejects, excluded):
        for r in frame.to_dict("records"):
            outcome[(r["source"], r["row"])] = r
    for r in train.to_dict("records"):
        outcome[(r["source"], r["row"])] = r
    return {
        "raw": raw,
        "clean": clean,
        "rejects": rejects,
        "train": train,
        "excluded": excluded,
        "outcome": outcome,
        "saved": saved,
        "attribution": attribution_markdown(train),
        "raw_images": raw_images,
    }


def _round_trip(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    write_parquet(path, frame)
    return pd.read_parquet(path)


ALL = [("jsonl", n, c) for n, c in enumerate(JSONL_CASES, start=1)] + [
    ("csv", n, c) for n, c in enumerate(CSV_CASES, start=2)
]


@pytest.mark.parametrize("source,line,case", ALL, ids=[c.name for _, _, c in ALL])
def test_each_hostile_input_ends_with_a_specific_outcome(run, source, line, case):
    r = run["outcome"].get((source, line))
    assert r is not None, f"{case.name}: line {line} of {source} disappeared"
    got = r.get("reason")
    assert got == case.expect, f"{case.name}: expected {case.expect}, got {got} ({r.get('detail')})"
    if case.detail:
        assert case.detail.lower() in str(r["detail"]).lower(), (case.name, r["detail"])
    if str(r.get("detail")) not in ("None", "nan"):
        assert "object at 0x" not in r["detail"] and r["detail"].strip(), (case.name, r["detail"])


def test_nothing_disappears_and_counts_add_up(run):
    raw, clean, rejects, train, excluded = (run[k] for k in ("raw", "clean", "rejects", "train", "excluded"))
    assert len(raw) == len(ALL)
    assert len(raw) == len(clean) + len(rejects)
    assert len(clean) == len(train) + len(excluded)
    assert set(run["outcome"]) == {(s, n) for s, n, _ in ALL}
    assert train["record_id"].is_unique and clean["record_id"].is_unique
    assert not rejects["reason"].isna().any() and not rejects["reason"].eq("").any()


def test_processed_images_are_normalised(run):
    res = PARAMS.clean.resolution
    by_uri = {r["source_uri"]: r for r in run["clean"].to_dict("records")}
    for r in by_uri.values():
        img = run["saved"][r["record_id"]]
        assert img.mode == "RGB" and img.size == (res, res) and not img.info
    assert by_uri["really_png.jpg"]["format"] == "PNG"  # the content decides, not the name
    assert by_uri["cmyk.jpg"]["format"] == "JPEG" and by_uri["sixteen.png"]["format"] == "PNG"
    for name, fmt, seeds in (("anim.gif", "GIF", (13, 14)), ("anim.webp", "WEBP", (15, 16))):
        h = imagehash.hex_to_hash(by_uri[name]["phash"])
        first, second = (imagehash.phash(Image.open(io.BytesIO(encode(noise(s), fmt))).convert("RGB")) for s in seeds)
        assert h - first <= 8 < h - second, f"{name}: the first frame is the artwork"


def test_metadata_text_is_kept_but_made_harmless(run):
    by_uri = {r["source_uri"]: r for r in run["clean"].to_dict("records")}
    assert by_uri["nul_text.png"]["title"] == "Title" and by_uri["nul_text.png"]["caption"] == "ab"
    assert by_uri["sep.png"]["caption"] == "one\u2028two\x85three"
    assert by_uri["csv_ok.png"]["title"] == "Title"
    md = run["attribution"]
    table = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == len(run["train"][run["train"]["requires_attribution"]])
    for line in table:  # one row per work: exactly five unescaped pipes, no HTML, no links, no formulas
        assert len(re.findall(r"(?<!\\)\|", line)) == 5, line
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert not any(c[:1] in ("=", "+", "-", "@") for c in cells), line
    assert "<script" not in md and "<img" not in md and "\u202e" not in md
    assert not re.search(r"(?<!\\)\]\(", md), "an unescaped Markdown link"
    assert "'=HYPERLINK" in md and "'@SUM(1+1)" in md and "'=1+2" in md and "'+cmd" in md
    assert "&lt;script&gt;" in md and "\\[click\\]" in md


def test_raw_copies_hold_only_what_was_accepted(run):
    """Refused files (folders, pipes, links, oversize files) were never stored; the raw store holds exactly the
    ingested records' bytes, unmodified (each record id is the sha256 of its stored bytes)."""
    raw = run["raw"]
    stored = {}
    for pack in run["raw_images"].iterdir():
        stored.update(read_pack(pack))
    assert set(stored) == set(raw.loc[raw["ingest_error"].isna(), "record_id"])
    assert all(hashlib.sha256(data).hexdigest() == rid for rid, data in stored.items())
    assert raw.loc[raw["ingest_error"].notna(), "raw_pack"].isna().all()


def test_a_source_where_nothing_may_train_still_gets_its_tables(tmp_path):
    """Every row refused (here: one unparsable line): clean, license, attribution and summary still work, empty."""
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "metadata.jsonl").write_bytes(b"not json\n")
    raw = pd.DataFrame(
        ingest_source(SourceParams(name="n", kind="folder", path=str(folder)), tmp_path / "raw"), columns=RAW_COLUMNS
    )
    clean, rejects = clean_records(raw, load_bytes=lambda r: b"", p=PARAMS.clean)
    train, excluded = license_records(clean, PARAMS.license.policy, read_opt_outs(paths.OPT_OUT))
    assert (len(raw), len(clean), len(rejects), len(train)) == (1, 0, 1, 0)
    assert "0 works by 0 creators" in attribution_markdown(train)
    assert summarise(train, excluded, PARAMS.license.policy)["train_records"] == 0


# ---- faults: a stage killed part way (SIGKILL: no cleanup handlers run) -----------------------------------------


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = _dead_pid()
    target = tmp_path / "clean"
    (tmp_path / f".clean.{dead}.abc123").mkdir()  # left by a killed atomic_dir
    (tmp_path / f".clean.{dead}.abc123" / "x.png").write_bytes(b"half")
    (tmp_path / f".records.parquet.{dead}.k9.tmp").write_bytes(b"PAR1 half")  # left by a killed write_parquet
    live = tmp_path / f".clean.{os.getpid()}.live"  # a writer still at work
    live.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "done").write_text("complete")
    write_parquet(tmp_path / "records.parquet", pd.DataFrame({"a": [1]}))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["clean", live.name, "records.parquet"]), left
    assert (target / "done").read_text() == "complete"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _stage(root: Path, name: str) -> subprocess.Popen:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.Popen(
        [sys.executable, "-m", f"stages.{name}"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _run_and_kill(root: Path, stage: str, when) -> str:
    """Start `python -m stages.<stage>`, SIGKILL it once `when(start_time)` holds (or it ends first); say how it
    ended."""
    start = time.time()
    proc = _stage(root, stage)
    while proc.poll() is None and not when(start) and time.time() - start < 300:
        time.sleep(0.01)
    if proc.poll() is not None:
        return f"finished (exit {proc.returncode})"
    proc.kill()
    proc.wait()
    return "killed"


def _after(seconds: float):
    return lambda start: time.time() - start >= seconds


def _written(data: Path, pattern: str, at_least: int = 1):
    """True once `at_least` files matching `pattern` were written under data/ (outside raw/ and sources/) since the
    run started, wherever the stage keeps them (temporary folders included): no knowledge of its internals."""
    return lambda start: _count_new(data, pattern, start) >= at_least


def _count_new(data: Path, pattern: str, start: float) -> int:
    for _ in range(10):  # a temporary folder renamed away while rglob walks it: look again
        try:
            return _count_new_once(data, pattern, start)
        except FileNotFoundError:
            continue
    return 0


def _count_new_once(data: Path, pattern: str, start: float) -> int:
    found = 0
    for path in data.rglob(pattern):
        if path.relative_to(data).parts[0] in ("raw", "sources"):
            continue
        try:
            found += path.stat().st_mtime >= start
        except FileNotFoundError:  # renamed away while we looked
            pass
    return found


def _clean_outputs(root: Path) -> dict:
    clean = root / "data" / "clean"
    return {
        "records": pd.read_parquet(clean / "records.parquet"),
        "rejects": pd.read_parquet(clean / "rejects.parquet"),
        "images": {
            rid: hashlib.sha256(png).hexdigest()
            for p in (clean / "packs").iterdir()
            for rid, png in read_pack(p).items()
        },
    }


def _same(a: dict, b: dict) -> bool:
    return a["records"].equals(b["records"]) and a["rejects"].equals(b["rejects"]) and a["images"] == b["images"]


def _generation(root: Path, references: dict[str, dict]) -> str:
    """Which complete run data/clean is (images and both tables from the same one), or 'absent'; fail on a mixture."""
    clean = root / "data" / "clean"
    if not clean.exists():
        return "absent"
    hidden = [str(p.relative_to(clean)) for p in clean.rglob(".*")]
    assert not hidden, f"temporaries inside data/clean: {hidden}"
    got = _clean_outputs(root)
    matches = [name for name, ref in references.items() if _same(got, ref)]
    assert matches, (
        f"data/clean is no complete run: {len(got['records'])} records, {len(got['images'])} images; "
        f"runs: {[(n, len(r['records']), len(r['images'])) for n, r in references.items()]}"
    )
    return matches[0]


@pytest.mark.slow
def test_data_stages_survive_sigkill_at_any_point(workspace, tmp_path):
    """Kill clean (and ingest) at random times and mid-write. data/clean is always absent or one complete run (never
    new images beside old tables), leftovers of killed runs are cleared, and the next DVC run equals an uninterrupted
    one.

    Two parameter settings make two distinguishable runs: A (near_duplicate_hamming 4) and B (0: near duplicates kept),
    so a mixture of an old and a new run cannot pass for either."""
    reference_root = copy_repo(tmp_path / "reference")
    # small chunks: clean writes several image packs, so a kill can land between them (the packs' names, and so
    # clean_path, depend on the chunking: the reference uses the same)
    edit_params(reference_root, demo={"per_class": 2}, engine={"chunk_size": 16})
    edit_params(workspace, engine={"chunk_size": 16})
    dvc.repro("clean", root=reference_root)
    references = {"A": _clean_outputs(reference_root)}
    edit_params(reference_root, clean={"near_duplicate_hamming": 0})
    dvc.repro("clean", root=reference_root)
    references["B"] = _clean_outputs(reference_root)
    assert len(references["B"]["records"]) > len(references["A"]["records"])

    dvc.repro("ingest", root=workspace)
    data = workspace / "data"
    rng = random.Random(20261123)
    random_points = [rng.uniform(0.9, 2.0)]
    plan = [
        ("A", "after 0.3 s", _after(0.3)),
        ("A", "after 0.8 s", _after(0.8)),
        ("A", "with an image pack written", _written(data, "packs/*.parquet", 1)),
        ("A", "never (runs to the end)", lambda start: False),
        # from here on a complete run A exists and the params say B: a killed run must leave A whole, or B
        ("B", "with an image pack written over run A", _written(data, "packs/*.parquet", 1)),
        ("B", "once a records table is being written", _written(data, "*records.parquet*")),
        *(("B", f"after {s:.2f} s", _after(s)) for s in random_points),
    ]
    log = []
    for params, label, when in plan:
        if params == "B":
            edit_params(workspace, clean={"near_duplicate_hamming": 0})
        ended = _run_and_kill(workspace, "clean", when)
        if label.startswith("never"):
            assert ended == "finished (exit 0)", ended  # run A is complete: what follows is checked against it
        log.append(f"clean ({params}) {label}: {ended}; data/clean: {_generation(workspace, references)}")

    twins = [_stage(workspace, "clean") for _ in range(2)]  # two runs at once, without the pipeline's lock
    codes = sorted(t.wait(timeout=600) for t in twins)
    assert codes[0] == 0, codes
    log.append(f"two clean runs at once: exit codes {codes}; data/clean: {_generation(workspace, references)}")

    raw = data / "raw"
    shutil.rmtree(raw)
    ended = _run_and_kill(workspace, "ingest", lambda start: len(list((raw / "packs").glob("*.parquet"))) >= 1)
    records = raw / "records.parquet"
    reference_raw = pd.read_parquet(reference_root / "data" / "raw" / "records.parquet")
    assert not records.exists() or pd.read_parquet(records).equals(reference_raw)
    for path in (raw / "packs").iterdir():  # every visible pack is whole: each record id is its bytes' sha256
        if not path.name.startswith("."):
            assert all(hashlib.sha256(b).hexdigest() == rid for rid, b in read_pack(path).items()), path.name
    log.append(
        f"ingest with a pack written: {ended}; records.parquet {'present' if records.exists() else 'absent'}; "
        "every visible pack whole"
    )

    out = dvc.repro("clean", root=workspace)
    assert "Running stage 'clean'" in out  # ingest too, or DVC restores data/raw from its cache
    assert _generation(workspace, references) == "B"
    assert pd.read_parquet(records).equals(reference_raw)
    leftovers = [str(p.relative_to(data)) for p in data.rglob(".*") if "sources" not in p.parts]
    assert not leftovers, f"leftovers of killed runs: {leftovers}"
    print("\n".join(log))
