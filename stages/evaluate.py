"""evaluate stage: judge the trained pipeline on prompts any collection has, beside its own held-out real images.

The prompt set is a seeded sample of held-out captions (`evaluate.prompts`, bounded whatever the collection's size)
plus `evaluate.fixed_prompts`; every figure of the generations stands beside the same figure for the held-out real
images with their own captions, and beside chance:
- prompt retrieval: is an image's own prompt its top-1 / top-5 among the prompt set (cosine, evaluator CLIP);
- CLIPScore (2.5 x max(cos, 0), 0-2.5) with the real images' CLIPScore and the ratio;
- CMMD (1000 x MMD^2, RBF sigma from params) against held-out real images, with the real-vs-real baseline;
- diversity (1 - mean pairwise cosine), replication against the training split;
- the demo's zero-shot style and palette accuracy, where captions follow its convention.

Scoring uses the evaluator CLIP (models/evaluator): trained apart from the generator's text encoder (another seed,
training split only), so the generator is not judged by the model it was conditioned on. A figure where
generations beat the real images is flagged. Replication is measured on the generator's own CLIP (models/clip), as
generate does, so the calibrated thresholds carry over. Writes reports/eval.json, reports/samples.png and
reports/clipscore.png; logs metrics to the MLflow run and the model version.
"""

from __future__ import annotations

import json
import random
import time

import pandas as pd
import torch

from atelier import colours, paths
from atelier.config import EvaluateParams, load_params
from atelier.dataset import labels, load_images, split
from atelier.embedding import embed_records
from atelier.figures import sample_grid, save_png
from atelier.hashing import phash
from atelier.io import write_json
from atelier.models.clip import encode_images, encode_texts, image_size, load_clip, zero_shot
from atelier.models.generator import at_size, load_generator
from atelier.models.latent_diffusion import to_pil
from atelier.models.metrics import (
    calibrate_replication,
    calibrated_thresholds,
    clip_score,
    cmmd,
    diversity,
    prompt_ranks,
    replication,
    retrieval_accuracy,
)
from atelier.plots import plot_clip_scores

EVALUATOR = (
    "the evaluator CLIP (models/evaluator): trained apart from the generator's text encoder (another seed, "
    "training split only); cosine of normalised embeddings"
)
SCALES = {
    "clip_score": "CLIPScore = 2.5 x max(cosine(image, own prompt), 0); range 0-2.5, higher is closer",
    "retrieval_top1": "fraction of images whose own prompt is the most similar of the prompt set; chance = 1/prompts",
    "retrieval_top5": "fraction of images whose own prompt is among the 5 most similar; chance = 5/prompts",
    "cmmd": "CMMD = 1000 x MMD^2 (RBF kernel) between embedding sets; 0 = same distribution, lower is closer",
    "diversity": "1 - mean pairwise cosine of image embeddings; 0 = all alike",
    "replication_rate": "fraction of generations flagged as a possible copy of one training image",
    "style_accuracy": "demo only: zero-shot style accuracy; chance 1/6",
    "palette_accuracy": "demo only: zero-shot palette accuracy; chance 1/6",
}
BEAT_REAL_TOLERANCE = 0.02  # generations above the real figure by more than this are flagged


def prompt_set(holdout: pd.DataFrame, p: EvaluateParams) -> list[str]:
    """The evaluation prompts: a seeded sample of at most `p.prompts` distinct held-out captions (sorted), then the
    fixed prompts. Never the training split's captions: a held-out caption may also caption a training image."""
    captions = sorted({c.strip() for c in holdout["caption"] if isinstance(c, str) and c.strip()})
    sampled = sorted(random.Random(p.seed).sample(captions, min(p.prompts, len(captions))))
    prompts = sampled + [q for q in dict.fromkeys(p.fixed_prompts) if q not in sampled]
    if len(prompts) < 2:
        raise ValueError(
            f"evaluation needs at least 2 prompts, found {len(prompts)} distinct held-out captions and "
            f"{len(p.fixed_prompts)} fixed prompts; add data, raise train_clip.holdout_fraction or list "
            "evaluate.fixed_prompts in params.yaml"
        )
    return prompts


