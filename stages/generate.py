"""generate stage and `atelier generate`: artworks from the registry's `champion`, each with its provenance manifest.

Every fact in a manifest comes from a record: the registry (name, version, alias, run id, weights digest), the run's
logged license summary and attribution list, dvc.lock / the DVC cache (the training records by md5), the model's
evaluation tags, and checks computed here on the champion's own CLIP.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from atelier import paths
from atelier.config import Params, load_params
from atelier.embedding import embed_records
from atelier.gallery import write_gallery
from atelier.hashing import file_sha256, phash, pixels_sha256, weights_digest
from atelier.io import write_bytes, write_json
from atelier.lineage import training_records
from atelier.models.clip import encode_images, encode_texts, image_size, load_evaluator
from atelier.models.generator import at_size, load_generator
from atelier.models.metrics import clip_score, prompt_ranks, replication
from atelier.rights import OptOuts, prompt_refusal, read_opt_outs
from atelier.version import code_version
from provenance import credentials, ledger, publiclog, signed_json, watermark
from provenance.keys import ensure_signing_identity
from provenance.manifest import build_manifest, replication_verdict
from provenance.png import png_with_manifest
from provenance.signing import Ingredient, artwork_terms, sign_png

RESAMPLERS = {"nearest": Image.NEAREST, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
EVALUATOR = (
    "the champion's evaluator CLIP (evaluator/ in the model folder: trained apart from its text encoder, or "
    "the pretrained CLIP itself when one is declared), "
    "cosine of normalised embeddings"
)
CLIP_SCORE_SCALE = "CLIPScore = 2.5 x max(cosine(artwork, prompt), 0) on the evaluator; range 0-2.5, higher is closer"
SIMILARITY_SCALE = (
    "similarity of the nearest training images: cosine in the generator's CLIP space, -1..1; a high "
    "similarity means alike in content or style, not a copy (see replication)"
)
PROMPT_MATCH_MEANING = (
    "rank of the artwork's own prompt among it and the champion's evaluation prompts, by the "
    "evaluator; rank 1 is a match, anything else is a low prompt match"
)
NEAREST_SHOWN = 3
SEED_STRIDE = 1_000_003  # best-of-K: candidate c of base seed s has seed s + c * SEED_STRIDE
SELECTION_RULE = (
    "best of K: K seeds sampled, the one whose image the evaluator finds closest to the prompt (cosine) kept; the "
    "prompt match and CLIPScore were selected on, so they read higher than one sample's would"
)
DATASET_CARD_ARTIFACT = "cards/croissant.json"  # logged on the training run by registry/tracking.py
CACHE_LAYOUT = 2  # 2: run files keep their folders (evaluation/eval.json); a cache of another layout is fetched again
ATTRIBUTION_EMBED_MAX = 256 * 1024  # a longer attribution list is named by digest in the manifest, not embedded
QUARANTINE = "quarantine"  # artworks held back (possible replications): a subfolder of the artworks folder
GALLERY_PLOTS = [
    paths.REPORTS / "training_loss.png",
    paths.REPORTS / "licenses.png",
    paths.REPORTS / "clipscore.png",
    paths.EVAL_GRID,
]


class PromptRefused(ValueError):
    """The prompt may not be generated (it names a creator who opted out)."""


class NoChampion(LookupError):
    """No registered version holds the champion alias."""


def opted_out_creators(opt_out_csv: Path) -> OptOuts:
    """The opt-out list (creators with their aliases, handles and profile URLs)."""
    return read_opt_outs(opt_out_csv)


def check_prompt(prompt: str, opt_outs: OptOuts) -> None:
    """Refuse a prompt that names an opted-out creator (the rules are atelier/rights.py's prompt_refusal)."""
    if not " ".join(str(prompt).split()):
        raise PromptRefused("the prompt is empty; describe the artwork to generate")
    name = prompt_refusal(prompt, opt_outs)
    if name is not None:
        raise PromptRefused(
            f"prompt refused: it names '{name}', a creator who opted out of AI training "
            f"(listed in {paths.OPT_OUT.relative_to(paths.ROOT)}); remove the name and try again"
        )


@dataclass
class Champion:
    pipeline: object  # LatentDiffusionPipeline or LoraGenerator (atelier/models/generator.py)
    info: dict  # name, version, run_id, tags
    model_dir: Path
    weights_sha256: str
    license_summary: dict
    attribution_path: Path
    train: pd.DataFrame
    train_emb: torch.Tensor
    evaluator: object
    eval_tokenizer: object
    eval_prompts: list[str]  # the evaluation prompt set, for the prompt-match rank
    text_embeddings: dict = field(default_factory=dict)  # prompt -> evaluator text embedding, filled as prompts come
    caption_emb: torch.Tensor | None = None  # the training captions on the evaluator, for the far-prompt warning
    eval_prompt_emb: torch.Tensor | None = None  # the evaluation prompts on the evaluator
    credential: dict | None = None  # the version's signed model credential (provenance/credentials.py)
    dataset_card: bytes | None = None  # the training set's Croissant card, as logged on the run
    embedded: tuple = ()  # ingredients(): the documents every artwork embeds
    alias: str = "champion"  # the version's alias when it makes artworks


def ingredients(champ: Champion) -> tuple[Ingredient, ...]:
    """What every artwork of the champion embeds in its signed manifest: the model credential, the dataset card and
    the attribution list (when it is short enough), each readable by any C2PA reader."""
    name, version = champ.info["name"], champ.info["version"]
    found = [
        Ingredient(
            f"{name} version {version}: model credential",
            "application/json",
            "inputTo",
            "c2pa.types.model.pytorch",
            signed_json.canonical(champ.credential),
            "model-credential.json",
        )
    ]
    if champ.dataset_card is not None:
        found.append(
            Ingredient(
                f"{name} version {version}: training set card (Croissant 1.1)",
                "application/ld+json",
                "inputTo",
                "c2pa.types.dataset",
                champ.dataset_card,
                "croissant.json",
            )
        )
    attribution = champ.attribution_path.read_bytes()
    if len(attribution) <= ATTRIBUTION_EMBED_MAX:
        found.append(
            Ingredient(
                f"{name} version {version}: attribution list",
                "text/markdown",
                "inputTo",
                "c2pa.types.dataset",
                attribution,
                "ATTRIBUTION.md",
            )
        )
    return tuple(found)


def _cached_download(model_name: str, info: dict) -> tuple[Path, Path]:
    """(pipeline folder, run files folder) of a registered version, downloaded once into models/registry-cache/v<N>
    and reused while its weights digest matches the registered one (a version's files never change)."""
    from registry import tracking

    cache = paths.MODELS / "registry-cache" / f"v{info['version']}"
    marker = cache / "cache.json"
    expected = info["tags"].get("weights_sha256")
    if marker.exists():
        known = json.loads(marker.read_text(encoding="utf-8"))
        model_dir = cache / known["pipeline"]
        if (
            known.get("weights_sha256") == expected
            and known.get("layout") == CACHE_LAYOUT
            and model_dir.is_dir()
            and weights_digest(model_dir) == expected
        ):
            return model_dir, cache / "run"
    if cache.exists():
        shutil.rmtree(cache)
    model_dir = tracking.download_pipeline(model_name, info["version"], cache)
    digest = weights_digest(model_dir)
    if digest != expected:
        raise RuntimeError(
            f"{model_name} version {info['version']}: downloaded weights digest {digest} does not match "
            f"the registered {expected}; refusing to generate"
        )
    for name in ("summary.json", "ATTRIBUTION.md", "evaluation/eval.json", DATASET_CARD_ARTIFACT):
        try:
            tracking.download_run_file(info["run_id"], name, cache / "run")
        except Exception as exc:  # noqa: BLE001 (MLflow raises several kinds); eval.json and the card may be absent
            if name not in ("evaluation/eval.json", DATASET_CARD_ARTIFACT):
                raise FileNotFoundError(f"run {info['run_id']} has no artifact {name}: {exc}") from None
    write_json(
        marker, {"pipeline": str(model_dir.relative_to(cache)), "weights_sha256": digest, "layout": CACHE_LAYOUT}
    )
    return model_dir, cache / "run"


def _train_embeddings(model_dir: Path, present: pd.DataFrame, dataset_md5: str) -> torch.Tensor:
    """The champion's training images on its own CLIP, cached beside the model and keyed by the data md5 and the
    records present (the cost that grows with the collection is paid once per version)."""
    from safetensors.torch import load_file, save_file

    key = hashlib.sha256((dataset_md5 + "\n" + "\n".join(present["record_id"])).encode()).hexdigest()
    cached = model_dir.parent / f"train-emb-{key[:16]}.safetensors"
    if cached.exists():
        return load_file(str(cached))["emb"]
    emb = embed_records(model_dir / "clip", present, load_params().engine)
    tmp = cached.with_suffix(".tmp")
    save_file({"emb": emb.contiguous()}, str(tmp))
    tmp.replace(cached)
    return emb


def load_champion(model_name: str) -> Champion:
    """Resolve `models:/<name>@champion`, fetch it (once per version), check its weights digest, and gather its
    recorded facts."""
    from registry import tracking

    info = tracking.version_by_alias(model_name, tracking.CHAMPION)
    if info is None:
        raise NoChampion(
            f"no champion yet: no version of '{model_name}' has passed the promotion gate "
            "(reports/promotion.json says which figure missed and by how much); improve the data or "
            "the training, or promote a version by hand with `atelier promote --version N --reason TEXT`"
        )
    if info["tags"].get("takedown"):
        raise NoChampion(
            f"champion {model_name} version {info['version']} is marked by a takedown "
            f"({info['tags']['takedown']}); run the pipeline to retrain and promote a clean version"
        )
    return load_version(info, "champion")


def load_version(info: dict, alias: str) -> Champion:
    """A registered version (`info` from the registry: name, version, run id, tags), fetched and checked like the
    champion: for the champion, or for a challenger's artworks made for reviewers to compare (`alias` says which)."""
    if info["tags"].get("takedown"):
        raise NoChampion(
            f"{info['name']} version {info['version']} is marked by a takedown "
            f"({info['tags']['takedown']}); it makes no artworks"
        )
    model_name = info["name"]
    model_dir, run_dir = _cached_download(model_name, info)
    digest = info["tags"]["weights_sha256"]
    summary = json.loads((run_dir / "summary.json").read_text())
    attribution = run_dir / "ATTRIBUTION.md"
    eval_file = run_dir / "evaluation" / "eval.json"
    eval_prompts = json.loads(eval_file.read_text())["prompt_set"] if eval_file.exists() else []
    pipeline = load_generator(model_dir)  # either backend; a LoRA model checks its base model's digest
    evaluator, eval_tokenizer = load_evaluator(model_dir)[:2]
    train = training_records(info["tags"]["dataset_md5"])
    present = train[train["clean_path"].map(lambda p: paths.absolute(p).exists())].reset_index(drop=True)
    if present.empty:
        raise FileNotFoundError("none of the champion's training images are in data/clean; run `dvc checkout`")
    train_emb = _train_embeddings(model_dir, present, info["tags"]["dataset_md5"])
    credential = credentials.ensure(
        info, summary, file_sha256(attribution), code_version(), ensure_signing_identity(), run_dir.parent
    )
    card = run_dir / DATASET_CARD_ARTIFACT
    champ = Champion(
        pipeline,
        info,
        model_dir,
        digest,
        summary,
        attribution,
        present,
        train_emb,
        evaluator,
        eval_tokenizer,
        eval_prompts,
        credential=credential,
        dataset_card=card.read_bytes() if card.exists() else None,
        alias=alias,
    )
    champ.embedded = ingredients(champ)
    return champ


def prompt_warnings(champ: Champion, prompt: str) -> list[str]:
    """Warnings to give before generating: a prompt far from every training caption (below the floor the evaluate
    stage measured on held-out captions)."""
    floor = champ.info["tags"].get("eval.prompt_similarity_floor")
    if floor is None:
        return []
    if champ.caption_emb is None:
        captions = sorted({c for c in champ.train["caption"] if isinstance(c, str) and c.strip()})
        champ.caption_emb = encode_texts(champ.evaluator, champ.eval_tokenizer, captions)
    nearest = float((_text_embedding(champ, prompt) @ champ.caption_emb.T).max())
    if nearest >= float(floor):
        return []
    return [
        f"prompt far from the training data: its nearest training caption has cosine {nearest:.2f} on the "
        f"evaluator, below {float(floor):.2f} (what 99% of held-out real captions reach); expect an artwork that "
        "matches the prompt poorly"
    ]


def _text_embedding(champ: Champion, prompt: str) -> torch.Tensor:
    if prompt not in champ.text_embeddings:  # many artworks share a prompt: its embedding is computed once
        champ.text_embeddings[prompt] = encode_texts(champ.evaluator, champ.eval_tokenizer, [prompt])
    return champ.text_embeddings[prompt]


def prompt_match(champ: Champion, img_emb: torch.Tensor, prompt: str) -> dict:
    """Rank of the artwork's own prompt among it and the evaluation prompts (1 = the evaluator's best match)."""
    if champ.eval_prompt_emb is None:
        champ.eval_prompt_emb = (
            encode_texts(champ.evaluator, champ.eval_tokenizer, champ.eval_prompts)
            if champ.eval_prompts
            else torch.empty(0, img_emb.shape[1])
        )
    others = torch.tensor([q != prompt for q in champ.eval_prompts], dtype=torch.bool)
    rows = torch.cat([_text_embedding(champ, prompt), champ.eval_prompt_emb[others]])
    rank = int(prompt_ranks(img_emb, rows, [0])[0])
    return {"rank": rank, "of": len(rows), "low": rank > 1, "meaning": PROMPT_MATCH_MEANING}


def upscale(image: Image.Image, size: int, resampler: str) -> Image.Image:
    """The model's output enlarged to `size` px with a stated resampler."""
    return image.resize((size, size), RESAMPLERS[resampler])


def candidate_seeds(seed: int, candidates: int) -> list[int]:
    """The seeds best-of-K tries for an artwork of base seed `seed`: the seed itself first, then steps of SEED_STRIDE,
    so that the candidates of `--n` consecutive artworks never share a seed."""
    return [seed + c * SEED_STRIDE for c in range(candidates)]


def _evaluator_input(champ: Champion, small: Image.Image) -> torch.Tensor:
    tensor = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    return at_size(tensor, image_size(champ.evaluator))  # a LoRA base's resolution may differ from the CLIPs'


def _best_of(
    champ: Champion, prompt: str, seed: int, steps: int, guidance: float, negative_prompt: str, candidates: int
) -> tuple[Image.Image, torch.Tensor, dict | None]:
    """(the model's output, its evaluator embedding, the selection record or None for one candidate). Each candidate
    is sampled alone, so the kept one has exactly the pixels its seed gives with K = 1."""
    text = _text_embedding(champ, prompt)
    tried = []
    for s in candidate_seeds(seed, candidates):
        small = champ.pipeline([prompt], seed=s, steps=steps, guidance=guidance, negative_prompt=negative_prompt)[0]
        emb = encode_images(champ.evaluator, _evaluator_input(champ, small))  # the evaluator: match and CLIPScore
        tried.append((float((emb @ text.T)[0, 0]), s, small, emb))
    if candidates == 1:
        return tried[0][2], tried[0][3], None
    best = max(range(len(tried)), key=lambda i: tried[i][0])  # ties keep the earliest seed
    return (
        tried[best][2],
        tried[best][3],
        {
            "candidates": candidates,
            "seeds": [t[1] for t in tried],
            "cosines": [round(t[0], 4) for t in tried],
            "chosen_seed": tried[best][1],
            "rule": SELECTION_RULE,
        },
    )


def _training_image(champ: Champion, idx: int, similarity: float) -> dict:
    """One training image as the manifest lists it: record id, title, creator, licence, source, similarity."""
    r = champ.train.iloc[idx]
    return {
        "record_id": r["record_id"],
        "title": r["title"] or r["source_uri"],
        "creator": r["creator"] or "not recorded",
        "license": r["license_spdx"],
        "source": r["source_url"] or r["source_uri"],
        "similarity": round(similarity, 4),
    }


def make_artwork(
    champ: Champion,
    prompt: str,
    seed: int,
    steps: int,
    guidance: float,
    negative_prompt: str,
    out_dir: Path,
    params: Params | None = None,
    conn: sqlite3.Connection | None = None,
    candidates: int = 1,
) -> dict:
    """Generate, check, describe and write one artwork (PNG with embedded manifest + sidecar); return the manifest.
    With `candidates` K > 1, K seeds are sampled and the one the evaluator ranks best for the prompt is kept
    (best-of-K); the seeds tried and their scores go into the manifest's `checks.selection`.

    A caller making many artworks passes `params` and an open ledger `conn` once, instead of one per artwork."""
    params = params or load_params()
    g, e = params.generate, params.evaluate
    small, eval_emb, selection = _best_of(champ, prompt, seed, steps, guidance, negative_prompt, candidates)
    seed = selection["chosen_seed"] if selection else seed
    big = upscale(small, g.output_size, g.resampler)
    img_emb = encode_images(champ.pipeline.clip_model, _evaluator_input(champ, small))  # replication, neighbours
    score = float(clip_score(eval_emb, _text_embedding(champ, prompt))[0])
    match = prompt_match(champ, eval_emb, prompt)
    warnings = prompt_warnings(champ, prompt)
    info, tags = champ.info, champ.info["tags"]
    ratio = float(tags.get("eval.replication_ratio_threshold", e.replication_ratio))  # calibrated by evaluate
    floor = float(tags.get("eval.replication_similarity_floor", -1.0))
    rep = replication(
        img_emb,
        champ.train_emb,
        [phash(small)],
        list(champ.train["phash"]),
        ratio=ratio,
        hamming=e.replication_phash_hamming,
        min_similarity=floor,
    )[0]
    sims = (img_emb @ champ.train_emb.T)[0]
    top = sims.topk(min(NEAREST_SHOWN, len(sims))).indices.tolist()
    nearest = [_training_image(champ, idx, float(sims[idx])) for idx in top]
    own_conn = conn is None
    conn = conn or ledger.open_ledger()
    if rep["flagged"]:  # a possible copy of a training image is never signed, marked or published
        verdict = replication_verdict(rep, ratio, e.replication_phash_hamming)
        flagging = [i for i in (rep["nearest"][0], rep["phash_nearest"]) if i is not None]  # always listed
        own_hash = int(phash(small), 16)
        nearest = [
            _training_image(champ, idx, float(sims[idx]))
            | {"phash_distance": watermark.hamming(own_hash, int(champ.train.iloc[idx]["phash"], 16))}
            for idx in dict.fromkeys(top + flagging)
        ]
        refused = quarantine(
            big,
            {
                "reason": f"not published: {verdict}",
                "prompt": prompt,
                "negative_prompt": negative_prompt or None,
                "seed": seed,
                "steps": steps,
                "guidance": guidance,
                "model": {
                    "name": info["name"],
                    "version": info["version"],
                    "run_id": info["run_id"],
                    "weights_sha256": champ.weights_sha256,
                },
                "replication": {
                    "flagged": True,
                    "verdict": verdict,
                    "distance_ratio": round(float(rep["distance_ratio"]), 4),
                    "phash_distance": int(rep["phash_distance"]),
                    "ratio_threshold": round(ratio, 4),
                    "phash_hamming_threshold": e.replication_phash_hamming,
                    "similarity_floor": round(floor, 4),
                },
                "nearest_training_images": nearest,
                "clip_score": round(score, 4),
            },
            out_dir,
            conn,
        )
        if own_conn:
            conn.close()
        return refused
    wm_id: int | None = ledger.watermark_id_for(conn, pixels_sha256(big))
    try:
        big = watermark.embed(big, wm_id)
    except watermark.WatermarkError:
        wm_id = None  # a few saturated images cannot carry the mark; the ledger still finds them by hash
    sha = pixels_sha256(big)
    artwork_id = sha[:16]
    attribution_copy = out_dir / "attribution" / f"{info['name']}-v{info['version']}.md"
    if not attribution_copy.exists():
        write_bytes(attribution_copy, champ.attribution_path.read_bytes())
    embedded = {i.identifier for i in champ.embedded}
    manifest = build_manifest(
        artwork={
            "id": artwork_id,
            "file": f"{artwork_id}.png",
            "sha256_pixels": sha,
            "width": big.width,
            "height": big.height,
            "model_output_width": small.width,
            "model_output_height": small.height,
            "resampler": g.resampler,
            "phash": phash(big),
            "watermark": {"method": watermark.METHOD, "id": wm_id},
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "generator": {
                "prompt": prompt,
                "negative_prompt": negative_prompt or None,
                "seed": seed,
                "steps": steps,
                "scheduler": "DDIM",
                "guidance": guidance,
            },
        },
        model={
            "name": info["name"],
            "version": info["version"],
            "alias": champ.alias,
            "run_id": info["run_id"],
            "weights_sha256": champ.weights_sha256,
            "backend": tags.get("backend", "latent-diffusion"),
            "credential_sha256": signed_json.digest(champ.credential),
            **credentials.manifest_facts(champ.credential),
        },
        data={
            "dvc_md5": tags["dataset_md5"],
            "record_count": int(tags["train_records"]),
            "per_license": champ.license_summary["train_per_license"],
            "excluded_per_reason": champ.license_summary["excluded_per_reason"],
            "opt_outs_honoured": champ.license_summary["opt_outs_honoured"],
            "attribution": {
                "file": attribution_copy.relative_to(out_dir).as_posix(),
                "sha256": file_sha256(attribution_copy),
                "works": champ.license_summary["attribution_required"],
                "creators": champ.license_summary["attribution_creators"],
                "embedded": "ATTRIBUTION.md" in embedded,
            },
            "dataset_card": {
                "sha256": tags.get("dataset_card_sha256") or None,
                "embedded": "croissant.json" in embedded,
            },
        },
        checks={
            "evaluator": EVALUATOR,
            "clip_score": round(score, 4),
            "clip_score_scale": CLIP_SCORE_SCALE,
            "prompt_match": match,
            "warnings": warnings
            + (
                [f"low prompt match: the evaluator ranks its own prompt {match['rank']} of {match['of']}"]
                if match["low"]
                else []
            ),
            "similarity_scale": SIMILARITY_SCALE,
            "nearest_training_images": nearest,
            "replication": {
                "flagged": bool(rep["flagged"]),
                "verdict": replication_verdict(rep, ratio, e.replication_phash_hamming),
                "distance_ratio": round(float(rep["distance_ratio"]), 4),
                "phash_distance": int(rep["phash_distance"]),
                "ratio_threshold": round(ratio, 4),
                "phash_hamming_threshold": e.replication_phash_hamming,
            },
            "model_evaluation": {k.removeprefix("eval."): float(v) for k, v in tags.items() if k.startswith("eval.")},
            **({"selection": selection} if selection else {}),
        },
        code_version=code_version(),
    )
    # sign in memory first (sign_png validates the manifest against the schema): if either fails, nothing is written
    signed_png = sign_png(
        png_with_manifest(big, manifest), manifest, ensure_signing_identity(), artwork_terms(manifest), champ.embedded
    )
    write_json(out_dir / f"{artwork_id}.provenance.json", manifest)
    ledger.record(conn, manifest, wm_id)
    if own_conn:
        conn.close()
    write_bytes(out_dir / f"{artwork_id}.png", signed_png)  # the signed artwork is the last write
    return manifest


def quarantine(image: Image.Image, facts: dict, out_dir: Path, conn: sqlite3.Connection) -> dict:
    """Hold back an artwork that may not be published: `out_dir/quarantine/<id>.png` (unsigned, no watermark, never
    in the gallery), `<id>.quarantine.json` beside it, and a row in the ledger's `refusals` table; return the record.

    `facts`: reason, prompt, negative_prompt, seed, steps, guidance, model {name, version, run_id, weights_sha256},
    replication (the check's figures) and nearest_training_images (record id, creator, licence, similarity)."""
    sha = pixels_sha256(image)
    refusal_id = sha[:16]
    record = {
        "id": refusal_id,
        "quarantined": True,
        "file": f"{QUARANTINE}/{refusal_id}.png",
        "sha256_pixels": sha,
        "phash": phash(image),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **facts,
    }
    ledger.record_refusal(conn, record)
    write_json(out_dir / QUARANTINE / f"{refusal_id}.quarantine.json", record)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    write_bytes(out_dir / QUARANTINE / f"{refusal_id}.png", buf.getvalue())  # the image is the last write
    return record


def generate_artworks(
    prompts: list[str],
    seed: int,
    n: int = 1,
    steps: int | None = None,
    guidance: float | None = None,
    negative_prompt: str | None = None,
    out_dir: Path | None = None,
    version: str | None = None,
    candidates: int | None = None,
) -> list[dict]:
    """Generate `n` artworks per prompt from the champion (seeds seed, seed+1, ...); return their manifests. With
    `version`, from that registered version instead (a challenger, for reviewers to compare with the champion).
    Guidance: `guidance`, else the champion's preferred guidance when models/champion.json names one (reviewers'
    votes, promote.follow_preferred_guidance), else params.yaml's. `candidates`: best-of-K (default params.yaml's).

    Every prompt is checked against the opt-outs before any model is loaded; a prompt far from the training data is
    warned about (on stderr and in the manifest) before it is generated."""
    params = load_params()
    opted_out = opted_out_creators(paths.OPT_OUT)
    for prompt in prompts:
        check_prompt(prompt, opted_out)
    champ = resolve_model(params, version)
    conn = ledger.open_ledger()
    try:
        return make_artworks(
            champ,
            prompts,
            seed,
            n=n,
            steps=steps,
            guidance=guidance,
            negative_prompt=negative_prompt,
            out_dir=out_dir,
            candidates=candidates,
            params=params,
            conn=conn,
        )
    finally:
        conn.close()


def resolve_model(params: Params, version: str | None = None) -> Champion:
    """The champion, or a registered `version` (its alias in the manifest: champion, challenger or none)."""
    if version is None:
        return load_champion(params.registry.model_name)
    from registry import tracking

    info = tracking.get_version(params.registry.model_name, version)
    alias = next((a for a in ("champion", "challenger") if a in info["aliases"]), "none")
    return load_version(info, alias)


def make_artworks(
    champ: Champion,
    prompts: list[str],
    seed: int,
    *,
    n: int = 1,
    steps: int | None = None,
    guidance: float | None = None,
    negative_prompt: str | None = None,
    out_dir: Path | None = None,
    candidates: int | None = None,
    params: Params,
    conn: sqlite3.Connection,
    warn=None,
) -> list[dict]:
    """The artworks of prompts already checked against the opt-outs, from a loaded model and an open ledger (the CLI
    opens both per call, the studio once): made, sealed in the public log, counted on the registry, and the gallery
    rewritten. `warn(prompt, text)` receives each prompt warning (default: printed on stderr)."""
    g = params.generate
    if guidance is None:
        guidance = followed_guidance(champ.info["version"]) or g.guidance
    out_dir = out_dir or paths.ARTWORKS
    warn = warn or (lambda prompt, text: print(f"atelier: warning for {prompt!r}: {text}", file=sys.stderr))
    manifests = []
    for prompt in prompts:
        for warning in prompt_warnings(champ, prompt):
            warn(prompt, warning)
        for j in range(n):
            manifest = make_artwork(
                champ,
                prompt,
                seed + j,
                steps or g.steps,
                guidance,
                g.negative_prompt if negative_prompt is None else negative_prompt,
                out_dir,
                params=params,
                conn=conn,
                candidates=candidates or g.candidates,
            )
            manifests.append(summarise(manifest))
    publiclog.seal(conn, ensure_signing_identity())  # the ledger's log now ends here: its head, signed
    held = sum(bool(m.get("quarantined")) for m in manifests)
    if held:  # on the version's training run and the version, beside its evaluation
        from registry import tracking

        tracking.log_quarantine(champ.info["name"], champ.info["version"], held, len(manifests))
    write_gallery(out_dir, GALLERY_PLOTS)
    return manifests


def followed_guidance(version: str) -> float | None:
    """The guidance reviewers preferred for `version`, when the promote stage chose to follow it (models/champion.json
    `guidance`, written only with promote.follow_preferred_guidance), else None."""
    if not paths.CHAMPION.exists():
        return None
    record = json.loads(paths.CHAMPION.read_text(encoding="utf-8"))
    if str(record.get("version")) != str(version) or record.get("guidance") is None:
        return None
    return float(record["guidance"])


def summarise(manifest: dict) -> dict:
    """What a caller needs of a manifest (the full one is on disk): memory stays flat over thousands of artworks.
    A quarantined artwork's summary has `quarantined: True`, its `reason`, and the figures of its replication check."""
    if manifest.get("quarantined"):
        return {k: manifest[k] for k in ("id", "file", "quarantined", "reason", "model")} | {
            "artwork": {"file": manifest["file"], "generator": {k: manifest[k] for k in ("prompt", "seed")}},
            "checks": {
                "clip_score": manifest["clip_score"],
                "replication": manifest["replication"],
                "nearest_training_images": manifest["nearest_training_images"],
            },
        }
    return {
        "id": manifest["id"],
        "file": manifest["artwork"]["file"],
        "artwork": {"file": manifest["artwork"]["file"], "generator": manifest["artwork"]["generator"]},
        "model": manifest["model"],
        "checks": {
            "clip_score": manifest["checks"]["clip_score"],
            "prompt_match": manifest["checks"]["prompt_match"],
            "warnings": manifest["checks"]["warnings"],
            "replication": manifest["checks"]["replication"],
        },
    }


def screen_prompts(prompts: list[str], opt_outs: OptOuts) -> tuple[list[str], list[dict]]:
    """(the prompts that may be generated, [{prompt, reason}] of those refused), each refusal printed."""
    allowed, refused = [], []
    for prompt in prompts:
        try:
            check_prompt(prompt, opt_outs)
            allowed.append(prompt)
        except PromptRefused as exc:
            refused.append({"prompt": prompt, "reason": str(exc)})
            print(f"generate: skipped {prompt!r}: {exc}")
    return allowed, refused


def main() -> dict:
    """Generate the artworks of params.yaml's `generate` section; with no champion yet, say so and make none."""
    g = load_params().generate
    prompts, refused = screen_prompts(g.prompts, opted_out_creators(paths.OPT_OUT))  # reported, not a failed stage
    try:
        manifests = generate_artworks(prompts, seed=g.seed) if prompts else []
    except NoChampion as exc:  # the gate refused (or a takedown): the run succeeds, with nothing to generate
        write_json(
            paths.REPORTS / "generate.json",
            {"model": None, "artworks": [], "no_champion": str(exc), "refused": refused},
        )
        print(f"generate: {exc}; no artworks made")
        return {"artworks": 0, "flagged": 0, "no_champion": str(exc), "refused": len(refused)}
    if not manifests:
        write_json(paths.REPORTS / "generate.json", {"model": None, "artworks": [], "refused": refused})
        print(f"generate: every prompt was refused ({len(refused)}); no artworks made")
        return {"artworks": 0, "flagged": 0, "refused": len(refused)}
    held = [m for m in manifests if m.get("quarantined")]  # possible replications: not published
    model = {k: manifests[0]["model"][k] for k in ("name", "version", "run_id")}
    manifests = [m for m in manifests if not m.get("quarantined")]
    for m in held:
        print(
            f"generate: quarantined {m['artwork']['generator']['prompt']!r} seed {m['artwork']['generator']['seed']}"
            f" as {paths.relative(paths.ARTWORKS / m['file'])}: {m['reason']}"
        )
    low = sum(m["checks"]["prompt_match"]["low"] for m in manifests)
    write_json(
        paths.REPORTS / "generate.json",
        {
            "model": model,
            "artworks": [
                {
                    "id": m["id"],
                    "prompt": m["artwork"]["generator"]["prompt"],
                    "flagged": m["checks"]["replication"]["flagged"],
                    "low_prompt_match": m["checks"]["prompt_match"]["low"],
                    "warnings": m["checks"]["warnings"],
                }
                for m in manifests
            ],
            "quarantined": len(held),
            "quarantine": [
                {
                    "id": m["id"],
                    "file": m["file"],
                    "prompt": m["artwork"]["generator"]["prompt"],
                    "seed": m["artwork"]["generator"]["seed"],
                    "reason": m["reason"],
                }
                for m in held
            ],
            "refused": refused,
        },
    )
    print(
        f"generate: {len(manifests)} artworks in {paths.relative(paths.ARTWORKS)} from {model['name']} version "
        f"{model['version']}; {len(held)} quarantined as possible replication (not published); {low} with a low "
        "prompt match"
    )
    return {
        "artworks": len(manifests),
        "flagged": len(held),
        "quarantined": len(held),
        "low_prompt_match": low,
        "refused": len(refused),
    }


if __name__ == "__main__":
    main()
