"""plots/gan/: samples over the true 2-D modes, sample grids per arm, loss curves, the stacked
mode histogram (where stacked digits ran) and modes covered per benchmark (first seed for
pictures, all seeds for bars)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedlab.evaluation.grids import save_grid
from embedlab.methods.gan.parts import curves_bench


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: list[float], window: int = 10) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def scatter(points: dict[str, torch.Tensor], centres: torch.Tensor, std: float, path: Path, title: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(points), figsize=(2.6 * len(points), 2.9), squeeze=False)
    span = float(centres.abs().max()) + 1.0
    for ax, (arm, pts) in zip(axes[0], points.items()):
        pts = pts[:1500].numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.35, color="tab:blue", label="samples")
        for cx, cy in centres.numpy():
            ax.add_patch(plt.Circle((cx, cy), 3 * std, fill=False, color="tab:red", lw=0.8))
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_aspect("equal")
        ax.set_title(arm, fontsize=9)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{title}: samples (blue) and 3-std discs of the true modes (red)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def loss_curves(history: dict, bench: str, arms: list[str], seed: int, every: int, out: Path) -> None:
    rows = []
    for arm in arms:
        run = history["runs"].get(f"{bench}/{arm}/seed{seed}")
        if run is None:
            continue
        for i, (d, g) in enumerate(zip(run["d_loss"], run["g_loss"])):
            rows.append({"step": i * every, "arm": arm, "d_loss": d, "g_loss": g})
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "losses.csv", index=False)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for arm, part in frame.groupby("arm", sort=False):
        for ax, col in zip(axes, ("d_loss", "g_loss")):
            smooth = _smooth(part[col].tolist())
            ax.plot(part["step"].to_numpy()[len(part) - len(smooth):], smooth, label=arm, lw=1)
    for ax, col in zip(axes, ("discriminator loss", "generator loss")):
        ax.set_xlabel("generator update")
        ax.set_title(f"{col}, {bench} (seed {seed})", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "losses.png", dpi=110)
    plt.close(fig)


def mode_histogram(hists: dict[str, np.ndarray], out: Path) -> None:
    """Mode counts sorted high to low, one line per arm: a flat line at n / modes is no collapse."""
    modes = len(next(iter(hists.values())))
    frame = pd.DataFrame({"rank": np.arange(1, modes + 1), **{arm: np.sort(h)[::-1] for arm, h in hists.items()}})
    frame.to_csv(out / "stacked_mode_histogram.csv", index=False)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for arm in hists:
        ax.plot(frame["rank"], frame[arm], label=arm, lw=1)
    ax.set_yscale("symlog")
    ax.set_xlabel(f"mode rank ({modes:,} stacked modes)")
    ax.set_ylabel("samples in mode")
    ax.set_title("Stacked digits, weakened D: confident mode histogram (first seed)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "stacked_mode_histogram.png", dpi=110)
    plt.close(fig)


def modes_bars(metrics: dict, out: Path) -> None:
    """Confident modes covered per arm (mean over seeds, 95% interval), beside the real ceiling
    and the untrained floor."""
    rows = []
    for bench in ("ring", "grid", "stacked", "stacked_full", "digits"):
        tables = [metrics.get(bench, {}), metrics.get("ablation", {}).get(bench, {})]
        for table in tables:
            for arm, entry in table.get("modes_covered", {}).items():
                value = entry["value"] if isinstance(entry, dict) else entry
                lo = entry.get("lo") if isinstance(entry, dict) else None
                hi = entry.get("hi") if isinstance(entry, dict) else None
                rows.append({"benchmark": bench, "arm": arm, "modes_covered": value,
                             "lo": value if lo is None else lo, "hi": value if hi is None else hi})
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "modes_covered.csv", index=False)
    plt = _plt()
    benches = list(dict.fromkeys(frame["benchmark"]))
    fig, axes = plt.subplots(1, len(benches), figsize=(3.2 * len(benches), 3), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        part = frame[frame["benchmark"] == bench]
        colours = ["tab:grey" if a in ("real", "untrained") else "tab:green" for a in part["arm"]]
        err = np.vstack([(part["modes_covered"] - part["lo"]).clip(lower=0), (part["hi"] - part["modes_covered"]).clip(lower=0)])
        ax.bar(part["arm"], part["modes_covered"], yerr=err, color=colours, capsize=2)
        ax.set_title(bench, fontsize=9)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    axes[0][0].set_ylabel("confident modes covered\n(mean over seeds, 95% interval)")
    fig.tight_layout()
    fig.savefig(out / "modes_covered.png", dpi=110)
    plt.close(fig)


def write_plots(out: Path, shown: dict, history: dict, mixtures: dict, metrics: dict) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for bench, (centres, std) in mixtures.items():
        if bench in shown:
            scatter(shown[bench], centres, std, out / f"scatter_{bench}.png", bench)
    for arm, images in shown.get("digits", {}).items():
        save_grid(images.numpy(), out / f"samples_digits_{arm.replace('+', '_')}.png", per_row=10)
    hists = {}
    for bench in ("stacked_weak", "stacked_full"):
        for arm, (images, hist) in shown.get(bench, {}).items():
            save_grid(images.numpy(), out / f"samples_{bench}_{arm.replace('+', '_')}.png", per_row=10)
            if bench == "stacked_weak":
                hists[arm] = hist
    if hists:
        mode_histogram(hists, out)

    bench = curves_bench(history["runs"])
    seeds = [int(k.rsplit("seed", 1)[1]) for k in history["runs"] if k.startswith(f"{bench}/")]
    if seeds:
        arms = list(dict.fromkeys(k.split("/")[1] for k in history["runs"] if k.startswith(f"{bench}/")))
        loss_curves(history, bench, arms, min(seeds), history["curve_every"], out)
    modes_bars(metrics, out)