def accuracy_by_label(clip, tokenizer, images: torch.Tensor, captions: list[str]) -> dict:
    """The demo's zero-shot style and palette accuracy for images whose captions name both (empty if none do)."""
    named = [(i, labels(c)) for i, c in enumerate(captions) if labels(c)]
    if not named:
        return {}
    idx = torch.tensor([i for i, _ in named])
    return {
        "style_accuracy": zero_shot(clip, tokenizer, images[idx], [lab[0] for _, lab in named], "style")[0],
        "palette_accuracy": zero_shot(clip, tokenizer, images[idx], [lab[1] for _, lab in named], "palette")[0],
    }


def score(
    evaluator, tokenizer, images: torch.Tensor, own_prompts: list[str], prompts: list[str], prompt_emb: torch.Tensor
) -> dict:
    """Every per-image figure for images made from (or captioned with) `own_prompts`, each one of `prompts`."""
    img_emb = encode_images(evaluator, images)
    own = [prompts.index(q) for q in own_prompts]
    scores = clip_score(img_emb, prompt_emb[own])
    ranks = prompt_ranks(img_emb, prompt_emb, own)
    groups = [[i for i, q in enumerate(own_prompts) if q == p] for p in sorted(set(own_prompts))]
    within = [diversity(img_emb[g]) for g in groups if len(g) > 1]
    return {
        "images": len(images),
        "clip_score": float(scores.mean()),
        "retrieval_top1": retrieval_accuracy(ranks, 1),
        "retrieval_top5": retrieval_accuracy(ranks, 5),
        "diversity": diversity(img_emb) if len(img_emb) > 1 else None,
        "diversity_within_prompt": float(sum(within) / len(within)) if within else None,
        **accuracy_by_label(evaluator, tokenizer, images, own_prompts),
        "_scores": scores.tolist(),
        "_ranks": ranks.tolist(),
        "_emb": img_emb,
    }


def public(scored: dict) -> dict:
    return {k: v for k, v in scored.items() if not k.startswith("_")}


def beats_real(generated: dict, real: dict, cmmd_figures: dict) -> list[str]:
    """Figures where the generations look better than the real images: a sign the evaluator favours the generator."""
    flags = []
    for key in ("clip_score", "retrieval_top1", "retrieval_top5", "style_accuracy", "palette_accuracy"):
        g, r = generated.get(key), real.get(key)
        if g is not None and r is not None and g > r + BEAT_REAL_TOLERANCE:
            flags.append(
                f"{key}: generations {g:.3f} beat the held-out real images {r:.3f}; the evaluator may "
                "favour the generator, read this figure with caution"
            )
    if cmmd_figures["generated_vs_real"] < cmmd_figures["real_vs_real_baseline"]:
        flags.append(
            f"cmmd: generations {cmmd_figures['generated_vs_real']:.3f} are closer to the real images than "
            f"the real-vs-real baseline {cmmd_figures['real_vs_real_baseline']:.3f}"
        )
    return flags


def prompt_similarity_floor(evaluator, tokenizer, train: pd.DataFrame, holdout: pd.DataFrame) -> float | None:
    """The 1% quantile, over held-out captions, of their cosine to the nearest *other* training caption: a prompt
    below it is farther from the training captions than almost every real held-out caption (generate warns)."""
    train_caps = sorted({c for c in train["caption"] if isinstance(c, str) and c.strip()})
    held = sorted({c for c in holdout["caption"] if isinstance(c, str) and c.strip()})
    if len(train_caps) < 2 or not held:
        return None
    sims = encode_texts(evaluator, tokenizer, held) @ encode_texts(evaluator, tokenizer, train_caps).T
    same = torch.tensor([[h == t for t in train_caps] for h in held])
    nearest = sims.masked_fill(same, -1.0).max(dim=1).values
    return float(torch.quantile(nearest.double(), 0.01))


def _arrays(images: torch.Tensor) -> list:
    """A [N, 3, H, W] tensor in [0, 1] as N H x W x 3 arrays."""
    return list(images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy())


