"""Best-of-K against one sample: the champion makes the demo's prompts at several seeds with K = 1 and K = 4 (the
K = 1 image is candidate 0 of the K = 4 set, so the comparison is paired), and both are scored the same way:

- prompt retrieval top-1 on the evaluator: the artwork's own prompt ranks first among it and the evaluation prompts
  (the evaluator also selected the K = 4 candidate, so this figure is the one best-of-K optimises);
- colour agreement (atelier/colours.py): the prompt's colour words among the image's dominant colours, a judge with
  no learned model and no part in the selection.

Nothing is signed or written to the ledger: it measures the choice, not the provenance path."""

from __future__ import annotations

import os

import numpy as np

from atelier import colours
from atelier.config import load_params
from stages import generate

SEEDS = int(os.environ.get("ATELIER_BENCH_SEEDS", 8))
K = int(os.environ.get("ATELIER_BENCH_K", 4))


def main() -> dict:
    params = load_params()
    g = params.generate
    champ = generate.load_champion(params.registry.model_name)
    guidance = generate.followed_guidance(champ.info["version"]) or g.guidance
    rows = {1: [], K: []}
    for prompt in g.prompts:
        for j in range(SEEDS):
            for k in (1, K):
                small, emb, _ = generate._best_of(champ, prompt, g.seed + j, g.steps, guidance, g.negative_prompt, k)
                rank = generate.prompt_match(champ, emb, prompt)["rank"]
                rows[k].append((prompt, np.asarray(small.convert("RGB")), rank))
    result = {}
    for k, found in rows.items():
        top1 = sum(rank == 1 for _, _, rank in found) / len(found)
        agree = colours.agreement([img for _, img, _ in found], [p for p, _, _ in found])
        result[k] = {"retrieval_top1": top1, "colour_agreement": agree["agreement"], "images": len(found)}
    print(
        f"best-of-{K} vs one sample, {len(g.prompts)} prompts x {SEEDS} seeds on {champ.info['name']} v"
        f"{champ.info['version']}: prompt retrieval top-1 {result[K]['retrieval_top1']:.3f} vs "
        f"{result[1]['retrieval_top1']:.3f}; colour agreement {result[K]['colour_agreement']} vs "
        f"{result[1]['colour_agreement']}"
    )
    return {"k": K, "seeds": SEEDS, "one": result[1], "best_of_k": result[K]}


if __name__ == "__main__":
    main()
