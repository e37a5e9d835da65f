"""A pretrained open_clip checkpoint, built here (tiny, random, no download): loaded as a .safetensors file beside its
config or as a local-dir: bundle, refused when it does not fit clean.resolution or its own config (naming the keys),
and, once, through `dvc repro` to signed artworks whose manifests name it with its digest and licence. On that
build, the registry's side of the pipeline: a version the gate refuses, a champion moved by hand and back in the
registry, and a takedown whose next run retrains without the creator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
import yaml
from safetensors.torch import save_file

from atelier import dvc
from atelier.hashing import file_sha256
from atelier.models import clip as C
from tests.e2e import atelier, in_workspace
from tests.toy import GATE_OPEN
from tests.workspace import edit_params

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]  # a normalisation unlike Atelier's own, to see it carried
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def tiny_config(image_size: int = 32) -> dict:
    """An open_clip model_cfg small enough to build in a test."""
    return {
        "embed_dim": 16,
        "vision_cfg": {"image_size": image_size, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


def tiny_clip_checkpoint(folder: Path, image_size: int = 32, seed: int = 0) -> Path:
    """A randomly initialised tiny open_clip CLIP saved as folder/tiny-clip.safetensors with open_clip_config.json
    beside it (open_clip's local-dir layout, with a file name of its own); return the checkpoint's path."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = tiny_config(image_size)
    model = open_clip.CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "tiny-clip.safetensors"))
    (folder / C.CONFIG_NAME).write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": {"size": image_size, "mean": OPENAI_MEAN, "std": OPENAI_STD}}),
        encoding="utf-8",
    )
    return folder / "tiny-clip.safetensors"


def test_a_safetensors_checkpoint_and_a_local_dir_bundle_load_with_their_own_config_and_tokenizer(tmp_path):
    ckpt = tiny_clip_checkpoint(tmp_path / "ckpt")
    model, tokenizer = C.load_clip(ckpt, resolution=32)
    assert C.image_size(model) == 32 and model.visual.image_mean == OPENAI_MEAN
    bundled = open_clip.tokenizer.SimpleTokenizer(context_length=32)
    assert torch.equal(tokenizer(["a red boat"]), bundled(["a red boat"]))
    images = torch.rand(2, 3, 32, 32)
    want = model.encode_image(
        (images - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1),
        normalize=True,
    )
    assert torch.allclose(C.encode_images(model, images), want, atol=1e-6)  # its own normalisation, not Atelier's
    # saved as Atelier's bundle: the checkpoint's config and normalisation, the same tensors; and loaded back as one
    C.save_clip_bundle(model, C.clip_config(ckpt), tmp_path / "bundle")
    saved = json.loads((tmp_path / "bundle" / C.CONFIG_NAME).read_text())
    assert saved["model_cfg"] == tiny_config() and saved["preprocess_cfg"]["mean"] == OPENAI_MEAN
    again, _ = C.load_clip(f"local-dir:{tmp_path / 'bundle'}", resolution=32)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    assert torch.allclose(C.encode_images(again, images), want, atol=1e-6)


def test_a_checkpoint_made_for_another_resolution_is_refused_naming_the_key(tmp_path):
    ckpt = tiny_clip_checkpoint(tmp_path / "ckpt", image_size=64)
    with pytest.raises(
        ValueError,
        match=r"vision_cfg\.image_size in .*open_clip_config\.json is 64 but "
        r"clean\.resolution in params\.yaml is 32",
    ):
        C.load_clip(ckpt, resolution=32)


