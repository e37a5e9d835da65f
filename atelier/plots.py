"""Plots people would rather look at than read: training loss, license breakdown, CLIPScore distribution."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def _smooth(values: list[float], window: int = 25) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_training_curves(curves: dict[str, list[float]], path: Path) -> None:
    """One panel per loss curve (raw and smoothed), x = optimisation step."""
    names = [n for n, v in curves.items() if v]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), dpi=100, squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.plot(curves[name], color="#bbbbbb", linewidth=0.7, label="per step")
        ax.plot(_smooth(curves[name]), color="#c0392b", linewidth=1.5, label="moving mean (25)")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    _save(fig, path)


def plot_license_breakdown(per_license: dict[str, int], excluded: dict[str, int], path: Path) -> None:
    """Horizontal bars: training records per license, and excluded records per reason."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5), dpi=100)
    left.barh(list(per_license), list(per_license.values()), color="#2e86c1")
    left.set_title("training records per license")
    right.barh(list(excluded) or ["(none)"], list(excluded.values()) or [0], color="#7f8c8d")
    right.set_title("excluded records per reason")
    for ax in (left, right):
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    _save(fig, path)


def plot_clip_scores(generated: list[float], real: list[float], path: Path) -> None:
    """Histogram of per-image CLIPScore, generated against held-out real images."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.hist(real, bins=20, alpha=0.6, label="held-out real", color="#777777")
    ax.hist(generated, bins=20, alpha=0.6, label="generated", color="#c0392b")
    ax.set_xlabel("CLIPScore (2.5 * max(cos, 0), evaluator CLIP)")
    ax.set_ylabel("images")
    ax.legend()
    _save(fig, path)