def evaluate(
    pipeline, evaluator, eval_tokenizer, train: pd.DataFrame, holdout: pd.DataFrame, p: EvaluateParams, embed_train=None
) -> tuple[dict, dict]:
    """All metrics as a JSON-ready dict, and the headline generations (for the grid and the plots) with the sampling
    seconds per guidance scale.

    `embed_train(records)` embeds the training images with the generator's CLIP for replication (the stage runs it
    in chunks on the engine); by default they are loaded and embedded here."""
    prompts = prompt_set(holdout, p)
    prompt_emb = encode_texts(evaluator, eval_tokenizer, prompts)
    generation_prompts = [q for q in prompts for _ in range(p.per_prompt)]
    shown_real = holdout[holdout["caption"].isin(prompts)].reset_index(drop=True)
    real_images = load_images(shown_real)
    real = score(evaluator, eval_tokenizer, real_images, list(shown_real["caption"]), prompts, prompt_emb)
    k = len(prompts)
    report: dict = {
        "evaluator": EVALUATOR,
        "scales": SCALES,
        "prompt_set": prompts,
        "prompts": k,
        "prompts_sampled_from_holdout": k - len(p.fixed_prompts),
        "prompts_also_training_captions": len(set(prompts) & set(train["caption"])),
        "generations_per_guidance": len(generation_prompts),
        "sampling_steps": p.sampling_steps,
        "seed": p.seed,
        "chance": {
            "retrieval_top1": 1 / k,
            "retrieval_top5": min(5, k) / k,
            "style_accuracy": 1 / 6,
            "palette_accuracy": 1 / 6,
        },
        "real": public(real),
        "per_guidance": {},
    }
    headline, seconds = None, {}
    for g in p.guidance:
        start = time.time()
        images = at_size(
            pipeline.generate_tensor(
                generation_prompts, seed=p.seed, steps=p.sampling_steps, guidance=g, batch_size=24
            ),
            image_size(evaluator),
        )
        scored = score(evaluator, eval_tokenizer, images, generation_prompts, prompts, prompt_emb)
        report["per_guidance"][str(g)] = public(scored)  # no wall-clock time in the report: DVC tracks eval.json
        seconds[str(g)] = round(time.time() - start, 1)
        if g == p.headline_guidance:
            headline = {**scored, "images": images}
    if headline is None:
        raise ValueError(f"evaluate.headline_guidance={p.headline_guidance} is not in evaluate.guidance={p.guidance}")
    # colour agreement (atelier/colours.py): no learned model, so it says something where the evaluator is blind
    generated_colours = colours.agreement(_arrays(headline["images"]), generation_prompts)
    real_colours = colours.agreement(_arrays(real_images), list(shown_real["caption"]))
    report["colour_agreement"] = {
        "generated": generated_colours["agreement"],
        "real": real_colours["agreement"],
        "generated_images": generated_colours["images"],
        "real_images": real_colours["images"],
        "method": "a prompt's basic colour terms among the image's dominant colours (CIELAB nearest, >= 12% of pixels)",
    }

    # CMMD on the evaluator; replication on the generator's own CLIP, as generate checks each artwork
    train_eval_emb = (
        encode_images(evaluator, load_images(train)) if embed_train is None else embed_train(train, paths.EVALUATOR_DIR)
    )
    half = len(train_eval_emb) // 2
    report["cmmd"] = {
        "generated_vs_real": cmmd(headline["_emb"], real["_emb"], p.cmmd_sigma),
        "real_vs_real_baseline": cmmd(train_eval_emb[:half], real["_emb"], p.cmmd_sigma),
        "sigma": p.cmmd_sigma,
    }
    train_emb = (
        encode_images(pipeline.clip_model, load_images(train))
        if embed_train is None
        else embed_train(train, paths.CLIP_DIR)
    )
    pils = to_pil(headline["images"])
    calibration = calibrate_replication(train_emb, p.replication_ratio)
    thresholds = calibrated_thresholds(calibration, p.replication_ratio)
    gen_emb = encode_images(pipeline.clip_model, headline["images"])
    rep = replication(
        gen_emb,
        train_emb,
        [phash(im) for im in pils],
        list(train["phash"]),
        ratio=thresholds["ratio"],
        hamming=p.replication_phash_hamming,
        min_similarity=thresholds["min_similarity"],
    )
    flagged = [r for r in rep if r["flagged"]]
    report["replication"] = {
        "rate": len(flagged) / len(rep),
        "flagged": len(flagged),
        "checked": len(rep),
        "model": "the generator's own CLIP (models/clip), as generate uses",
        "configured_ratio": p.replication_ratio,
        "ratio_threshold": thresholds["ratio"],
        "similarity_floor": thresholds["min_similarity"],
        "phash_hamming": p.replication_phash_hamming,
        "calibration": calibration,
        "min_distance_ratio": min(r["distance_ratio"] for r in rep),
    }
    h = report["per_guidance"][str(p.headline_guidance)]
    report["warnings"] = beats_real(h, report["real"], report["cmmd"])
    floor = prompt_similarity_floor(evaluator, eval_tokenizer, train, holdout)
    report["headline"] = {
        "guidance": p.headline_guidance,
        "retrieval_top1": h["retrieval_top1"],
        "real_retrieval_top1": real["retrieval_top1"],
        "real_images": real["images"],  # how many held-out real images that retrieval is measured on
        "chance_top1": report["chance"]["retrieval_top1"],
        "retrieval_top5": h["retrieval_top5"],
        "real_retrieval_top5": real["retrieval_top5"],
        "chance_top5": report["chance"]["retrieval_top5"],
        "clip_score": h["clip_score"],
        "real_clip_score": real["clip_score"],
        "clip_score_ratio": h["clip_score"] / real["clip_score"] if real["clip_score"] > 0 else None,
        "cmmd": report["cmmd"]["generated_vs_real"],
        "cmmd_baseline": report["cmmd"]["real_vs_real_baseline"],
        "diversity": h["diversity"],
        "real_diversity": real["diversity"],
        "replication_rate": report["replication"]["rate"],
        "replication_ratio_threshold": thresholds["ratio"],
        "replication_similarity_floor": thresholds["min_similarity"],
        "prompt_similarity_floor": floor,
        "figures_beating_real": len(report["warnings"]),
    }
    report["headline"]["colour_agreement"] = report["colour_agreement"]["generated"]
    report["headline"]["real_colour_agreement"] = report["colour_agreement"]["real"]
    for key in ("style_accuracy", "palette_accuracy"):  # the demo's extras, only where captions name them
        if key in h:
            report["headline"][key] = h[key]
            report["headline"][f"real_{key}"] = real.get(key)
    shown = {
        "pils": pils,
        "prompts": generation_prompts,
        "scores": headline["_scores"],
        "real_scores": real["_scores"],
        "seconds_per_guidance": seconds,
    }
    return report, shown


