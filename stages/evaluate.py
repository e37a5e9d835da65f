"""evaluate stage: judge the trained pipeline on the evaluator CLIP (models/clip, 32 px, embed_dim from params).

CLIPScore (2.5 * max(cos, 0)), CMMD (1000 * MMD^2, RBF sigma from params) against held-out real images beside the
real-vs-real baseline, diversity, replication against the training split, and zero-shot style/palette accuracy of
generations beside the same figure for held-out real images. Writes reports/eval.json, reports/samples.png and
reports/clipscore.png; logs metrics to the MLflow run and the model version.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import torch

from atelier import paths
from atelier.config import EvaluateParams, load_params
from atelier.dataset import labels, load_images, split
from atelier.embedding import embed_records
from atelier.io import write_json
from atelier.models.clip import encode_images, encode_texts, load_clip, zero_shot
from atelier.models.latent_diffusion import LatentDiffusionPipeline, to_pil
from atelier.models.metrics import (calibrate_replication, calibrated_thresholds, clip_score, cmmd, diversity,
                                    replication)
from atelier.hashing import phash
from atelier.plots import plot_clip_scores
from atelier.reports import image_grid, save_png

EVALUATOR = "atelier CLIP (models/clip), 32 px images, cosine on normalised embeddings"


def prompt_set(records: pd.DataFrame) -> list[str]:
    """The evaluation prompts: every distinct training caption, sorted."""
    return sorted(set(records["caption"]))


def accuracy_by_label(clip, tokenizer, images: torch.Tensor, prompts: list[str]) -> dict:
    """Zero-shot style and palette accuracy of images against the labels their prompts name (skipped if none)."""
    named = [(i, labels(p)) for i, p in enumerate(prompts) if labels(p)]
    if not named:
        return {}
    idx = torch.tensor([i for i, _ in named])
    styles = [lab[0] for _, lab in named]
    palettes = [lab[1] for _, lab in named]
    return {"style_accuracy": zero_shot(clip, tokenizer, images[idx], styles, "style")[0],
            "palette_accuracy": zero_shot(clip, tokenizer, images[idx], palettes, "palette")[0]}


def score_generations(clip, tokenizer, images: torch.Tensor, prompts: list[str]) -> dict:
    """CLIPScore, diversity and zero-shot accuracy for one set of generations."""
    img_emb = encode_images(clip, images)
    txt_emb = encode_texts(clip, tokenizer, prompts)
    scores = clip_score(img_emb, txt_emb)
    groups = [[i for i, q in enumerate(prompts) if q == p] for p in sorted(set(prompts))]
    within = [diversity(img_emb[g]) for g in groups if len(g) > 1]
    return {"clip_score": float(scores.mean()), "diversity": diversity(img_emb),
            "diversity_within_prompt": float(sum(within) / len(within)) if within else None,
            **accuracy_by_label(clip, tokenizer, images, prompts), "_scores": scores.tolist(), "_emb": img_emb}


def evaluate(pipeline: LatentDiffusionPipeline, clip, tokenizer, train: pd.DataFrame, holdout: pd.DataFrame,
             p: EvaluateParams, embed_train=None) -> tuple[dict, dict]:
    """All metrics as a JSON-ready dict, and the headline generations (for the grid and the plots).

    `embed_train(records)` embeds the training images (the stage runs it in chunks on the engine); by default they
    are loaded and embedded here."""
    prompts = [q for q in prompt_set(train) for _ in range(p.per_prompt)]
    real = load_images(holdout)
    real_emb = encode_images(clip, real)
    real_scores = clip_score(real_emb, encode_texts(clip, tokenizer, list(holdout["caption"])))
    report: dict = {
        "evaluator": EVALUATOR, "prompts": len(set(prompts)), "generations_per_guidance": len(prompts),
        "sampling_steps": p.sampling_steps, "seed": p.seed,
        "chance_accuracy": round(1 / 6, 4),
        "real": {"images": len(holdout), "clip_score": float(real_scores.mean()),
                 **accuracy_by_label(clip, tokenizer, real, list(holdout["caption"]))},
        "per_guidance": {},
    }
    headline = None
    for g in p.guidance:
        start = time.time()
        images = pipeline.generate_tensor(prompts, seed=p.seed, steps=p.sampling_steps, guidance=g, batch_size=24)
        scored = score_generations(clip, tokenizer, images, prompts)
        report["per_guidance"][str(g)] = {k: v for k, v in scored.items() if not k.startswith("_")}
        report["per_guidance"][str(g)]["seconds"] = round(time.time() - start, 1)
        if g == p.headline_guidance:
            headline = {"images": images, "prompts": prompts, **scored}
    if headline is None:
        raise ValueError(f"evaluate.headline_guidance={p.headline_guidance} is not in evaluate.guidance={p.guidance}")

    train_emb = embed_train(train) if embed_train else encode_images(clip, load_images(train))
    half = len(train_emb) // 2
    pils = to_pil(headline["images"])
    calibration = calibrate_replication(train_emb, p.replication_ratio)
    thresholds = calibrated_thresholds(calibration, p.replication_ratio)
    rep = replication(headline["_emb"], train_emb, [phash(im) for im in pils], list(train["phash"]),
                      ratio=thresholds["ratio"], hamming=p.replication_phash_hamming,
                      min_similarity=thresholds["min_similarity"])
    flagged = [r for r in rep if r["flagged"]]
    report["cmmd"] = {"generated_vs_real": cmmd(headline["_emb"], real_emb, p.cmmd_sigma),
                      "real_vs_real_baseline": cmmd(train_emb[:half], real_emb, p.cmmd_sigma), "sigma": p.cmmd_sigma}
    report["replication"] = {"rate": len(flagged) / len(rep), "flagged": len(flagged), "checked": len(rep),
                             "configured_ratio": p.replication_ratio, "ratio_threshold": thresholds["ratio"],
                             "similarity_floor": thresholds["min_similarity"],
                             "phash_hamming": p.replication_phash_hamming, "calibration": calibration,
                             "min_distance_ratio": min(r["distance_ratio"] for r in rep)}
    h = report["per_guidance"][str(p.headline_guidance)]
    report["headline"] = {"guidance": p.headline_guidance, "clip_score": h["clip_score"],
                          "style_accuracy": h.get("style_accuracy", 0.0),
                          "palette_accuracy": h.get("palette_accuracy", 0.0),
                          "real_style_accuracy": report["real"].get("style_accuracy", 0.0),
                          "real_palette_accuracy": report["real"].get("palette_accuracy", 0.0),
                          "cmmd": report["cmmd"]["generated_vs_real"], "diversity": h["diversity"],
                          "replication_rate": report["replication"]["rate"],
                          "replication_ratio_threshold": thresholds["ratio"],
                          "replication_similarity_floor": thresholds["min_similarity"]}
    return report, {"pils": pils, "prompts": prompts, "scores": headline["_scores"], "real_scores": real_scores.tolist()}


def main() -> dict:
    """Evaluate models/diffusion; write reports; log to MLflow."""
    from registry.tracking import log_evaluation

    params = load_params()
    p = params.evaluate
    torch.manual_seed(p.seed)
    records = pd.read_parquet(paths.TRAIN_RECORDS)
    train, holdout = split(records, params.train_clip.holdout_fraction)
    clip, tokenizer = load_clip(paths.CLIP_DIR)
    pipeline = LatentDiffusionPipeline.from_pretrained(paths.DIFFUSION_DIR)
    report, shown = evaluate(pipeline, clip, tokenizer, train, holdout, p,
                             embed_train=lambda r: embed_records(paths.CLIP_DIR, r, params.engine))
    # one image per prompt in the grid, prompts in caption order (rows: palettes, columns: styles for the demo)
    firsts = [shown["pils"][i] for i in range(0, len(shown["pils"]), p.per_prompt)]
    save_png(paths.EVAL_GRID, image_grid(firsts, columns=6, scale=3))
    plot_clip_scores(shown["scores"], shown["real_scores"], paths.REPORTS / "clipscore.png")
    trained = json.loads(paths.TRAIN_SUMMARY.read_text())
    report["model"] = {"name": trained["model_name"], "version": trained["version"], "run_id": trained["run_id"]}
    write_json(paths.EVAL_REPORT, report)
    metrics = {k: float(v) for k, v in report["headline"].items()}
    metrics["cmmd_real_baseline"] = report["cmmd"]["real_vs_real_baseline"]
    log_evaluation(trained["run_id"], trained["model_name"], trained["version"], metrics,
                   [paths.EVAL_REPORT, paths.EVAL_GRID, paths.REPORTS / "clipscore.png"])
    print(f"evaluate: {json.dumps(report['headline'])}")
    return report


if __name__ == "__main__":
    main()
