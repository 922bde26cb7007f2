"""plots/federated/: accuracy per round and per client (written by evaluate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedlab.params import Params


def plot_all(out: Path, curves, per_client, metrics: dict, fs, settings: dict, params: Params) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    groups = [("feature_shift", fs.samples_per_client, f"feature shift, {fs.samples_per_client} per client")]
    groups += [(s, 0, f"label skew, alpha {a:g}") for s, a in settings.items()]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.6), squeeze=False)
    for ax, (setting, size, title) in zip(axes[0], groups):
        for algo, runs in curves[(setting, size)].items():
            mean = np.mean(runs, axis=0)
            ax.plot(np.arange(1, len(mean) + 1), mean, label=algo)
            rows += [{"setting": setting, "size": size, "algorithm": algo, "round": i + 1, "val_accuracy": round(float(v), 4)}
                     for i, v in enumerate(mean)]
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.set_ylabel("val accuracy (mean over clients and seeds)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_round.png", dpi=110)
    plt.close(fig)
    pd.DataFrame(rows).to_csv(out / "accuracy_vs_round.csv", index=False)

    bars = [("feature_shift", metrics["feature_shift"]["per_client"]), ("label_skew", metrics["label_skew"]["per_client"])]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    crow = []
    for ax, (setting, table) in zip(axes, bars):
        algos = list(table)
        names = list(next(iter(table.values())))
        width = 0.8 / max(1, len(algos))
        for i, algo in enumerate(algos):
            vals = [table[algo][n] for n in names]
            ax.bar(np.arange(len(names)) + i * width, vals, width, label=algo)
            crow += [{"setting": setting, "algorithm": algo, "client": n, "test_accuracy": v} for n, v in zip(names, vals)]
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{setting}: test accuracy per client (mean over seeds)")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "per_client_accuracy.png", dpi=110)
    plt.close(fig)
    pd.DataFrame(crow).to_csv(out / "per_client_accuracy.csv", index=False)