def test_tensors_that_do_not_fit_the_config_are_refused_naming_the_keys_and_shapes(tmp_path):
    ckpt = tiny_clip_checkpoint(tmp_path / "ckpt", image_size=64)  # tensors for 64 px: 8x8 patches + 1 = 65 positions
    config = json.loads((ckpt.parent / C.CONFIG_NAME).read_text())
    config["model_cfg"]["vision_cfg"]["image_size"] = 32  # a config for 32 px: 4x4 + 1 = 17 positions
    (ckpt.parent / C.CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"visual\.positional_embedding: checkpoint \(65, 32\) vs config \(17, 32\)"):
        C.load_clip(ckpt, resolution=32)
    config["model_cfg"]["vision_cfg"]["image_size"] = 64
    config["model_cfg"]["text_cfg"]["layers"] = 2
    (ckpt.parent / C.CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"transformer\.resblocks\.1\.\S+: in the config's model, not in the check"):
        C.load_clip(ckpt)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda cfg: cfg["text_cfg"].update(hf_tokenizer_name="some-org/tokenizer"), "Hugging Face tokenizer"),
        (lambda cfg: cfg["text_cfg"].update(hf_model_name="some-org/text"), "hf_model_name"),
        (lambda cfg: cfg["text_cfg"].update(vocab_size=1000), "vocab_size 1000"),
    ],
)
def test_what_would_need_the_network_or_another_tokenizer_is_refused(tmp_path, edit, message):
    ckpt = tiny_clip_checkpoint(tmp_path / "ckpt")
    config = json.loads((ckpt.parent / C.CONFIG_NAME).read_text())
    edit(config["model_cfg"])
    (ckpt.parent / C.CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        C.load_clip(ckpt)


def test_hub_names_pickles_and_missing_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        C.load_clip("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    ckpt = tiny_clip_checkpoint(tmp_path / "ckpt")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / C.CONFIG_NAME).write_text((ckpt.parent / C.CONFIG_NAME).read_text())
    (tmp_path / "pickled" / "open_clip_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match=r"only safetensors weights are loaded"):
        C.load_clip(f"local-dir:{tmp_path / 'pickled'}")
    (ckpt.parent / C.CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="needs its open_clip config open_clip_config.json"):
        C.load_clip(ckpt)


# --- once through the real pipeline (slow) --------------------------------------------------------------------------

CHECKPOINT = "pretrained/tiny-clip/tiny-clip.safetensors"  # relative to the workspace root, as a user writes it
CLIP_COMPONENT = {
    "name": "tiny-clip-test",
    "role": "clip",
    "path": CHECKPOINT,
    "license": "MIT",
    "training_data": "nothing known: random initialisation, built by the tests",
    "training_data_licensed": None,
}
TOY = dict(
    demo={"per_class": 2},
    train_clip={"pretrained": CHECKPOINT},
    train_autoencoder={"steps": 10, "batch_size": 16},
    train_diffusion={"steps": 10, "batch_size": 16, "warmup_steps": 2},
    evaluate={"per_prompt": 2, "sampling_steps": 2, "guidance": [3.0], "headline_guidance": 3.0, "prompts": 8},
    promote=GATE_OPEN,
    generate={"prompts": ["a red grid composition", "a blue spiral composition"], "steps": 2},
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    import subprocess
    import sys

    from atelier import dvc
    from tests.conftest import copy_repo, edit_params

    root = copy_repo(tmp_path_factory.mktemp("pretrained-clip"))
    tiny_clip_checkpoint((root / CHECKPOINT).parent)
    edit_params(root, **TOY)
    data = yaml.safe_load((root / "params.yaml").read_text())
    data["components"] = [CLIP_COMPONENT]
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    dvc.repro("promote", root=root)
    # a random CLIP may leave the model short of the gate's bar: then a person promotes it (recorded as theirs), so
    # that generation and signing are tested whatever the gate decided
    if json.loads((root / "reports/promotion.json").read_text())["decision"] != "promoted to champion":
        forced = subprocess.run(
            [
                sys.executable,
                "-m",
                "app.cli",
                "promote",
                "--version",
                "1",
                "--reason",
                "test: reach generation",
                "--by",
                "tests",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert forced.returncode == 0, forced.stderr
    dvc.repro(root=root)
    return root


@pytest.mark.slow
def test_a_pretrained_clip_reaches_signed_artworks_that_name_it_and_are_not_licensed_only(built):
    from provenance.keys import ensure_signing_identity
    from provenance.png import read_manifest
    from provenance.signing import read_credentials

    digest = file_sha256(built / CHECKPOINT)
    report = json.loads((built / "reports/clip.json").read_text())
    assert report["source"] == "pretrained" and report["pretrained_weights_sha256"] == digest
    assert report["evaluator"] == "same as text encoder (pretrained)" and report["steps"] == 0
    for folder in ("models/clip", "models/diffusion/clip", "models/diffusion/evaluator"):  # its own config, kept
        assert json.loads((built / folder / C.CONFIG_NAME).read_text())["model_cfg"] == tiny_config(), folder
    sidecars = sorted((built / "artworks").glob("*.provenance.json"))
    assert sidecars
    anchor = ensure_signing_identity().ca_pem()
    for sidecar in sidecars:
        manifest = json.loads(sidecar.read_text())
        png = built / "artworks" / manifest["artwork"]["file"]
        assert read_manifest(png) == manifest and read_credentials(png, anchor)["state"] == "Trusted"
        model = manifest["model"]
        declared = [p for p in model["components"] if not p["trained_here"]]
        assert declared == [
            {
                "name": "tiny-clip-test",
                "role": "clip",
                "trained_here": False,
                "weights_sha256": digest,
                "license": "MIT",
                "training_data": CLIP_COMPONENT["training_data"],
                "training_data_licensed": None,
            }
        ]
        trained = [p["name"] for p in model["components"] if p["trained_here"]]
        assert trained == ["atelier-autoencoder", "atelier-unet"]
        assert model["licensed_only"] is False
        assert "clip 'tiny-clip-test'" in model["licensed_only_reason"] and "unknown" in model["licensed_only_reason"]
        assert CHECKPOINT not in sidecar.read_text() and str(built) not in sidecar.read_text()  # no local path
    page = (built / "artworks/index.html").read_text()
    assert page.count('<dd class="licensed-only warn">no') == len(sidecars)
    credential = json.loads((built / "models/registry-cache/v1/model-credential.json").read_text())
    assert {k: credential["payload"]["model"][k] for k in ("components", "licensed_only", "licensed_only_reason")} == {
        k: model[k] for k in ("components", "licensed_only", "licensed_only_reason")
    }  # copied from the credential
    tags = json.loads(
        subprocess_stdout(
            built,
            "import json; from registry.tracking import get_version; print(json."
            "dumps(get_version('atelier-latent-diffusion', '1')['tags']))",
        )
    )
    assert tags["licensed_only"] == "false" and json.loads(tags["components"]) == model["components"]
    champion = json.loads((built / "models/champion.json").read_text())  # what the run summary prints
    assert champion["licensed_only"] is False and champion["licensed_only_reason"] == model["licensed_only_reason"]
    card = (built / "mlartifacts").rglob("MODEL_CARD.md")
    assert any("Licensed only: **no**" in c.read_text() and digest in c.read_text() for c in card)
    audit = subprocess_run(
        built,
        "-m",
        "app.cli",
        "audit",
        "--json",
        *(str(built / "artworks" / json.loads(s.read_text())["artwork"]["file"]) for s in sidecars),
    )
    assert audit.returncode == 0 and all(r["status"] == "verified" for r in json.loads(audit.stdout)), audit.stdout


def subprocess_run(root: Path, *args: str):
    """Python run in the workspace with `args` (its own modules and registry store)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True, timeout=600)


def subprocess_stdout(root: Path, code: str) -> str:
    """The last line of stdout of Python code run in the workspace."""
    proc = subprocess_run(root, "-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


# --- the registry's side, on the same build (the champion is version 1, whoever promoted it) ------------------------


@pytest.mark.slow
def test_failing_version_is_not_promoted_and_champion_moves_by_hand(built):
    edit_params(built, promote={"min_clip_score_fraction": 10.0}, train_diffusion={"seed": 1})
    dvc.repro(root=built)
    promotion = json.loads((built / "reports/promotion.json").read_text())
    assert promotion["candidate_version"] == "2" and promotion["decision"] == "stays challenger"
    assert "min_clip_score_fraction 10.0" in promotion["reason"]
    missed = [c for c in promotion["checks"] if not c["passed"]]
    assert [c["figure"] for c in missed] == ["clip_score"] and missed[0]["missed_by"] > 0
    assert promotion["paired_with_champion"]["champion"] == "1"  # judged against the champion on the same seeds
    assert json.loads((built / "models/champion.json").read_text())["version"] == "1"

    moved = atelier(built, "promote", "--version", "2", "--reason", "reviewed the samples by hand", "--by", "ci")
    assert moved.returncode == 0, moved.stderr
    made = atelier(built, "generate", "a green spiral composition", "--seed", "4", "--steps", "2")
    assert made.returncode == 0, made.stderr
    sidecar = Path(made.stdout.split()[0]).with_suffix(".provenance.json")
    assert json.loads(sidecar.read_text())["model"]["version"] == "2"

    # a person moves the alias back in the registry (as in the MLflow UI): the next run follows the registry
    in_workspace(
        built, "from registry.tracking import set_alias; set_alias('atelier-latent-diffusion', 'champion', '1')"
    )
    dvc.repro(root=built)
    assert json.loads((built / "models/champion.json").read_text())["version"] == "1"


@pytest.mark.slow
def test_takedown_of_a_creator_lists_lineage_and_the_next_run_excludes_them(built):
    import pandas as pd

    counts = pd.read_parquet(built / "data/licensed/train.parquet")["creator"].value_counts()
    creator, works = counts.index[0], int(counts.iloc[0])
    made_before = {
        json.loads(p.read_text())["id"]
        for p in (built / "artworks").glob("*.provenance.json")
        if json.loads(p.read_text())["model"]["version"] == "1"
    }
    result = atelier(built, "takedown", creator, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {v["version"] for v in report["versions"]} == {"1", "2"}
    assert {a["id"] for a in report["artworks"] if a["model_version"] == "1"} == made_before
    assert creator in (built / "policy/opt_out.csv").read_text()

    # until a clean version is promoted there is no champion to generate from: the stage says so and succeeds
    stage = subprocess.run(
        [sys.executable, "-m", "stages.generate"], cwd=built, capture_output=True, text=True, timeout=600
    )
    assert stage.returncode == 0, stage.stderr[-3000:]
    assert "marked by a takedown" in stage.stdout and "no artworks made" in stage.stdout
    assert "Traceback" not in stage.stderr

    edit_params(built, promote={"min_clip_score_fraction": 0.0})
    dvc.repro(root=built)
    train = pd.read_parquet(built / "data/licensed/train.parquet")
    assert creator not in set(train["creator"])
    champion = json.loads((built / "models/champion.json").read_text())
    assert champion["version"] == "3"
    newest = [json.loads(p.read_text()) for p in (built / "artworks").glob("*.provenance.json")]
    newest = [m for m in newest if m["model"]["version"] == "3"]
    assert newest and newest[0]["data"]["excluded_per_reason"]["opted_out:creator"] >= works
