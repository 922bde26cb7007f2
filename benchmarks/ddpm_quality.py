"""Why were a quarter of the unguided DDPM samples static? Train the default unconditional DDPM
with variants and read DDIM samples with the *backbone* (the evaluator never decides anything).

Each variant trains the pipeline's UNet (16/32/32) on the prepared train split and samples 500
images with DDIM at 20 steps (and, where named, 100 DDIM steps or 1,000 ancestral steps),
x0 clamped or not. The score is the backbone's confident share (top probability >= 0.9; the real
test split reads 0.955) and the high-frequency energy (mean squared Laplacian; real 0.146),
which measures static. Needs models/backbone and data/prepared (`dvc repro reference@backbone`).

    .venv/bin/python benchmarks/ddpm_quality.py baseline          # ~20 min: 1,500 / 3,000 / 6,000 steps
    .venv/bin/python benchmarks/ddpm_quality.py cosine lr_decay min_snr5 wide_bf16 ...   # one line each, ~10-15 min

Results: benchmarks/results/ddpm_quality.json (what docs/methods/diffusion.md quotes).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "ddpm_quality.json"
# name: (UNet channels, checkpoints (steps), EMA, precision, lr, Min-SNR gamma, batch, schedule, lr decay, seed)
VARIANTS = {
    "baseline": ((16, 32, 32), (1500, 3000, 6000), 0.995, "32-true", 2e-3, 0.0, 128, "linear", False, 4),
    "cosine": ((16, 32, 32), (3000,), 0.995, "32-true", 2e-3, 0.0, 128, "cosine", False, 4),
    "lr_decay": ((16, 32, 32), (3000,), 0.995, "32-true", 2e-3, 0.0, 128, "linear", True, 4),
    "lr_1e-3": ((16, 32, 32), (1500, 3000), 0.995, "32-true", 1e-3, 0.0, 128, "linear", False, 0),
    "min_snr5": ((16, 32, 32), (1500, 3000), 0.995, "32-true", 2e-3, 5.0, 128, "linear", False, 0),
    "min_snr5_6000": ((16, 32, 32), (3000, 6000), 0.995, "32-true", 2e-3, 5.0, 128, "linear", False, 0),
    "min_snr5_batch64": ((16, 32, 32), (3000, 6000), 0.995, "32-true", 2e-3, 5.0, 64, "linear", False, 0),
    "bf16_ema999": ((16, 32, 32), (3000, 6000), 0.999, "bf16-mixed", 2e-3, 0.0, 128, "linear", False, 0),
    "wide_bf16": ((32, 64, 64), (1500, 3000), 0.995, "bf16-mixed", 2e-3, 0.0, 128, "linear", False, 0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)

    import lightning as L

    from embedlab.classifiers.nets import load_classifier
    from embedlab.data.prepare import read_prepared
    from embedlab.evaluation import predict
    from embedlab.methods.diffusion import models
    from embedlab.methods.diffusion.schedule import Schedule, ddim_sample
    from embedlab.methods.diffusion.unet import UNet
    from embedlab.paths import Paths

    paths = Paths(REPO)
    data = read_prepared(paths.prepared)
    x, y = (torch.as_tensor(a) for a in data.split("train"))
    test = torch.as_tensor(data.split("test")[0])
    backbone = load_classifier(paths.model_dir("backbone"))

    def read(images):
        probs = predict(backbone, images)[0]
        lap = 4 * images[:, :, 1:-1, 1:-1] - images[:, :, :-2, 1:-1] - images[:, :, 2:, 1:-1] \
            - images[:, :, 1:-1, :-2] - images[:, :, 1:-1, 2:]
        return {"confident_share": round(float((probs.max(1).values >= 0.9).float().mean()), 3),
                "high_frequency": round(float(lap.pow(2).mean()), 3)}

    def ancestral(net, schedule, n=200, seed=0):
        gen = torch.Generator().manual_seed(seed)
        xt = torch.randn(n, 1, 16, 16, generator=gen)
        for t in reversed(range(schedule.T)):
            tt = torch.full((n,), t, dtype=torch.long)
            with torch.no_grad():
                x0 = schedule.predict_x0(xt, tt, net(xt, tt)).clamp(-1, 1)
            if t == 0:
                return x0
            mean, var = schedule.posterior(x0, xt, tt)
            xt = mean + var.sqrt() * torch.randn(xt.shape, generator=gen)

    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results["real_test"] = read(test)
    for name in args.variants:
        channels, checkpoints, ema, precision, lr, gamma, batch, kind, decay, seed = VARIANTS[name]
        schedule = Schedule(1000, kind)
        torch.manual_seed(seed)
        module = models.ddpm_module(UNet(channels), schedule, lr, ema, 0.1, max(checkpoints), decay, gamma)
        saved = {}

        class Snapshot(L.Callback):
            def __init__(self, steps, saved):
                self.steps, self.saved = steps, saved

            def on_train_batch_end(self, trainer, pl_module, *_):
                if trainer.global_step in self.steps:
                    self.saved[trainer.global_step] = copy.deepcopy(pl_module.ema).eval()

        start = time.perf_counter()
        L.Trainer(max_steps=max(checkpoints), max_epochs=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, accelerator="cpu", precision=precision, callbacks=[Snapshot(checkpoints, saved)],
                  deterministic=True).fit(
            module, train_dataloaders=models._Steps(x, y, batch_size=batch, steps=max(checkpoints), seed=seed))
        row = {"spec": {"channels": channels, "ema": ema, "precision": precision, "lr": lr, "min_snr_gamma": gamma,
                        "batch": batch, "schedule": kind, "lr_decay": decay, "seed": seed},
               "train_seconds": round(time.perf_counter() - start)}
        for steps, net in saved.items():
            sampled = {}
            for clip in (False, True):
                for k in (20, 100) if name == "baseline" else (20,):
                    images = ddim_sample(net, schedule, (500, 1, 16, 16), k, generator=torch.Generator().manual_seed(0),
                                         clip=clip)
                    sampled[f"ddim{k}_{'clamped' if clip else 'unclamped'}"] = read(images)
            if name == "baseline":
                sampled["ancestral1000"] = read(ancestral(net, schedule))
            row[str(steps)] = sampled
        results[name] = row
        print(name, json.dumps(row), flush=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
