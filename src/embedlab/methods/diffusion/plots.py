"""plots/diffusion/: sample grids per arm and the accuracy-vs-scale sweep (written by evaluate)."""

from __future__ import annotations

from pathlib import Path

import torch

from embedlab.evaluation.grids import class_grid, save_grid


def plot_all(out: Path, images: dict, labels: torch.Tensor, num_classes: int, sweep: dict, metrics: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    for arm, imgs in images.items():
        grid = class_grid(imgs.numpy(), labels.numpy(), num_classes, 10)
        save_grid(grid, out / f"samples_{arm}.png", per_row=10)
    rows = [{"arm": arm, **r} for arm, entry in sweep.items() for r in entry["rows"]]
    pd.DataFrame(rows).to_csv(out / "accuracy_vs_scale.csv", index=False)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for arm, entry in sweep.items():
        xs = [r["scale"] for r in entry["rows"]]
        for ax, key in zip(axes, ("evaluator_accuracy", "backbone_accuracy")):
            ax.plot(xs, [r[key] for r in entry["rows"]], marker="o", label=f"{arm} (chosen {entry['chosen']:g})")
    for ax, title in zip(axes, ("evaluator accuracy on the requested class (scores)", "backbone accuracy (selects the scale)")):
        ax.set_xscale("log")
        ax.set_xlabel("guidance scale (cfg: w)")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_scale.png", dpi=110)
    plt.close(fig)