def main() -> dict:
    """Evaluate models/diffusion with models/evaluator; write reports; log to MLflow."""
    from registry.tracking import get_version, log_evaluation

    params = load_params()
    p = params.evaluate
    torch.manual_seed(p.seed)
    records = pd.read_parquet(paths.TRAIN_RECORDS)
    train, holdout = split(records, params.train_clip.holdout_fraction)
    evaluator, eval_tokenizer = load_clip(paths.EVALUATOR_DIR)
    pipeline = load_generator(paths.DIFFUSION_DIR, resolution=params.clean.resolution)
    report, shown = evaluate(
        pipeline,
        evaluator,
        eval_tokenizer,
        train,
        holdout,
        p,
        embed_train=lambda r, clip_dir: embed_records(clip_dir, r, params.engine),
    )
    firsts = list(range(0, len(shown["pils"]), p.per_prompt))  # one generation per prompt
    save_png(
        paths.EVAL_GRID,
        sample_grid(
            [shown["pils"][i] for i in firsts],
            [shown["prompts"][i] for i in firsts],
            scale=3,
            title=f"One generation per evaluation prompt (guidance {p.headline_guidance}, seed {p.seed})",
        ),
    )
    plot_clip_scores(shown["scores"], shown["real_scores"], paths.REPORTS / "clipscore.png")
    trained = json.loads(paths.TRAIN_SUMMARY.read_text())
    # The model by name, version and weights, not by MLflow run id: a run id is random, so eval.json (which DVC
    # tracks) would differ between two runs of the same code and data. MLflow keeps this report under the run.
    report["model"] = {
        "name": trained["model_name"],
        "version": trained["version"],
        "weights_sha256": trained["weights_sha256"],
    }
    write_json(paths.EVAL_REPORT, report)
    write_json(
        paths.TIMINGS / "evaluate.json",  # git- and DVC-untracked
        {"sampling_seconds_per_guidance": shown["seconds_per_guidance"]},
    )
    metrics = {k: float(v) for k, v in report["headline"].items() if v is not None}
    run_id = get_version(trained["model_name"], trained["version"])["run_id"]
    log_evaluation(
        run_id,
        trained["model_name"],
        trained["version"],
        metrics,
        [paths.EVAL_REPORT, paths.EVAL_GRID, paths.REPORTS / "clipscore.png"],
    )
    print(f"evaluate: {json.dumps(report['headline'])}")
    for warning in report["warnings"]:
        print(f"evaluate: warning: {warning}")
    return report


if __name__ == "__main__":
    main()
