"""train@gan: MEE against MaF, its ablation and a DCGAN (evaluate and export: scoring.py).

train@gan first tunes every arm with the same budget (params gan.tuning: one hyperparameter,
the same number of values each) on a selection seed that no reported run uses: on
stacked_weak the *backbone's* confident mode count decides (that choice also serves
stacked_full and digits); on each 2-D mixture, the mixture's own mode count. Then every
reported job runs with its arm's chosen value. The 2-D mixtures run only with `gan.toy.run`,
stacked digits only with `gan.image.stacked` (both the paper preset); without stacked digits,
digits runs untuned, every arm at its params default, and MEE's plain-digit generator is the
published one (`published_run`). The CPU default trains that one generator and nothing else.
models/gan/ holds each generator's safetensors, config.json (jobs, choices, the backbone's
reading of the reported mee runs) and history.json (losses). Runs train as stacks (many runs
as one model, one Lightning fit each: module.py), in `gan.workers` CPU processes with one
thread each, or in-process on a GPU.

evaluate@gan (scoring.py) scores every reported generator with the evaluator, beside the real
ceiling and the untrained floor, and writes the claims' verdicts.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from embedlab.classifiers.nets import load_classifier
from embedlab.data.prepare import read_prepared
from embedlab.io import save_weights, write_json_atomic
from embedlab.jobs import Pool
from embedlab.jobstore import method_store
from embedlab.live import open_live
from embedlab.methods.gan.arms import sample
from embedlab.methods.gan.modes import digits_ceiling, score_digit_modes, score_stacked, score_toy, stacked_ceiling, toy_ceiling
from embedlab.methods.gan.parts import (
    NAME,
    PRIMARY_METRIC,
    TOY,
    TUNED_ON,
    Job,
    build_generator,
    check_stacked,
    curves_bench,
    disc_factory,
    gen_config,
    image_benches,
    loop_config,
    mixture,
    published_run,
    real_sampler,
    restore_generator,
    toy_benches,
    tuned_benches,
)
from embedlab.methods.gan.scoring import evaluate, export, load_bundle
from embedlab.params import Params, parse_params
from embedlab.paths import Paths
from embedlab.training import is_global_zero, resolve_device, world_size

CURVE_EVERY = 10  # loss curves are kept every 10th step

# The method interface (methods/base.py): this module trains; scoring.py evaluates and exports.
name = NAME
primary_metric = PRIMARY_METRIC
needs_evaluator = True
__all__ = ["name", "primary_metric", "needs_evaluator", "train", "evaluate", "export", "load_bundle"]


# --- running jobs ---------------------------------------------------------------------------


def stack_key(job: Job, device_type: str) -> tuple:
    """Which jobs train together as one stacked model (module.py). A run's numbers do not depend
    on its stack (each keeps its own random streams), only the speed does. 2-D runs stack by
    benchmark and D inputs (a dcgan run does not pay for mee's extra D passes); image runs stack
    by benchmark on a GPU, and on a CPU train alone: their convolutions are arithmetic-bound, and
    grouped ones measured no faster (benchmarks/results/gan_stacking.json)."""
    from embedlab.methods.gan.module import Run

    if job.bench in TOY:
        return job.bench, job.selection, Run(job.arm, job.seed, None).slots
    if device_type == "cuda":
        return job.bench, job.selection
    return job.bench, job.selection, job.arm, job.seed, job.value


def stacks_of(jobs: list[Job], device_type: str) -> list[list[Job]]:
    """`jobs` grouped by `stack_key`, the costliest stack first (so two workers finish together)."""
    groups: dict = defaultdict(list)
    for job in jobs:
        groups[stack_key(job, device_type)].append(job)
    return sorted(groups.values(), key=lambda g: -len(g) * (1 if g[0].bench in TOY else 20))


def run_stack(jobs: list[Job], params: Params, images: torch.Tensor, labels: torch.Tensor,
              progress_bar: bool = False) -> list[tuple[dict, dict]]:
    """Train the jobs of one benchmark as one stack; per job (generator state dict on the CPU, history)."""
    from embedlab.methods.gan.module import Run, train_runs

    bench, size = jobs[0].bench, int(images.shape[-1])
    if any(j.bench != bench for j in jobs):
        raise ValueError(f"a stack holds one benchmark's jobs, got {sorted({j.bench for j in jobs})}")
    channels = int(images.shape[1])
    config = gen_config(params, bench, size, channels)
    runs = [Run(j.arm, j.seed, loop_config(params, bench, j.arm, j.value)) for j in jobs]
    trainer = params.trainer.model_copy(update={"progress_bar": progress_bar and params.trainer.progress_bar})
    results = train_runs(runs, lambda: build_generator(config), disc_factory(params, bench, size, channels),
                         real_sampler(params, bench, images, labels), trainer)
    return [(state, {**{k: [round(x, 5) for x in hist[k][::CURVE_EVERY]] for k in ("d_loss", "g_loss")},
                     "seconds": round(hist["seconds"], 2)}) for state, hist in results]


def run_job(job: Job, params: Params, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict, dict]:
    """One job alone (a stack of one): (generator state dict on the CPU, history)."""
    return run_stack([job], params, images, labels)[0]


def _stack(jobs: list[Job], raw_params: dict, images: np.ndarray, labels: np.ndarray, device: str = "cpu",
           progress_bar: bool = False):
    """`run_stack` with picklable arguments: what `embedlab.jobs.Pool` runs, in a worker or here."""
    return run_stack(jobs, parse_params(raw_params), torch.from_numpy(images).to(device),
                     torch.from_numpy(labels).to(device), progress_bar)


def planned_jobs(params: Params, chosen: dict | None = None) -> list[Job]:
    """Every reported run; `chosen[(bench, arm)]` is the tuned value (None before tuning)."""
    g = params.gan

    def job(bench, arm, seed):
        return Job(bench, arm, seed, (chosen or {}).get((TUNED_ON[bench], arm)))

    jobs = [job(bench, arm, seed) for bench in toy_benches(params) for arm in g.toy.arms for seed in g.toy.seeds]
    if g.image.stacked:
        jobs += [job("stacked_weak", arm, seed) for arm in g.image.arms for seed in g.image.seeds]
        jobs += [job("stacked_full", arm, seed) for arm in g.image.compare_arms for seed in g.image.full_seeds]
    jobs += [job("digits", arm, seed) for arm in g.image.compare_arms for seed in g.image.seeds]
    return jobs


def selection_jobs(params: Params) -> list[Job]:
    """The tuning runs: every arm of a tuned benchmark (`tuned_benches`) at each of its values,
    on the selection seed."""
    g = params.gan
    benches = {"ring": (g.toy.selection_seed, g.toy.arms), "grid": (g.toy.selection_seed, g.toy.arms),
               "stacked_weak": (g.image.selection_seed, sorted(set(g.image.arms) | set(g.image.compare_arms)))}
    return [Job(bench, arm, seed, value, selection=True) for bench, (seed, arms) in benches.items()
            if bench in tuned_benches(params) for arm in arms for value in g.tuning.of(arm).values]


def choose_value(scores: dict[float, dict]) -> float:
    """Most modes covered; ties go to the lower mode KL, then to the smaller value."""
    return min(scores, key=lambda v: (-scores[v]["modes_covered"], scores[v]["mode_kl"], v))


class Readers:
    """How train@gan reads a run without the evaluator: the mixture itself (2-D) or the backbone
    (stacked digits; plain digits, 10 modes, at evaluate's N), with the min count each one's
    real ceiling gives."""

    def __init__(self, params: Params, backbone: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
        e, self.params, self.backbone = params.evaluation, params, backbone
        self.min_count = {b: toy_ceiling(*mixture(params, b), params.gan.toy.eval_samples, e.seed,
                                         e.mode_min_fraction)[1] for b in toy_benches(params)}
        if params.gan.image.stacked:
            self.min_count["stacked"] = stacked_ceiling(images, labels, backbone, params.gan.image.eval_samples,
                                                        e.seed, e.confidence, e.mode_min_fraction)[1]
        self.n_digits = min(e.samples, len(images))  # evaluate's N (SampleScorer.cap)
        self.min_count["digits"] = digits_ceiling(images, backbone, self.n_digits, e.seed, e.confidence,
                                                  e.mode_min_fraction)[1]

    def __call__(self, job: Job, gen: torch.nn.Module) -> dict:
        g, threshold = self.params.gan, self.params.evaluation.confidence
        if job.bench in TOY:
            s = score_toy(sample(gen, g.toy.eval_samples, job.seed), *mixture(self.params, job.bench),
                          self.min_count[job.bench])
        elif job.bench == "digits":
            s = score_digit_modes(sample(gen, self.n_digits, job.seed), self.backbone, threshold,
                                  self.min_count["digits"])
        else:
            s = score_stacked(sample(gen, g.image.eval_samples, job.seed), self.backbone, threshold,
                              self.min_count["stacked"])
        return {"modes_covered": s["modes_covered"], "mode_kl": s["mode_kl"]}


def train(params: Params, paths: Paths) -> None:
    from tqdm.auto import tqdm

    g = params.gan
    data = read_prepared(paths.prepared)
    images, labels = (torch.as_tensor(a) for a in data.split("train"))
    size, channels = int(data.meta["image_size"]), int(images.shape[1])
    check_stacked(params, channels)
    read = Readers(params, load_classifier(paths.model_dir("backbone")), images, labels)
    device = resolve_device(params.trainer)
    out = paths.model_dir(NAME)
    out.mkdir(parents=True, exist_ok=True)
    # Under DDP (trainer.devices x num_nodes > 1) every stack is one DDP fit, on every rank in one
    # order (Lightning's launcher starts the other ranks at the first fit, rerunning this command),
    # the data on the CPU (each rank's module moves its own draws to its device); every rank
    # scores the tuning runs alike (their weights agree), and rank 0 alone writes. No job-level
    # resume under DDP: every rank must run every fit.
    ddp = world_size(params.trainer) > 1
    # CPU: `gan.workers` spawned processes of one thread each; a GPU (or one worker): in-process.
    pool = Pool(1 if ddp else g.workers, in_process=ddp or device.type != "cpu")
    data_device = "cpu" if ddp else str(device)
    job_args = (params.model_dump(by_alias=True), images.numpy(), labels.numpy(), data_device, pool.executor is None)
    start = time.perf_counter()
    # A killed run's finished stacks are kept for the rerun (embedlab.jobstore).
    store = None if ddp else method_store(NAME, params, paths, [paths.prepared, paths.model_dir("backbone")])
    histories, results, backbone_reads = {}, {}, {}
    published = published_run(params)
    selection = selection_jobs(params)
    stacks = stacks_of(selection, device.type)
    bar = tqdm(total=len(selection) + len(planned_jobs(params)), desc="train@gan jobs", unit="run",
               disable=not params.trainer.progress_bar or not is_global_zero())
    try:
        scores: dict = defaultdict(dict)
        for job, (state, hist) in _results(pool, stacks, job_args, bar, store):
            scores[(job.bench, job.arm)][job.value] = {**read(job, restore_generator(params, job.bench, size, state, channels)),
                                                       "seconds": hist["seconds"]}
        chosen = {group: choose_value(per) for group, per in scores.items()}
        planned = stacks_of(planned_jobs(params, chosen), device.type)
        stacks += planned
        for job, (state, hist) in _results(pool, planned, job_args, bar, store):
            gen = restore_generator(params, job.bench, size, state, channels)
            if is_global_zero():
                path = out / job.weights
                path.parent.mkdir(parents=True, exist_ok=True)
                save_weights(gen, path)
            histories[job.key] = hist
            results[job.key] = asdict(job)
            if (job.bench, job.arm) == published:
                backbone_reads[job.seed] = read(job, gen)
        bar.close()
    finally:
        pool.close()
    if not is_global_zero():
        return  # a rank the launcher started: rank 0 writes
    by = {"stacked_weak": ("backbone confident mode count (also for stacked_full, digits)", g.image.selection_seed),
          "ring": ("mixture mode count", g.toy.selection_seed), "grid": ("mixture mode count", g.toy.selection_seed)}
    by = {b: v for b, v in by.items() if b in tuned_benches(params)}
    tuning = {
        "by": {b: reader for b, (reader, _) in by.items()},
        "seeds": {b: seed for b, (_, seed) in by.items()},
        "min_count": read.min_count,
        "chosen": {f"{b}/{a}": {"key": g.tuning.key(a), "value": v} for (b, a), v in chosen.items()},
        "scores": {f"{b}/{a}": {f"{v:g}": s for v, s in per.items()} for (b, a), per in scores.items()},
    }
    if not g.image.stacked:
        tuning["untuned"] = {"digits": "every arm at its params default (each tuning grid holds it): "
                                       "stacked_weak, where images are tuned, did not run (gan.image.stacked false)"}
    config = {
        "generators": {b: gen_config(params, b, size, channels) for b in toy_benches(params) + image_benches(params)},
        "jobs": [{**results[k], "weights": Job(**results[k]).weights, "seconds": histories[k]["seconds"]}
                 for k in results],
        "tuning": tuning,
        # The published run is chosen by this reading (the backbone's), never by the evaluator.
        "backbone_reads": {"bench": published[0], "arm": published[1],
                           "per_seed": {str(s): r for s, r in sorted(backbone_reads.items())}},
        "device": str(device),
        "workers": g.workers if pool.executor is not None else 1,
        **({"ddp": {"world_size": world_size(params.trainer)}} if ddp else {}),
        # How the runs were stacked (module.py): a speed choice; a run's numbers do not depend on it.
        "stacks": [{"bench": group[0].bench, "selection": group[0].selection, "runs": len(group),
                    "arms": sorted({j.arm for j in group})} for group in stacks],
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    write_json_atomic(out / "history.json", {"curve_every": CURVE_EVERY, "runs": histories})
    log_live(paths.dvclive(NAME), histories, config["tuning"])
    write_json_atomic(out / "config.json", config)
    if store is not None:
        store.done()


def _results(pool: Pool, stacks: list[list[Job]], job_args: tuple, bar, store=None):
    """(job, (state, history)) for every job of `stacks`, trained in `pool`, in submission order.
    A stack `store` kept from a killed run of the stage (embedlab.jobstore) is taken from it, not
    trained again; each stack trained here is kept in it."""
    def key(group: list[Job]) -> str:
        return "+".join(f"{j.key}@{j.value}" for j in group)

    pending = []
    for group in stacks:
        found, kept = store.get(key(group)) if store is not None else (False, None)
        fut = None if found else pool.submit(_stack, group, *job_args)
        if fut is not None and pool.executor is None and store is not None:
            store.put(key(group), fut.result())  # ran here, now: kept before the next stack starts
        pending.append((group, fut, kept))
    for group, fut, kept in pending:
        results = kept if fut is None else fut.result()
        if fut is not None and pool.executor is not None and store is not None:
            store.put(key(group), results)
        bar.update(len(group))
        yield from zip(group, results)


def log_live(live_dir: Path, histories: dict, tuning: dict) -> None:
    """dvclive/gan/: the loss curves of the first seed per arm of `curves_bench` (the dvc plots
    every other model shows), and the tuning choices as metrics."""
    bench = curves_bench(histories)
    runs = {k: v for k, v in histories.items() if k.startswith(f"{bench}/")}
    first = min((int(k.rsplit("seed", 1)[1]) for k in runs), default=None)
    curves = {k.split("/")[1]: v for k, v in runs.items() if k.endswith(f"/seed{first}")}
    with open_live(live_dir) as live:
        for group, per in tuning["scores"].items():
            for value, score in per.items():
                live.summary[f"tuning/{group}/{value}/modes_covered"] = score["modes_covered"]
        live.summary["chosen"] = {group: c["value"] for group, c in tuning["chosen"].items()}
        length = max((len(c["d_loss"]) for c in curves.values()), default=0)
        for i in range(length):
            live.step = i * CURVE_EVERY
            for arm, c in curves.items():
                if i < len(c["d_loss"]):
                    live.log_metric(f"{bench}/{arm}/d_loss", c["d_loss"][i])
                    live.log_metric(f"{bench}/{arm}/g_loss", c["g_loss"][i])

