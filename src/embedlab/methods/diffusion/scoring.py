"""evaluate@diffusion: guided accuracy (evaluator) and FD per arm at its chosen scale; export.

For each arm at the scale train@diffusion chose (by the backbone), and for each sampling
seed in `diffusion.seeds`: `samples_per_class` images per class, scored by the evaluator
(accuracy on the requested class, Fréchet distance to the test split on evaluator
features). The evaluator also scores the sweep's saved samples for the accuracy-vs-scale
plot; it selects nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from embedlab.io import write_json_atomic
from embedlab.params import Params
from embedlab.paths import Paths


def _ms(values) -> tuple[float, float]:
    return round(float(np.mean(values)), 4), round(float(np.std(values)), 4)


def evaluate(params: Params, paths: Paths, evaluator: torch.nn.Module) -> dict:
    from embedlab.evaluation import class_accuracy, predict
    from embedlab.evaluation.fid import frechet_distance
    from embedlab.methods.diffusion.lora import trainable_parameters
    from embedlab.methods.diffusion.method import GUIDED, NAME, Parts, _data, requested_labels

    p = params.diffusion
    model_dir = paths.model_dir(NAME)
    info = json.loads((model_dir / "train.json").read_text())
    parts = Parts.from_stage(params, paths)
    test, _, _ = _data(paths, "test")
    labels = requested_labels(parts.num_classes, p.samples_per_class)
    per_seed: dict = {"guided_accuracy": {}, "fd": {}}
    first_images = {}
    seconds = {}
    for arm in ("unguided",) + GUIDED:
        scale = 0.0 if arm == "unguided" else float(info["scales"][arm]["chosen"])
        accs, fds = [], []
        for seed in p.seeds:
            t0 = time.perf_counter()
            images = parts.sample(arm, labels, scale, seed)
            seconds.setdefault(arm, []).append((time.perf_counter() - t0) / len(labels) * 1000)
            fds.append(frechet_distance(test, images, evaluator))
            if arm != "unguided":
                accs.append(class_accuracy(predict(evaluator, images)[0], labels))
            first_images.setdefault(arm, images)
        per_seed["fd"][arm] = [round(v, 2) for v in fds]
        if accs:
            per_seed["guided_accuracy"][arm] = [round(v, 4) for v in accs]

    backbone_total = sum(q.numel() for q in parts.backbone.parameters())
    ppap_trainable = sum(trainable_parameters(e) for e in parts.ppap.experts)
    metrics = {
        "guided_accuracy": {a: _ms(v)[0] for a, v in per_seed["guided_accuracy"].items()},
        "guided_accuracy_std": {a: _ms(v)[1] for a, v in per_seed["guided_accuracy"].items()},
        "fd": {a: round(float(np.mean(v)), 2) for a, v in per_seed["fd"].items()},
        "fd_std": {a: round(float(np.std(v)), 2) for a, v in per_seed["fd"].items()},
        "scale": {a: info["scales"][a]["chosen"] for a in GUIDED},
        "trainable_params": {"supervised": backbone_total, "ppap": ppap_trainable,
                             "ppap_per_expert": ppap_trainable // len(parts.ppap.experts)},
        "trainable_fraction": {"ppap": round(ppap_trainable / backbone_total, 4),
                               "ppap_per_expert": round(ppap_trainable / len(parts.ppap.experts) / backbone_total, 4)},
        "sampling_seconds_per_1k": {a: round(float(np.mean(v)), 2) for a, v in seconds.items()},
        "ddim_steps": p.ddim_steps,
        "seeds": list(p.seeds),
        "per_seed": per_seed,
        "wall_seconds": info["seconds"],
    }
    metrics["sampling_seconds_per_1k"]["guided"] = metrics["sampling_seconds_per_1k"]["ppap"]
    sweep_rows = _score_sweep(model_dir, info, evaluator, parts.num_classes, p.sweep_per_class)
    metrics["sweep"] = sweep_rows
    write_json_atomic(paths.metrics(NAME), metrics)
    plot_all(paths.plots(NAME), first_images, labels, parts.num_classes, sweep_rows, metrics)
    return metrics


def _score_sweep(model_dir: Path, info: dict, evaluator, num_classes: int, per_class: int) -> dict:
    from embedlab.evaluation import class_accuracy, predict
    from embedlab.methods.diffusion.method import requested_labels

    labels = requested_labels(num_classes, per_class)
    out = {}
    for arm, entry in info["scales"].items():
        rows = []
        for row in entry["sweep"]:
            images = torch.from_numpy(np.load(model_dir / f"sweep_{arm}_{row['scale']:g}.npy")).float() / 127.5 - 1
            rows.append({**row, "evaluator_accuracy": round(class_accuracy(predict(evaluator, images)[0], labels), 4)})
        out[arm] = {"chosen": entry["chosen"], "rows": rows}
    return out


def plot_all(out: Path, images: dict, labels: torch.Tensor, num_classes: int, sweep: dict, metrics: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from embedlab.evaluation.grids import class_grid, save_grid

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


# ---- registry --------------------------------------------------------------------------------

class UnguidedSampler(torch.nn.Module):
    """The published program: deterministic DDIM with the unconditional EMA DDPM, x_T -> x_0.
    Guided sampling needs gradients of a classifier, which a torch.export program cannot take:
    the bundle carries the parts (`load_bundle`)."""

    def __init__(self, unet, schedule, steps: int):
        super().__init__()
        from embedlab.methods.diffusion.schedule import ddim_timesteps

        self.unet = unet.eval()
        times = ddim_timesteps(schedule.T, steps)
        self.times = times
        ab = schedule.alphabar.float()
        self.register_buffer("a_now", torch.stack([ab[t] for t in times]))
        self.register_buffer("a_next", torch.stack([ab[t] for t in times[1:]] + [torch.tensor(1.0)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, t in enumerate(self.times):
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            eps = self.unet(x, tt)
            a = self.a_now[i]
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            x = x0 if i + 1 == len(self.times) else self.a_next[i].sqrt() * x0 + (1 - self.a_next[i]).sqrt() * eps
        return x.clamp(-1, 1)


def export(params: Params, paths: Paths):
    from embedlab.methods.diffusion.method import NAME, Parts
    from embedlab.registry import ModelBundle

    model_dir = paths.model_dir(NAME)
    parts = Parts.from_stage(params, paths)
    metrics = json.loads(paths.metrics(NAME).read_text())
    program = UnguidedSampler(parts.uncond, parts.schedule, params.diffusion.ddim_steps)
    s = parts.image_size
    example = torch.randn(2, 1, s, s, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float32)
    import atexit
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="embedlab-diffusion-bundle-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    config = {"diffusion": params.diffusion.model_dump(), "scales": metrics["scale"], "image_size": s,
              "backbone": json.loads((paths.model_dir("backbone") / "config.json").read_text())}
    (scratch / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    files = [scratch / "config.json"] + [model_dir / f for f in ("ddpm_uncond.pt", "ddpm_cond.pt", "experts.pt", "supervised.pt")]
    shutil.copy(paths.model_dir("backbone") / "model.safetensors", scratch / "backbone.safetensors")
    files.append(scratch / "backbone.safetensors")
    return ModelBundle(module=program, input_example=example, primary_metric="guided_accuracy.ppap",
                       metrics=metrics, params=params.diffusion.model_dump(), artifacts=files)


def load_bundle(bundle_dir: Path, device="cpu"):
    """A downloaded `embedlab-diffusion` bundle -> the `Parts` that sample every arm:
    `parts.sample("ppap", labels, parts_scale, seed)` with the scale from config["scales"]."""
    from embedlab.classifier import build_classifier
    from embedlab.io import load_weights
    from embedlab.methods.diffusion.method import Parts
    from embedlab.params import DiffusionParams

    bundle_dir = Path(bundle_dir)
    config = json.loads((bundle_dir / "config.json").read_text())
    backbone = build_classifier(config["backbone"]["arch"], **config["backbone"]["kwargs"])
    backbone = load_weights(backbone, bundle_dir / "backbone.safetensors", device).requires_grad_(False)
    parts = Parts(DiffusionParams(**config["diffusion"]), bundle_dir, backbone, config["image_size"], device)
    parts.scales = config["scales"]
    return parts
