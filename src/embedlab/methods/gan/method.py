"""train@gan: MEE against MaF, its ablation and a DCGAN (evaluate and export: scoring.py).

train@gan first tunes every arm with the same budget (params gan.tuning: one hyperparameter,
the same number of values each) on a selection seed that no reported run uses: on
stacked_weak the *backbone's* confident mode count decides (that choice also serves
stacked_full and digits); on each 2-D mixture, the mixture's own mode count. Then every
reported job runs with its arm's chosen value. models/gan/ holds each generator's safetensors,
config.json (jobs, choices, the backbone's reading of the reported mee runs) and history.json
(losses). Jobs run in `gan.workers` CPU processes with one thread each, or in-process on a GPU.

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

from embedlab.io import save_weights, write_json_atomic
from embedlab.jobs import Pool
from embedlab.methods.gan.benchmarks import (
    IMAGE,
    NAME,
    PRIMARY_METRIC,
    TOY,
    TUNED_ON,
    Job,
    build_generator,
    disc_factory,
    gen_config,
    loop_config,
    mixture,
    real_sampler,
    restore_generator,
)
from embedlab.methods.gan.scoring import PUBLISHED, evaluate, export, load_bundle
from embedlab.params import Params
from embedlab.paths import Paths

CURVE_EVERY = 10  # loss curves are kept every 10th step

# The method interface (methods/base.py): this module trains; scoring.py evaluates and exports.
name = NAME
primary_metric = PRIMARY_METRIC
needs_evaluator = True
__all__ = ["name", "primary_metric", "needs_evaluator", "train", "evaluate", "export", "load_bundle"]


# --- running jobs ---------------------------------------------------------------------------


def run_job(job: Job, params: Params, images: torch.Tensor, labels: torch.Tensor, device="cpu") -> tuple[dict, dict]:
    """Train one arm on one benchmark; returns (generator state dict on the CPU, history)."""
    from embedlab.methods.gan.arms import train_arm

    size = int(images.shape[-1])
    config = gen_config(params, job.bench, size)
    gen, history = train_arm(
        job.arm, lambda: build_generator(config), disc_factory(params, job.bench, size),
        real_sampler(params, job.bench, images, labels), loop_config(params, job.bench, job.arm, job.value),
        job.seed, device=device,
    )
    state = {k: v.detach().cpu() for k, v in gen.state_dict().items()}
    curves = {k: [round(x, 5) for x in history[k][::CURVE_EVERY]] for k in ("d_loss", "g_loss")}
    return state, {**curves, "seconds": round(history["seconds"], 2)}


def _job(job: Job, raw_params: dict, images: np.ndarray, labels: np.ndarray, device: str = "cpu"):
    """`run_job` with picklable arguments: what `embedlab.jobs.Pool` runs, in a worker or here."""
    from embedlab.params import parse_params

    return run_job(job, parse_params(raw_params), torch.from_numpy(images).to(device),
                   torch.from_numpy(labels).to(device), device)


def planned_jobs(params: Params, chosen: dict | None = None) -> list[Job]:
    """Every reported run; `chosen[(bench, arm)]` is the tuned value (None before tuning)."""
    g = params.gan

    def job(bench, arm, seed):
        return Job(bench, arm, seed, (chosen or {}).get((TUNED_ON[bench], arm)))

    jobs = [job(bench, arm, seed) for bench in TOY for arm in g.toy.arms for seed in g.toy.seeds]
    jobs += [job("stacked_weak", arm, seed) for arm in g.image.arms for seed in g.image.seeds]
    jobs += [job("stacked_full", arm, seed) for arm in g.image.compare_arms for seed in g.image.full_seeds]
    jobs += [job("digits", arm, seed) for arm in g.image.compare_arms for seed in g.image.seeds]
    return jobs


def selection_jobs(params: Params) -> list[Job]:
    """The tuning runs: every arm of a tuned benchmark at each of its values, on the selection seed."""
    g = params.gan
    benches = {"ring": (g.toy.selection_seed, g.toy.arms), "grid": (g.toy.selection_seed, g.toy.arms),
               "stacked_weak": (g.image.selection_seed, sorted(set(g.image.arms) | set(g.image.compare_arms)))}
    return [Job(bench, arm, seed, value, selection=True) for bench, (seed, arms) in benches.items()
            for arm in arms for value in g.tuning.of(arm).values]


def choose_value(scores: dict[float, dict]) -> float:
    """Most modes covered; ties go to the lower mode KL, then to the smaller value."""
    return min(scores, key=lambda v: (-scores[v]["modes_covered"], scores[v]["mode_kl"], v))


class Readers:
    """How train@gan reads a run without the evaluator: the mixture itself (2-D) or the backbone
    (stacked), with the min count each one's real ceiling gives."""

    def __init__(self, params: Params, backbone: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
        from embedlab.methods.gan.scoring import stacked_ceiling, toy_ceiling

        e, self.params, self.backbone = params.evaluation, params, backbone
        self.min_count = {b: toy_ceiling(*mixture(params, b), params.gan.toy.eval_samples, e.seed,
                                         e.mode_min_fraction)[1] for b in TOY}
        self.min_count["stacked"] = stacked_ceiling(images, labels, backbone, params.gan.image.eval_samples, e.seed,
                                                    e.confidence, e.mode_min_fraction)[1]

    def __call__(self, job: Job, gen: torch.nn.Module) -> dict:
        from embedlab.methods.gan.arms import sample
        from embedlab.methods.gan.scoring import score_stacked, score_toy

        g = self.params.gan
        if job.bench in TOY:
            s = score_toy(sample(gen, g.toy.eval_samples, job.seed), *mixture(self.params, job.bench),
                          self.min_count[job.bench])
        else:
            s = score_stacked(sample(gen, g.image.eval_samples, job.seed), self.backbone,
                              self.params.evaluation.confidence, self.min_count["stacked"])
        return {"modes_covered": s["modes_covered"], "mode_kl": s["mode_kl"]}


def train(params: Params, paths: Paths) -> None:
    from tqdm.auto import tqdm

    from embedlab.classifier import load_classifier
    from embedlab.data.prepare import read_prepared
    from embedlab.training import resolve_device

    g = params.gan
    data = read_prepared(paths.prepared)
    images, labels = (torch.as_tensor(a) for a in data.split("train"))
    size = int(data.meta["image_size"])
    read = Readers(params, load_classifier(paths.model_dir("backbone")), images, labels)
    device = resolve_device(params.trainer)
    out = paths.model_dir(NAME)
    out.mkdir(parents=True, exist_ok=True)
    # CPU: `gan.workers` spawned processes of one thread each; a GPU (or one worker): in-process.
    pool = Pool(g.workers, in_process=device.type != "cpu")
    job_args = (params.model_dump(by_alias=True), images.numpy(), labels.numpy(), str(device))
    start = time.perf_counter()
    histories, results, backbone_reads = {}, {}, {}
    selection = selection_jobs(params)
    bar = tqdm(total=len(selection) + len(planned_jobs(params)), desc="train@gan jobs", unit="run",
               disable=not params.trainer.progress_bar)
    try:
        futures = {job: pool.submit(_job, job, *job_args) for job in selection}
        scores: dict = defaultdict(dict)
        for job, fut in futures.items():
            state, hist = fut.result()
            scores[(job.bench, job.arm)][job.value] = {**read(job, restore_generator(params, job.bench, size, state)),
                                                       "seconds": hist["seconds"]}
            bar.update(1)
        chosen = {group: choose_value(per) for group, per in scores.items()}
        futures = {job: pool.submit(_job, job, *job_args) for job in planned_jobs(params, chosen)}
        for job, fut in futures.items():
            state, hist = fut.result()
            gen = restore_generator(params, job.bench, size, state)
            path = out / job.weights
            path.parent.mkdir(parents=True, exist_ok=True)
            save_weights(gen, path)
            histories[job.key] = hist
            results[job.key] = asdict(job)
            if (job.bench, job.arm) == PUBLISHED:
                backbone_reads[job.seed] = read(job, gen)
            bar.update(1)
        bar.close()
    finally:
        pool.close()
    config = {
        "generators": {b: gen_config(params, b, size) for b in TOY + IMAGE},
        "jobs": [{**results[k], "weights": Job(**results[k]).weights, "seconds": histories[k]["seconds"]}
                 for k in results],
        "tuning": {
            "by": {"stacked_weak": "backbone confident mode count (also for stacked_full, digits)",
                   "ring": "mixture mode count", "grid": "mixture mode count"},
            "seeds": {"stacked_weak": g.image.selection_seed, "ring": g.toy.selection_seed,
                      "grid": g.toy.selection_seed},
            "min_count": read.min_count,
            "chosen": {f"{b}/{a}": {"key": g.tuning.key(a), "value": v} for (b, a), v in chosen.items()},
            "scores": {f"{b}/{a}": {f"{v:g}": s for v, s in per.items()} for (b, a), per in scores.items()},
        },
        # The published run is chosen by this reading (the backbone's), never by the evaluator.
        "backbone_reads": {"bench": PUBLISHED[0], "arm": PUBLISHED[1],
                           "per_seed": {str(s): r for s, r in sorted(backbone_reads.items())}},
        "device": str(device),
        "workers": g.workers if pool.executor is not None else 1,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    write_json_atomic(out / "history.json", {"curve_every": CURVE_EVERY, "runs": histories})
    log_live(paths.dvclive(NAME), histories, config["tuning"])
    write_json_atomic(out / "config.json", config)


def log_live(live_dir: Path, histories: dict, tuning: dict) -> None:
    """dvclive/gan/: the loss curves of the first stacked_weak seed per arm (the dvc plots every
    other model shows), and the tuning choices as metrics."""
    from embedlab.live import open_live

    runs = {k: v for k, v in histories.items() if k.startswith("stacked_weak/")}
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
                    live.log_metric(f"stacked_weak/{arm}/d_loss", c["d_loss"][i])
                    live.log_metric(f"stacked_weak/{arm}/g_loss", c["g_loss"][i])

