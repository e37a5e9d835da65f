"""Evaluation metrics as pure functions on CLIP embeddings (rows L2-normalised) and perceptual hashes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def clip_score(img_emb: torch.Tensor, txt_emb: torch.Tensor) -> torch.Tensor:
    """CLIPScore per pair (Hessel et al. 2021): 2.5 * max(cos(image_i, text_i), 0), shape [N]."""
    if img_emb.shape != txt_emb.shape:
        raise ValueError(f"clip_score needs paired embeddings of one shape, got {tuple(img_emb.shape)} and {tuple(txt_emb.shape)}")
    cos = (F.normalize(img_emb, dim=-1) * F.normalize(txt_emb, dim=-1)).sum(-1)
    return 2.5 * cos.clamp(min=0)


def cmmd(x: torch.Tensor, y: torch.Tensor, sigma: float = 10.0) -> float:
    """CMMD (Jayasumana et al. 2024): 1000 * MMD^2 with a Gaussian RBF kernel of bandwidth sigma.

    Uses the biased (V-statistic) estimator, as the reference implementation does: so cmmd(x, x) is exactly 0 and
    values are never negative. k(a, b) = exp(-||a - b||^2 / (2 sigma^2)).
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"cmmd needs two [N, D] embedding sets of equal D, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    gamma = 1.0 / (2 * sigma**2)
    k_xx = torch.exp(-gamma * torch.cdist(x, x).pow(2)).mean()
    k_yy = torch.exp(-gamma * torch.cdist(y, y).pow(2)).mean()
    k_xy = torch.exp(-gamma * torch.cdist(x, y).pow(2)).mean()
    return float(1000 * (k_xx + k_yy - 2 * k_xy).clamp(min=0))


def diversity(emb: torch.Tensor) -> float:
    """1 - mean pairwise cosine over distinct pairs (0 when every embedding is the same); needs 2+ rows."""
    if len(emb) < 2:
        raise ValueError("diversity needs at least two embeddings")
    e = F.normalize(emb.double(), dim=-1)
    sim = e @ e.T
    n = len(e)
    mean_off_diagonal = (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))
    return float(1 - mean_off_diagonal)


