"""plots/vq/: reconstructions per depth, samples per class, PSNR and sampling time vs depth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from embedlab.evaluation.grids import class_grid, save_grid


def _line_png(frame: pd.DataFrame, x: str, ys: list[str], path: Path, ylabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for y in ys:
        ax.plot(frame[x], frame[y], marker="o", label=y)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xticks(frame[x])
    if len(ys) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(out: Path, test_x: torch.Tensor, recon: dict[int, torch.Tensor], samples: dict[str, torch.Tensor],
                labels: torch.Tensor, metrics: dict, num_classes: int, per_row: int = 10) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Row 0: the originals; then one row per decoding depth, same images.
    rows = [test_x[:per_row]] + [recon[d][:per_row] for d in sorted(recon)]
    save_grid(torch.cat(rows).numpy(), out / "reconstructions.png", per_row=per_row)
    for kind, images in samples.items():
        grid = class_grid(images.numpy(), labels.numpy(), num_classes, per_class=per_row)
        save_grid(grid, out / f"samples_{kind}.png", per_row=per_row)

    depth_psnr = pd.DataFrame(
        [{"depth": int(k[1:]), "psnr": v["value"], "lo": v["lo"], "hi": v["hi"]} for k, v in metrics["psnr"].items()]
    ).sort_values("depth")
    depth_psnr.to_csv(out / "psnr_vs_depth.csv", index=False)
    _line_png(depth_psnr, "depth", ["psnr"], out / "psnr_vs_depth.png", "PSNR (dB), test split (the one tokenizer)",
              "Reconstruction vs RVQ depth")

    timing = metrics["sampling_seconds"]
    depths = sorted(int(k[1:]) for k in timing["resgen"] if k.startswith("d"))
    frame = pd.DataFrame({"depth": depths, **{kind: [timing[kind][f"d{d}"] for d in depths] for kind in ("resgen", "ar")}})
    frame.to_csv(out / "sampling_time_vs_depth.csv", index=False)
    _line_png(frame, "depth", ["resgen", "ar"], out / "sampling_time_vs_depth.png",
              "seconds per 1,000 samples", "Sampling time vs RVQ depth")
