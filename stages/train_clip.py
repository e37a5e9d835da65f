"""train_clip stage: two CLIPs on the licensed image-caption pairs of the training split. The first (models/clip) is
the generator's text encoder and the similarity model; the second (models/evaluator), the same model trained with
another seed, scores the generator, so the judge is not the text encoder it judges. With a local pretrained
checkpoint named in params.yaml (train_clip.pretrained, declared under components), that one model is both: it is
saved with its own open_clip config, and the sha256 of its weights is recorded (atelier/components.py)."""

from __future__ import annotations

import time

import pandas as pd

from atelier import checkpoint, components, paths
from atelier.config import load_params
from atelier.dataset import labels, load_images, split
from atelier.figures import write_curve
from atelier.io import atomic_dir, write_json
from atelier.models.clip import clip_config, load_clip, save_clip_bundle, train_clip, zero_shot


def holdout_accuracy(model, tokenizer, holdout: pd.DataFrame) -> dict:
    """Zero-shot style and palette accuracy on held-out real images whose captions name both."""
    named = holdout[holdout["caption"].map(labels).notna()]
    if named.empty:
        return {"holdout_images": 0}
    images = load_images(named)
    styles, palettes = zip(*named["caption"].map(labels))
    return {
        "holdout_images": len(named),
        "holdout_style_accuracy": zero_shot(model, tokenizer, images, list(styles), "style")[0],
        "holdout_palette_accuracy": zero_shot(model, tokenizer, images, list(palettes), "palette")[0],
    }


def main() -> dict:
    """Train (or load) the text encoder and the evaluator; save models/clip and models/evaluator; report both."""
    params = load_params()
    p, resolution = params.train_clip, params.clean.resolution
    records = pd.read_parquet(paths.TRAIN_RECORDS)
    train, holdout = split(records, p.holdout_fraction)  # both CLIPs see the training split only
    start = time.time()
    curve: list[float] = []
    resumables = []
    pretrained = {}
    if p.pretrained:  # refused unless made for clean.resolution and its tensors fit its config
        model, _ = load_clip(components.local_path(p.pretrained), resolution)
        config = clip_config(components.local_path(p.pretrained))
        evaluator, source, evaluator_source = model, "pretrained", "same as text encoder (pretrained)"
        pretrained = {"pretrained_weights_sha256": components.weights_sha256(p.pretrained)}
    else:
        # Each loop has its own checkpoint folder: a killed run resumes both, the finished one at its last step.
        resumables = [
            checkpoint.for_stage("train_clip"),
            checkpoint.Checkpointer(
                paths.CHECKPOINTS / "train_clip.evaluator", checkpoint.stage_key("train_clip"), "train_clip evaluator"
            ),
        ]
        images, captions = load_images(train), list(train["caption"])
        model = train_clip(
            images, captions, p, on_step=lambda step, m: curve.append(m["clip_loss"]), checkpoint=resumables[0]
        )
        evaluator = train_clip(
            images, captions, p.model_copy(update={"seed": p.evaluator_seed}), checkpoint=resumables[1]
        )
        source, evaluator_source = "trained", f"trained separately (train_clip.evaluator_seed {p.evaluator_seed})"
        config = p  # the bundle's model_cfg is built from these params
    with atomic_dir(paths.CLIP_DIR) as tmp:
        sha256 = save_clip_bundle(model, config, tmp)
    with atomic_dir(paths.EVALUATOR_DIR) as tmp:
        evaluator_sha256 = save_clip_bundle(evaluator, config, tmp)
    model, tokenizer = load_clip(paths.CLIP_DIR)
    evaluator, evaluator_tokenizer = load_clip(paths.EVALUATOR_DIR)
    seconds = round(time.time() - start, 1)
    # No wall-clock time in clip.json: DVC tracks it, and two runs of the same code and data must hash alike.
    summary = {
        "source": source,
        **pretrained,
        "weights_sha256": sha256,
        "train_images": len(train),
        "steps": len(curve),
        **holdout_accuracy(model, tokenizer, holdout),
        "evaluator": evaluator_source,
        "evaluator_weights_sha256": evaluator_sha256,
        **{
            f"evaluator_{k}": v
            for k, v in holdout_accuracy(evaluator, evaluator_tokenizer, holdout).items()
            if k != "holdout_images"
        },
    }
    write_curve(paths.TRAIN_CURVES / "clip.csv", "clip_loss", curve)
    write_json(paths.REPORTS / "clip.json", summary)
    write_json(paths.TIMINGS / "train_clip.json", {"seconds": seconds})  # git- and DVC-untracked
    for resumable in resumables:
        resumable.clear()  # every output is written: nothing left to resume
    print(f"train_clip: {summary}; {seconds} s")
    return summary


if __name__ == "__main__":
    main()
