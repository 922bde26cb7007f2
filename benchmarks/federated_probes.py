"""The val-only probes behind the federated settings (docs/methods/federated.md).

Every number here is a final-round **val** accuracy (mean over the clients), averaged over the
selection seeds 100-102 that the scored runs never use; the test split is never read. Three
groups:

- `regime`: FedBN's room (FedBN - FedAvg, FedBN - local) at 30 images per client for the
  feature-shift regimes considered before the default was chosen.
- `fraug_deviations`: FRAug as released with one of its deviations removed, each beside FedBN
  under the same training configuration: the released 512-d embedding, and the released
  classifier optimiser (SGD lr 0.01, momentum 0.5, no weight decay).
- `label_skew`: central - FedAvg over the vq embeddings for the label-skew schedules considered
  (rounds x local steps) at both alphas.

Needs the prepared data and models/tokenizer (`embedlab pretrain tokenizer`). On 2 cores, about 10 min:

    .venv/bin/python benchmarks/federated_probes.py    # -> benchmarks/results/federated_probes.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (100, 101, 102)
FIVE = ["original", "synth", "mnistm", "svhn", "usps"]
REGIMES = {  # name: (domains, local steps)
    "five domains, 10 steps": (FIVE, 10),
    "+ inverted, 10 steps": (FIVE + ["inverted"], 10),
    "+ inverted, 20 steps (default)": (FIVE + ["inverted"], 20),
    "+ inverted + contrast, 10 steps": (FIVE + ["inverted", "contrast"], 10),
}
SIX = FIVE + ["inverted"]
DEVIATIONS = {  # name: (embedding_dim, lr, momentum, weight decay, lambda_FT values)
    "released 512-d embedding (lr 0.1)": (512, 0.1, 0.9, 5e-4, (10.0, 1.0)),
    "released classifier optimiser (lr 0.01, momentum 0.5, no decay)": (64, 0.01, 0.5, 0.0, (10.0, 1.0)),
}
SCHEDULES = ((50, 100), (10, 100))  # label skew: (rounds, local steps)


def feature_shift_job(domains: list[str], algorithm: str, seed: int, steps: int, emb: int, lr: float,
                      momentum: float, wd: float, lambda_r: float) -> float:
    import torch

    from embedlab.data.partition import feature_shift
    from embedlab.data.prepare import read_prepared
    from embedlab.methods.federated.clients import feature_shift_clients
    from embedlab.methods.federated.engine import RunConfig, simulate
    from embedlab.methods.federated.params import FRAugParams
    from embedlab.params import load_params

    torch.set_num_threads(1)
    params = load_params(ROOT / "params.yaml")
    part = params.partition.model_copy(update={"feature_shift": params.partition.feature_shift.model_copy(
        update={"domains": domains})})
    arrays = feature_shift(read_prepared(ROOT / "data/prepared"), part)
    fs = params.federated.feature_shift
    clients = feature_shift_clients(arrays, 30, seed, "val", ROOT / "data/partitions/feature_shift.npz")
    cfg = RunConfig(algorithm=algorithm, seed=seed, rounds=fs.rounds, local_steps=steps, batch_size=fs.batch_size,
                    lr=lr, momentum=momentum, weight_decay=wd,
                    fraug=FRAugParams(lambda_r=lambda_r).model_dump() if algorithm == "fraug" else None,
                    model={"kind": "cnn", "image_size": int(arrays["train_images"].shape[-1]), "num_classes": 10,
                           "width": fs.width, "embedding_dim": emb})
    return float(np.mean(simulate(clients, cfg)["final_eval_acc"]))


def label_skew_job(alpha: float, algorithm: str, seed: int, rounds: int, steps: int) -> float:
    import torch

    from embedlab.data.partition import label_skew
    from embedlab.data.prepare import read_prepared
    from embedlab.embedders import build_embedding
    from embedlab.methods.federated.clients import Embedder, pooled
    from embedlab.methods.federated.engine import ClientData, RunConfig, simulate
    from embedlab.params import load_params

    torch.set_num_threads(1)
    params = load_params(ROOT / "params.yaml")
    part = params.partition.model_copy(update={"seed": seed})  # a split per selection seed
    arrays = label_skew(read_prepared(ROOT / "data/prepared"), part, alpha=alpha)
    folder = ROOT / "models/tokenizer"
    embed = Embedder(build_embedding("vq", json.loads((folder / "config.json").read_text()),
                                     folder / "tokenizer.safetensors"), torch.nn.Identity())
    train, val = embed(arrays["train_images"]), embed(arrays["val_images"])
    clients = [ClientData(str(name), train[arrays["train_client"] == k],
                          torch.from_numpy(arrays["train_labels"][arrays["train_client"] == k]),
                          val, torch.from_numpy(arrays["val_labels"]))  # every client scores the whole val split
               for k, name in enumerate(arrays["client_names"])]
    if algorithm == "central":
        clients = [pooled(clients)]
        clients[0].x_eval, clients[0].y_eval = val, torch.from_numpy(arrays["val_labels"])
    ls = params.federated.label_skew
    cfg = RunConfig(algorithm="fedavg", seed=seed, rounds=rounds, local_steps=steps, batch_size=ls.batch_size,
                    lr=ls.lr, momentum=ls.momentum, weight_decay=ls.weight_decay,
                    model={"kind": "head", "embedding_dim": int(train.shape[1]), "num_classes": 10})
    return float(np.mean(simulate(clients, cfg)["final_eval_acc"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/federated_probes.json")
    args = parser.parse_args()
    from tqdm.auto import tqdm

    from embedlab.jobs import run_all

    jobs: dict[tuple, tuple] = {}
    fs_lr = 0.05  # the default lr the regimes were compared at, before tuning
    for name, (domains, steps) in REGIMES.items():
        for algo in ("local", "fedavg", "fedbn"):
            for s in SEEDS:
                jobs[("regime", name, algo, s)] = (feature_shift_job, (domains, algo, s, steps, 64, fs_lr, 0.9, 5e-4, 1.0))
    for name, (emb, lr, mom, wd, lambdas) in DEVIATIONS.items():
        for s in SEEDS:
            jobs[("fraug_deviations", name, "fedbn", s)] = (feature_shift_job, (SIX, "fedbn", s, 20, emb, lr, mom, wd, 1.0))
            for lam in lambdas:
                jobs[("fraug_deviations", name, f"fraug lambda_FT {lam:g}", s)] = (
                    feature_shift_job, (SIX, "fraug", s, 20, emb, lr, mom, wd, lam))
    for rounds, steps in SCHEDULES:
        for alpha in (0.05, 0.1):
            for algo in ("central", "fedavg"):
                for s in SEEDS:
                    jobs[("label_skew", f"{rounds} rounds x {steps} steps, alpha {alpha:g}", algo, s)] = (
                        label_skew_job, (alpha, algo, s, rounds, steps))
    keys = list(jobs)
    start = time.perf_counter()
    bar = tqdm(total=len(keys), desc="federated probes", unit="run")
    values = run_all(_call, [jobs[k] for k in keys], args.workers, bar=bar)
    bar.close()
    out: dict = {"seeds": list(SEEDS), "split": "val", "size": 30, "wall_seconds": round(time.perf_counter() - start, 1)}
    for (group, name, algo, _), v in zip(keys, values):
        out.setdefault(group, {}).setdefault(name, {}).setdefault(algo, []).append(round(v, 4))
    for group in ("regime", "fraug_deviations", "label_skew"):
        for name, arms in out[group].items():
            mean = {a: round(float(np.mean(v)), 4) for a, v in arms.items()}
            out[group][name] = {"mean": mean, "per_seed": arms}
            if group == "regime":
                out[group][name]["room"] = {"fedbn-fedavg": round(mean["fedbn"] - mean["fedavg"], 4),
                                            "fedbn-local": round(mean["fedbn"] - mean["local"], 4)}
            if group == "label_skew":
                out[group][name]["room"] = {"central-fedavg": round(mean["central"] - mean["fedavg"], 4)}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({g: {n: v["mean"] for n, v in out[g].items()} for g in ("regime", "fraug_deviations", "label_skew")},
                     indent=1))


def _call(fn, job_args):
    return fn(*job_args)


if __name__ == "__main__":
    main()
