"""train@federated: every (setting, algorithm, size or alpha, seed) run of the simulation.

Runs (the clients come from the partition stage; see clients.py):
  feature_shift   CNN on pixels, 5 domain clients: local, fedavg, fedprox, fedbn, fraug, at
                  each size in `feature_shift.sizes`; and GGEUR's multi-domain variant beside
                  FedAvg on a linear head over the frozen backbone's embeddings
                  (`fedavg_head`, `ggeur`).
  label_skew      linear head on the frozen backbone's embeddings, Dirichlet clients, at the
                  default alpha and each extra one: fedavg, fedavg_ggeur, fedprox, fedprox_ggeur.

Training only ever looks at the val split (the per-round curves); the test split is read by
evaluate@federated alone. Runs go to `workers` spawned processes (one thread each); every run
is deterministic for its seed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from embedlab.io import save_tensors, write_json_atomic
from embedlab.methods.federated.runs import (
    NAME,
    PRIMARY_METRIC,
    Job,
    job_clients,
    planned_jobs,
    run_config,
)
from embedlab.methods.federated.scoring import evaluate, export, load_bundle
from embedlab.params import Params
from embedlab.paths import Paths

# The method interface (methods/base.py): this module trains; scoring.py evaluates and exports.
name = NAME
primary_metric = PRIMARY_METRIC
needs_evaluator = False  # these models classify for themselves, scored on test labels
__all__ = ["name", "primary_metric", "needs_evaluator", "train", "evaluate", "export", "load_bundle"]


def run_job(job: Job, params: Params, root: Path, num_classes: int, image_size: int, progress: bool = False) -> dict:
    """One run, scored on the val split each round. `progress`: a bar over its rounds."""
    from embedlab.methods.federated.engine import simulate
    from embedlab.training import resolve_device

    clients, stats_bytes = job_clients(params, root, job, "val", num_classes)
    cfg = run_config(params, job, num_classes, image_size)
    if cfg.model["kind"] == "head":
        cfg = replace(cfg, model={**cfg.model, "embedding_dim": int(clients[0].x_train.shape[1])})
    # On a GPU every run goes there (one process, data moved per batch); fp32: the nets are tiny.
    result = simulate(clients, cfg, progress=progress, accelerator="gpu" if resolve_device(params.trainer).type == "cuda" else "cpu")
    h = result["history"]
    return {
        "job": asdict(job), "key": job.key, "config": asdict(cfg), "seconds": result["seconds"],
        "val_curve": [float(np.mean(a)) for a in h["eval_acc"]],
        "val_final_per_client": result["final_eval_acc"],
        "bytes_per_round": int(np.mean([u + d for u, d in zip(h["upload_bytes"], h["download_bytes"])])),
        "setup_bytes": int(stats_bytes),
        "clients": [c.name for c in clients], "train_rows": [len(c.y_train) for c in clients],
        "num_samples": [c.num_samples for c in clients],
        "local_keys": result["local_keys"],
        "states": result["states"],
    }


def _worker_run(job: Job, raw: dict, root: str, num_classes: int, image_size: int, progress: bool) -> dict:
    from embedlab.params import parse_params

    return run_job(job, parse_params(raw), Path(root), num_classes, image_size, progress=progress)


def run_all(params: Params, root: Path, jobs: list[Job], num_classes: int, image_size: int,
            progress: bool = True) -> list[dict]:
    """Every run, in job order, on the shared runner (embedlab.jobs): single-thread spawned
    workers on a CPU, in this process on a GPU or with one worker (then with a bar over rounds)."""
    from tqdm.auto import tqdm

    from embedlab.jobs import run_all as run_jobs
    from embedlab.training import resolve_device

    in_process = resolve_device(params.trainer).type != "cpu" or params.federated.workers <= 1
    raw = params.model_dump(by_alias=True)
    args = [(j, raw, str(root), num_classes, image_size, progress and in_process) for j in jobs]
    bar = tqdm(total=len(jobs), desc="federated runs", unit="run", disable=not progress)
    try:
        return run_jobs(_worker_run, args, params.federated.workers, in_process, bar)
    finally:
        bar.close()


def _meta(paths: Paths) -> tuple[int, int]:
    arrays = np.load(paths.partitions / "feature_shift.npz")
    return int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1, int(arrays["train_images"].shape[-1])


def train(params: Params, paths: Paths) -> None:
    from embedlab.data.partition import load_partition
    from embedlab.methods.federated.clients import feature_shift_subsets

    fs = params.federated.feature_shift
    num_classes, image_size = _meta(paths)
    # Fail before any work if a size does not fit a client (the check every run makes).
    feature_shift_subsets(load_partition(paths.partitions, "feature_shift"), max(fs.sizes), 0,
                          paths.partitions / "feature_shift.npz")
    start = time.perf_counter()
    jobs = planned_jobs(params)
    results = run_all(params, paths.root, jobs, num_classes, image_size, progress=params.trainer.progress_bar)
    model_dir = paths.model_dir(NAME)
    model_dir.mkdir(parents=True, exist_ok=True)
    save_tensors({r["key"]: r.pop("states") for r in results}, model_dir / "runs.safetensors")
    log_live(paths.dvclive(NAME), params, results)
    write_json_atomic(model_dir / "runs.json", {
        "num_classes": num_classes, "image_size": image_size,
        "wall_seconds": round(time.perf_counter() - start, 1), "runs": results,
    })


def log_live(live_dir: Path, params: Params, results: list[dict]) -> None:
    """dvclive/federated/: the mean val-accuracy curve per algorithm (default feature-shift size
    and default label-skew alpha), one step per round."""
    from embedlab.live import open_live

    size = params.federated.feature_shift.samples_per_client
    curves: dict[str, list] = {}
    for r in results:
        job = r["job"]
        if (job["setting"], job["size"]) in (("feature_shift", size), ("label_skew", 0)):
            curves.setdefault(f"{job['setting']}/{job['algorithm']}", []).append(r["val_curve"])
    with open_live(live_dir) as live:
        length = max((len(c[0]) for c in curves.values()), default=0)
        for i in range(length):
            live.step = i + 1
            for name, runs in curves.items():
                if i < len(runs[0]):
                    live.log_metric(f"{name}/val_acc", float(np.mean([c[i] for c in runs])))

