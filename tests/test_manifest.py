import copy
import json

import jsonschema
import pytest
from PIL import Image

from provenance.manifest import build_manifest, usage_terms, validate
from provenance.png import png_with_manifest, read_manifest

SHA = "a" * 64
FACTS = dict(
    artwork={
        "id": SHA[:16],
        "file": f"{SHA[:16]}.png",
        "sha256_pixels": SHA,
        "width": 256,
        "height": 256,
        "model_output_width": 32,
        "model_output_height": 32,
        "resampler": "nearest",
        "phash": "f" * 16,
        "watermark": {"method": "dwtDctSvd", "id": 12345},
        "created_at": "2026-11-23T20:00:00+00:00",
        "generator": {
            "prompt": "a blue spiral composition",
            "negative_prompt": None,
            "seed": 1,
            "steps": 25,
            "scheduler": "DDIM",
            "guidance": 1.5,
        },
    },
    model={
        "name": "m",
        "version": "3",
        "alias": "champion",
        "run_id": "0" * 32,
        "weights_sha256": SHA,
        "backend": "latent-diffusion",
        "credential_sha256": "e" * 64,
    },
    data={
        "dvc_md5": "0123456789abcdef0123456789abcdef",
        "record_count": 10,
        "per_license": {"CC0-1.0": 6, "CC-BY-SA-4.0": 4},
        "excluded_per_reason": {"license_missing": 2},
        "opt_outs_honoured": 1,
        "attribution": {"file": "attribution/m-v3.md", "sha256": SHA, "works": 4, "creators": 2, "embedded": True},
        "dataset_card": {"sha256": SHA, "embedded": True},
    },
    checks={
        "evaluator": "clip",
        "clip_score": 0.8,
        "nearest_training_images": [
            {"record_id": SHA, "title": "T", "creator": "Ann", "license": "CC0-1.0", "source": "u", "similarity": 0.9}
        ],
        "replication": {
            "flagged": False,
            "verdict": "no replication detected",
            "distance_ratio": 0.8,
            "phash_distance": 20,
            "ratio_threshold": 0.333,
            "phash_hamming_threshold": 4,
        },
        "model_evaluation": {"style_accuracy": 0.8},
    },
    code_version="abc123",
)


def test_manifest_from_recorded_facts_is_valid():
    m = build_manifest(**copy.deepcopy(FACTS))
    validate(m)
    assert m["schema"] == "atelier.provenance/2" and m["rights"]["ai_generated"] is True
    terms = m["rights"]["usage_terms"]
    assert terms["commercial_use"] and terms["share_alike"] and terms["attribution_required"]
    assert terms["share_alike_licenses"] == ["CC-BY-SA-4.0"]


def test_non_commercial_training_data_makes_non_commercial_artworks():
    terms = usage_terms({"CC0-1.0": 3, "CC-BY-NC-4.0": 1})
    assert not terms["commercial_use"] and "Non-commercial" in terms["statement"]
    with pytest.raises(ValueError, match="no known terms"):
        usage_terms({"Mystery-1.0": 1})


@pytest.mark.parametrize(
    "path,value",
    [
        (("artwork", "generator", "prompt"), ""),
        (("model", "run_id"), "unknown"),
        (("data", "per_license"), {}),
        (("rights", "ai_generated"), False),
    ],
)
def test_schema_rejects_empty_or_made_up_values(path, value):
    m = build_manifest(**copy.deepcopy(FACTS))
    target = m
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(m)


def test_png_round_trip(tmp_path):
    m = build_manifest(**copy.deepcopy(FACTS))
    path = tmp_path / "a.png"
    path.write_bytes(png_with_manifest(Image.new("RGB", (8, 8), (1, 2, 3)), m))
    assert read_manifest(path) == json.loads(json.dumps(m))
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert read_manifest(tmp_path / "plain.png") is None


PARTS = [
    {
        "name": "atelier-unet",
        "role": "unet",
        "trained_here": True,
        "weights_sha256": SHA,
        "license": None,
        "training_data": "the licensed set",
        "training_data_licensed": True,
    },
    {
        "name": "tiny-clip",
        "role": "clip",
        "trained_here": False,
        "weights_sha256": SHA,
        "license": "MIT",
        "training_data": "web image-text pairs",
        "training_data_licensed": None,
    },
]


def test_components_and_licensed_only_are_optional_and_come_together():
    facts = copy.deepcopy(FACTS)
    facts["model"].update(
        components=PARTS, licensed_only=False, licensed_only_reason="not licensed-only: clip 'tiny-clip' ..."
    )
    validate(build_manifest(**facts))  # with them
    validate(build_manifest(**copy.deepcopy(FACTS)))  # without them (made before components were recorded)
    for drop in ("licensed_only", "licensed_only_reason", "components"):
        broken = build_manifest(**copy.deepcopy(facts))
        del broken["model"][drop]
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)
    for key, value in (("weights_sha256", "not-a-digest"), ("training_data_licensed", "maybe"), ("path", "/tmp/x")):
        broken = build_manifest(**copy.deepcopy(facts))
        broken["model"]["components"][1][key] = value
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)
