"""Evaluation time: the evaluate stage's work (prompt set, generations at every guidance, scoring on the evaluator,
CMMD, replication) against bare sampling of the same prompts, seeds and guidances with the same pipeline. The stage
samples a bounded prompt set (`evaluate.prompts`), so its cost does not grow with the collection."""

from __future__ import annotations

import time

import pandas as pd
import torch

from atelier import paths
from atelier.config import load_params
from atelier.dataset import split
from atelier.embedding import embed_records
from atelier.models.clip import load_clip
from atelier.models.generator import load_generator
from stages.evaluate import evaluate, prompt_set


def main() -> dict:
    params = load_params()
    p = params.evaluate
    records = pd.read_parquet(paths.TRAIN_RECORDS)
    train, holdout = split(records, params.train_clip.holdout_fraction)
    evaluator, tokenizer = load_clip(paths.EVALUATOR_DIR)
    pipeline = load_generator(paths.DIFFUSION_DIR)  # either backend
    prompts = [q for q in prompt_set(holdout, p) for _ in range(p.per_prompt)]
    torch.manual_seed(p.seed)
    start = time.perf_counter()
    for g in p.guidance:
        pipeline.generate_tensor(prompts, seed=p.seed, steps=p.sampling_steps, guidance=g, batch_size=24)
    bare = time.perf_counter() - start
    start = time.perf_counter()
    evaluate(
        pipeline,
        evaluator,
        tokenizer,
        train,
        holdout,
        p,
        embed_train=lambda r, clip_dir: embed_records(clip_dir, r, params.engine),
    )
    ours = time.perf_counter() - start
    print(
        f"evaluate: {ours:.1f} s for {len(prompts)} generations x {len(p.guidance)} guidances on "
        f"{len(train)} training records; bare sampling of the same: {bare:.1f} s; ratio {ours / bare:.2f}"
    )
    return {
        "atelier_s": ours,
        "baseline_s": bare,
        "ratio": ours / bare,
        "generations": len(prompts) * len(p.guidance),
        "train_records": len(train),
    }


if __name__ == "__main__":
    main()