def _two_nearest(query: torch.Tensor, bank: torch.Tensor, exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    if len(bank) < (3 if exclude_self else 2):
        raise ValueError("replication needs at least two reference (training) embeddings")
    sim = F.normalize(query.double(), dim=-1) @ F.normalize(bank.double(), dim=-1).T
    if exclude_self:
        sim.fill_diagonal_(-float("inf"))
    return sim.topk(2, dim=1)


def replication(
    gen_emb: torch.Tensor,
    train_emb: torch.Tensor,
    gen_phash: list[str] | None = None,
    train_phash: list[str] | None = None,
    ratio: float = 1 / 3,
    hamming: int = 4,
    min_similarity: float = -1.0,
) -> list[dict]:
    """Per generation: two nearest training images in CLIP space, distance ratio d1/d2 (cosine distance), pHash match.

    Flagged when d1/d2 < ratio (much closer to one training image than to any other) while the nearest similarity is
    at least `min_similarity`, or when a training image's perceptual hash is within `hamming` bits. An exact copy has
    d1 = 0, so ratio 0 and similarity 1, and is always flagged.
    """
    sims, idx = _two_nearest(gen_emb, train_emb)
    out, bank = [], None
    for i in range(len(gen_emb)):
        d1, d2 = 1 - float(sims[i, 0]), 1 - float(sims[i, 1])
        r = d1 / d2 if d2 > 1e-12 else (0.0 if d1 <= 1e-12 else float("inf"))
        r = max(r, 0.0)
        row = {
            "nearest": [int(idx[i, 0]), int(idx[i, 1])],
            "similarity": [float(sims[i, 0]), float(sims[i, 1])],
            "distance_ratio": r,
            "phash_nearest": None,
            "phash_distance": None,
        }
        if gen_phash is not None and train_phash is not None:
            if bank is None:  # once per call: 64-bit ints, compared in one vectorised popcount per generation
                bank = np.array([int(h, 16) if isinstance(h, str) else int(h) for h in train_phash], dtype=np.uint64)
            q = gen_phash[i]
            dists = np.bitwise_count(bank ^ np.uint64(int(q, 16) if isinstance(q, str) else int(q)))
            j = int(np.argmin(dists))  # the first of the nearest, as before
            row["phash_nearest"], row["phash_distance"] = j, int(dists[j])
        close_to_one = r < ratio and row["similarity"][0] >= min_similarity
        row["flagged"] = close_to_one or (row["phash_distance"] is not None and row["phash_distance"] <= hamming)
        out.append(row)
    return out


def calibrate_replication(train_emb: torch.Tensor, ratio: float = 1 / 3, quantiles=(0.01, 0.05, 0.5)) -> dict:
    """The training set's own leave-one-out nearest-neighbour statistics, to judge the replication thresholds."""
    sims, _ = _two_nearest(train_emb, train_emb, exclude_self=True)
    d1, d2 = 1 - sims[:, 0], 1 - sims[:, 1]
    r = torch.where(d2 > 1e-12, d1 / d2.clamp(min=1e-12), torch.zeros_like(d1)).clamp(min=0)
    q = torch.tensor(quantiles, dtype=torch.float64)
    return {
        "n": len(train_emb),
        "nn_similarity_quantiles": {f"q{x:g}": float(v) for x, v in zip(quantiles, torch.quantile(sims[:, 0], 1 - q))},
        "distance_ratio_quantiles": {f"q{x:g}": float(v) for x, v in zip(quantiles, torch.quantile(r, q))},
        "fraction_below_ratio": float((r < ratio).double().mean()),
        "ratio": ratio,
    }


def calibrated_thresholds(calibration: dict, ratio: float) -> dict:
    """Replication thresholds fitted to the training set's own nearest-neighbour statistics.

    A generation is only as suspicious as it is unusual among the training images themselves: the ratio threshold is
    the smaller of the configured one and the 1% quantile of the training set's leave-one-out ratios, and the
    nearest similarity must reach the training set's median nearest-neighbour similarity."""
    return {"ratio": min(ratio, calibration["distance_ratio_quantiles"]["q0.01"]),
            "min_similarity": calibration["nn_similarity_quantiles"]["q0.5"]}


def prompt_ranks(img_emb: torch.Tensor, prompt_emb: torch.Tensor, own: list[int]) -> torch.Tensor:
    """Rank (1 = best) of each image's own prompt among all prompts, by cosine; ties count in the image's favour.

    `own[i]` is the row of prompt_emb that image i was made from (or is captioned with)."""
    if len(own) != len(img_emb):
        raise ValueError(f"{len(img_emb)} images but {len(own)} own-prompt indices")
    sims = F.normalize(img_emb.double(), dim=-1) @ F.normalize(prompt_emb.double(), dim=-1).T
    mine = sims[torch.arange(len(own)), torch.tensor(own, dtype=torch.long)]
    return (sims > mine[:, None]).sum(dim=1) + 1


def retrieval_accuracy(ranks: torch.Tensor, k: int) -> float:
    """Fraction of images whose own prompt ranks in the top k."""
    return float((ranks <= k).double().mean()) if len(ranks) else 0.0


def paired_difference(a: list[float], b: list[float], z: float = 1.96) -> dict:
    """Mean of the paired differences a_i - b_i with a normal-approximation interval (z = 1.96: 95%), and how often a
    wins (ties count half). The pairs are the same prompt and seed under two models."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a paired comparison needs two equal lists of 2+ values, got {len(a)} and {len(b)}")
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    mean, half = float(d.mean()), z * float(d.std(unbiased=True)) / len(d) ** 0.5
    wins = float(((d > 0).double() + 0.5 * (d == 0).double()).mean())
    return {"pairs": len(d), "mean_difference": mean, "ci_low": mean - half, "ci_high": mean + half,
            "win_rate": wins}
