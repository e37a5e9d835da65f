"""Toy parameters shared by the tests: tiny models that train in a second, a gate with the default rules and the
figures that pass it, and params that let any toy model through the gate (so that generation is reached)."""

from __future__ import annotations

from atelier.config import AutoencoderParams, ClipParams, DiffusionParams, PromoteParams

TINY_CLIP = ClipParams(
    seed=0,
    embed_dim=16,
    image_width=32,
    image_layers=1,
    patch_size=8,
    text_width=32,
    text_layers=1,
    context_length=16,
    steps=3,
    batch_size=8,
    lr=1e-3,
    weight_decay=0.1,
    holdout_fraction=0.1,
)
TINY_AE = AutoencoderParams(seed=0, steps=2, batch_size=8, lr=1e-3, kl_weight=1e-6)
TINY_DIFFUSION = DiffusionParams(
    seed=0,
    steps=3,
    batch_size=8,
    lr=1e-3,
    warmup_steps=1,
    caption_dropout=0.1,
    min_snr_gamma=5.0,
    ema_decay=0.99,
    prediction_type="epsilon",
    offset_noise=0.0,
    pooled_scale=8.0,
)

GATE = PromoteParams(
    min_retrieval_fraction=0.5,
    min_clip_score_fraction=0.7,
    max_cmmd_multiple=4.0,
    max_replication_rate=0.05,
    champion_max_drop=0.05,
)
PASSING = {  # figures that pass GATE
    "clip_score": 0.6,
    "real_clip_score": 0.7,
    "retrieval_top1": 0.4,
    "real_retrieval_top1": 0.6,
    "chance_top1": 0.05,
    "cmmd": 0.3,
    "cmmd_baseline": 0.1,
    "replication_rate": 0.0,
}

STRONG = {  # a registered version's evaluation figures that pass the default gate by a wide margin
    "clip_score": 1.0,
    "real_clip_score": 1.0,
    "retrieval_top1": 0.9,
    "real_retrieval_top1": 0.9,
    "chance_top1": 0.1,
    "cmmd": 1.0,
    "cmmd_baseline": 1.0,
    "replication_rate": 0.0,
}

# params.yaml `promote` that passes any toy model: the pipeline tests test generation, not the gate's bar
GATE_OPEN = {
    "min_retrieval_fraction": 0.0,
    "min_clip_score_fraction": 0.0,
    "max_cmmd_multiple": 1e9,
    "max_replication_rate": 1.0,
    "champion_max_drop": 10.0,
    "judge_evaluator": False,  # a toy evaluator may be at chance: these builds test the plumbing, not merit
}
