"""UNet training throughput: atelier's train_unet (min-SNR weights, EMA, grad clipping, LR schedule, checkpoints)
against a bare diffusers training loop on the same model, data and batch size (the loop of diffusers'
train_text_to_image example: noise, add_noise, forward, MSE, backward, clip, step). Runs on the CPU, untrained
CLIP conditioning and random latents: the speed of a step does not depend on what the data shows. 100 steps: one
checkpoint period, so the checkpoint's cost counts as much as it does in a real run."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from atelier import checkpoint as ckpt
from atelier.config import load_params
from atelier.models.clip import build_clip, build_tokenizer
from atelier.models.latent_diffusion import build_scheduler, build_unet, caption_conditioning, train_unet

N, STEPS, ROUNDS = 512, int(os.environ.get("ATELIER_BENCH_TRAIN_STEPS", 100)), 3


def bare_loop(latents, captions, clip, tokenizer, p) -> None:
    torch.manual_seed(p.seed)
    distinct, states, pooled = caption_conditioning(clip, tokenizer, captions)
    cap_index = torch.tensor([distinct.index(c) for c in captions])
    unet, sched = build_unet(states.shape[-1], pooled.shape[-1], latents.shape[-1]), build_scheduler(p)
    opt = torch.optim.AdamW(unet.parameters(), lr=p.lr)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    unet.train()
    for _ in range(STEPS):
        idx = torch.randint(0, len(latents), (p.batch_size,))
        x0, noise = latents[idx], torch.randn(p.batch_size, *latents.shape[1:])
        t = torch.randint(0, 1000, (p.batch_size,))
        cond = cap_index[idx]
        pred = unet(
            sched.add_noise(x0, noise, t), t, encoder_hidden_states=states[cond], class_labels=pooled[cond]
        ).sample
        loss = F.mse_loss(pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        opt.zero_grad(set_to_none=True)


def main() -> dict:
    params = load_params()
    p = params.train_diffusion.model_copy(update={"steps": STEPS})
    torch.manual_seed(0)
    clip, tokenizer = (
        build_clip(params.train_clip, params.clean.resolution),
        build_tokenizer(params.train_clip.context_length),
    )
    latents = torch.randn(N, 4, 8, 8)
    captions = [
        f"a {c} {s} composition"
        for c, s in zip(
            ["red", "blue", "green", "golden"] * (N // 4), ["grid", "spiral", "stripes", "sunset landscape"] * (N // 4)
        )
    ]
    ours, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ROUNDS):  # interleaved, best of ROUNDS: neither side gets the warm caches
            start = time.perf_counter()
            bare_loop(latents, captions, clip, tokenizer, p)
            bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            # as the stage does; a fresh folder each round, or the second would resume the first's final checkpoint
            checkpointer = ckpt.Checkpointer(Path(tmp) / f"ckpt-{round_}", key="bench", label="bench")
            train_unet(latents, captions, clip, tokenizer, p, checkpoint=checkpointer)
            ours.append(time.perf_counter() - start)
    rate = lambda seconds: STEPS * p.batch_size / min(seconds)  # noqa: E731
    paired = [b / o for b, o in zip(bare, ours)]  # each round's ratio: the spread the machine's noise gives
    print(
        f"train_unet: {rate(ours):,.0f} samples/s; bare diffusers loop: {rate(bare):,.0f} samples/s; "
        f"ratio {rate(ours) / rate(bare):.2f} (batch {p.batch_size}, {STEPS} steps, best of {ROUNDS}); "
        f"per round: {' / '.join(f'{r:.2f}' for r in paired)} "
        f"({' / '.join(f'{o:.1f} s vs {b:.1f} s' for o, b in zip(ours, bare))})"
    )
    return {"atelier": rate(ours), "baseline": rate(bare), "ratio": rate(ours) / rate(bare), "round_ratios": paired}


if __name__ == "__main__":
    main()
