import hashlib
import io
import json

from PIL import Image

from atelier.demo import PALETTES, STYLES, build_demo, write_demo


def test_demo_is_deterministic_and_covers_every_class():
    a_files, a_lines, a_expected = build_demo(seed=3, per_class=2, size=64)
    b_files, b_lines, _ = build_demo(seed=3, per_class=2, size=64)
    digest = lambda files: hashlib.sha256(b"".join(f.data for f in files)).hexdigest()  # noqa: E731
    assert digest(a_files) == digest(b_files) and a_lines == b_lines
    captions = {f.meta["caption"] for f in a_files if f.file_name.startswith("art_")}
    assert len(captions) == len(STYLES) * len(PALETTES) >= 36
    assert len(STYLES) >= 6


def test_demo_plants_every_kind_of_defect():
    _, _, expected = build_demo(seed=3, per_class=2, size=64)
    reasons = set(expected.values())
    for reason in [
        "license_forbids:non_commercial",
        "license_forbids:no_derivatives",
        "license_forbids:training",
        "license_missing",
        "license_unknown",
        "opted_out:creator",
        "opted_out:noai_flag",
        "duplicate_exact",
        "duplicate_near",
        "undecodable",
        "empty_file",
        "too_small",
        "file_missing",
        "path_outside_source",
        "metadata_malformed",
    ]:
        assert reason in reasons, reason


def test_write_demo_writes_images_and_metadata(tmp_path):
    counts = write_demo(tmp_path / "demo", seed=1, per_class=1, size=64)
    lines = (tmp_path / "demo" / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == counts["metadata_rows"]
    first = json.loads(lines[0])
    img = Image.open(io.BytesIO((tmp_path / "demo" / first["file_name"]).read_bytes()))
    assert img.size == (64, 64)
    assert first["caption"].startswith("a ") and first["caption"].endswith(" composition")
