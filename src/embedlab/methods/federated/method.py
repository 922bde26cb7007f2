"""train@federated: every (setting, algorithm, size or alpha, seed) run of the simulation.

First the tuned arms spend equal val budgets (`federated.tuning`, on selection seeds that are
never scored): local, FedAvg, FedProx and FedBN each pick their own feature-shift training
configuration; FRAug picks its own on top of FedBN's (the method it extends); the linear-head
runs on feature shift (`fedavg_head`, `ggeur`) train with FedBN's. Then the scored runs (the
clients come from the partition stage; see clients.py):
  feature_shift   CNN on pixels, one client per domain: local, fedavg, fedprox, fedbn, fraug, at
                  each size in `feature_shift.sizes`; and GGEUR's multi-domain variant beside
                  FedAvg on a linear head over frozen embeddings (`fedavg_head`, `ggeur`).
  label_skew      linear head on frozen embeddings (`federated.embedding`: by default the vq
                  tokenizer's encoder, which no label shaped), Dirichlet clients, at the default
                  alpha and each extra one: `central` (every row on one client: the ceiling),
                  and `label_skew.algorithms`.

Training and tuning only ever look at the val split (the per-round curves); the test split is
read by evaluate@federated alone. Runs go to `workers` spawned processes (one thread each); every run
is deterministic for its seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from embedlab.data.partition import load_partition
from embedlab.io import save_tensors, write_json_atomic
from embedlab.jobs import run_graph
from embedlab.jobstore import method_store
from embedlab.live import open_live
from embedlab.methods.federated.clients import feature_shift_subsets
from embedlab.methods.federated.parts import (
    NAME,
    PRIMARY_METRIC,
    Job,
    apply_choice,
    base_of,
    copy_embedder,
    job_clients,
    planned_jobs,
    run_config,
    tuned_arms,
    tuning_jobs,
)
from embedlab.methods.federated.scoring import evaluate, export, load_bundle
from embedlab.params import Params, parse_params
from embedlab.paths import Paths
from embedlab.training import resolve_device

# The method interface (methods/base.py): this module trains; scoring.py evaluates and exports.
name = NAME
primary_metric = PRIMARY_METRIC
needs_evaluator = False  # these models classify for themselves, scored on test labels
__all__ = ["name", "primary_metric", "needs_evaluator", "train", "evaluate", "export", "load_bundle"]


def run_job(job: Job, params: Params, root: Path, num_classes: int, image_size: int, progress: bool = False) -> dict:
    """One run, scored on the val split each round. `progress`: a bar over its rounds."""
    from embedlab.methods.federated.simulation import simulate

    clients, stats_bytes = job_clients(params, root, job, "val", num_classes)
    cfg = run_config(params, job, num_classes, image_size)
    if cfg.model["kind"] == "head":
        cfg = replace(cfg, model={**cfg.model, "embedding_dim": int(clients[0].x_train.shape[1])})
    elif clients[0].x_train.shape[1] != 1:  # colour clients (grey configs keep their keys as they were)
        cfg = replace(cfg, model={**cfg.model, "channels": int(clients[0].x_train.shape[1])})
    # On a GPU every run goes there (one process, data moved per batch); fp32: the nets are tiny.
    result = simulate(clients, cfg, progress=progress, accelerator="gpu" if resolve_device(params.trainer).type == "cuda" else "cpu")
    h = result["history"]
    return {
        "job": asdict(job), "key": job.key, "config": asdict(cfg), "seconds": result["seconds"],
        # Over the clients with val rows: one without any scores nan (engine.accuracies), not the mean.
        "val_curve": [_mean_scored(a) for a in h["eval_acc"]],
        "val_final_per_client": result["final_eval_acc"],
        "val_rows": [len(c.y_eval) for c in clients],
        "bytes_per_round": int(np.mean([u + d for u, d in zip(h["upload_bytes"], h["download_bytes"])])),
        "setup_bytes": int(stats_bytes),
        "clients": [c.name for c in clients], "train_rows": [len(c.y_train) for c in clients],
        "num_samples": [c.num_samples for c in clients],
        "local_keys": result["local_keys"],
        "states": result["states"],
    }


def _mean_scored(accuracies) -> float:
    scored = [a for a in accuracies if np.isfinite(a)]
    return float(np.mean(scored)) if scored else float("nan")


def _worker_run(job: Job, raw: dict, root: str, num_classes: int, image_size: int, progress: bool) -> dict:
    return run_job(job, parse_params(raw), Path(root), num_classes, image_size, progress=progress)


def run_all(params: Params, root: Path, num_classes: int, image_size: int, store=None,
            progress: bool = True) -> tuple[list[dict], dict, Params]:
    """Tuning, then every scored run, as one job graph on the shared runner (embedlab.jobs):
    single-thread spawned workers on a CPU, in this process on a GPU or with one worker (then
    with a bar over rounds). A run starts as soon as the choices it needs exist, so no worker
    idles at a phase boundary: the label-skew runs need none; each tuned arm's feature-shift
    runs wait for its own choice (FRAug's tuning runs for FedBN's); the linear-head runs on
    feature shift for FedBN's.
    Returns (scored runs in `planned_jobs` order, the tuning record, the params each tuned arm
    trained with, by arm)."""
    from tqdm.auto import tqdm

    in_process = resolve_device(params.trainer).type != "cpu" or params.federated.workers <= 1
    bars = progress and in_process

    def args(job: Job, p: Params) -> tuple:
        return (job, p.model_dump(by_alias=True), str(root), num_classes, image_size, bars)

    arms = tuned_arms(params)
    tuned = {"": params}  # the params each arm's runs train with: "" (none chosen), then per arm
    tuning: dict = {}
    waiting = {arm: {j.key for j in tuning_jobs(params, arm)} for arm in arms}
    tuning_runs: dict = {arm: [] for arm in arms}

    def after(job: Job) -> str:
        """The tuned arm whose choice `job` needs ("" for none)."""
        if job.setting != "feature_shift":
            return ""
        if job.algorithm in arms:
            return job.algorithm
        return "fedbn" if "fedbn" in arms else ""

    plan = planned_jobs(params)  # the same jobs, whatever is chosen (choices change configurations only)
    jobs = {j.key: args(j, params) for arm in arms if not base_of(arm, arms) for j in tuning_jobs(params, arm)}
    jobs |= {j.key: args(j, params) for j in plan if after(j) == ""}

    def on_done(key: str, result: dict) -> dict:
        new: dict = {}
        for arm in arms:
            if key not in waiting[arm]:
                continue
            waiting[arm].discard(key)
            tuning_runs[arm].append(result)
            if waiting[arm]:
                return new
            base = tuned[base_of(arm, arms)]
            tuning[arm] = choose(base, arm, tuning_runs[arm])
            tuned[arm] = apply_choice(base, arm, tuning[arm]["chosen"])
            for later in arms:  # an arm that tunes on top of this choice starts now
                if base_of(later, arms) == arm:
                    new |= {j.key: (args(j, tuned[arm]), ()) for j in tuning_jobs(tuned[arm], later)}
            new |= {j.key: (args(j, tuned[arm]), ()) for j in plan if after(j) == arm}
        return new

    bar = tqdm(total=len(jobs), desc="federated runs", unit="run", disable=not progress)
    try:
        results = run_graph(_worker_run, jobs, {}, params.federated.workers, in_process, bar, on_done, store=store)
    finally:
        bar.close()
    return [results[j.key] for j in plan], tuning, tuned


def _meta(paths: Paths) -> tuple[int, int]:
    arrays = np.load(paths.partitions / "feature_shift.npz")
    return int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1, int(arrays["train_images"].shape[-1])


def train(params: Params, paths: Paths) -> None:
    fs = params.federated.feature_shift
    num_classes, image_size = _meta(paths)
    # Fail before any work if a size does not fit a client (the check every run makes).
    feature_shift_subsets(load_partition(paths.partitions, "feature_shift"), max(fs.sizes), 0,
                          paths.partitions / "feature_shift.npz")
    model_dir = paths.model_dir(NAME)
    if model_dir.exists():  # a stale embedder or runs must not survive a new training
        import shutil

        shutil.rmtree(model_dir)
    copy_embedder(params, paths.root)
    start = time.perf_counter()
    progress = params.trainer.progress_bar
    # Every CNN arm tunes its own configuration; FRAug tunes on top of the one FedBN chose.
    # A killed run's finished runs are kept for the rerun (embedlab.jobstore).
    store = method_store(NAME, params, paths, [paths.partitions, paths.model_dir("tokenizer")])
    results, tuning, _ = run_all(params, paths.root, num_classes, image_size, store, progress=progress)
    save_tensors({r["key"]: r.pop("states") for r in results}, model_dir / "runs.safetensors")
    log_live(paths.dvclive(NAME), params, results)
    write_json_atomic(model_dir / "runs.json", {
        "num_classes": num_classes, "image_size": image_size, "tuning": tuning,
        "wall_seconds": round(time.perf_counter() - start, 1), "runs": results,
    })
    store.done()


def choose(params: Params, arm: str, runs: list[dict]) -> dict:
    """The arm's first configuration (its reference: the values params.yaml trains with) unless
    another's final-round val accuracy, mean over the selection seeds, beats the reference's by
    more than one standard error of it (binomial, over the val rows those runs scored); then the
    highest (ties: the earlier). The one-standard-error rule (Breiman et al. 1984): an argmax
    alone picked among configurations closer than their run-to-run spread, and a host whose
    kernels differ then chose another learning rate for 3 of the 5 CNN arms
    (benchmarks/results/kernel_sensitivity.json)."""
    configs = getattr(params.federated.tuning, arm)
    val = [float(np.mean([r["val_curve"][-1] for r in runs if r["job"]["config"] == i])) for i in range(len(configs))]
    rows = sum(sum(r["val_rows"]) for r in runs if r["job"]["config"] == 0)
    se = math.sqrt(val[0] * (1.0 - val[0]) / rows) if rows else 0.0
    best = int(np.argmax(val))
    chosen = best if val[best] - val[0] > se else 0
    return {"configs": configs, "val_accuracy": [round(v, 4) for v in val], "chosen": configs[chosen],
            "reference": configs[0], "standard_error": round(se, 4), "val_rows": rows,
            "seeds": list(params.federated.tuning.seeds), "size": params.federated.feature_shift.samples_per_client,
            "rule": "the first configuration unless another's final-round val accuracy (mean over the selection "
                    "seeds) beats it by more than one standard error (binomial, over the val rows); then the highest"}


def log_live(live_dir: Path, params: Params, results: list[dict]) -> None:
    """dvclive/federated/: the mean val-accuracy curve per algorithm (default feature-shift size
    and default label-skew alpha), one step per round."""
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

