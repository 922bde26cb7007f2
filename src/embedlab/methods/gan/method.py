"""train / evaluate / export for the gan method: MEE against MaF, its ablation and a DCGAN.

train@gan first tunes every arm with the same budget (params gan.tuning: one hyperparameter,
the same number of values each) on a selection seed that no reported run uses: on
stacked_weak the *backbone's* confident mode count decides (that choice also serves
stacked_full and digits); on each 2-D mixture, the mixture's own mode count. Then every
reported job runs with its arm's chosen value. models/gan/ holds each generator's safetensors,
config.json (jobs, choices, the backbone's reading of the reported mee runs) and history.json
(losses). Jobs run in `gan.workers` CPU processes with one thread each, or in-process on a GPU.

evaluate@gan scores every reported generator with the evaluator (benchmarks.py, scoring.py),
beside the real ceiling and the untrained floor, and writes the claims' verdicts.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from embedlab.io import save_weights, write_json_atomic
from embedlab.methods.gan.benchmarks import (
    IMAGE,
    NAME,
    TOY,
    TUNED_ON,
    Job,
    build_generator,
    disc_factory,
    gen_config,
    load_generator,
    loop_config,
    mixture,
    real_sampler,
    restore_generator,
    untrained_generator,
)
from embedlab.params import Params
from embedlab.paths import Paths

PRIMARY_METRIC = "published.modes_covered"
needs_evaluator = True
CURVE_EVERY = 10  # loss curves are kept every 10th step
MAIN_ARMS = ("dcgan", "maf", "mee")
PUBLISHED = ("stacked_weak", "mee")  # the registry's program: MEE's generator where collapse shows

__all__ = ["NAME", "Job", "evaluate", "export", "load_generator", "train"]


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


def _worker_init() -> None:
    torch.set_num_threads(1)  # small nets: one process per core beats threads within one


def _worker_run(job: Job, raw_params: dict, images: np.ndarray, labels: np.ndarray):
    from embedlab.params import parse_params

    return run_job(job, parse_params(raw_params), torch.from_numpy(images), torch.from_numpy(labels))


class JobRunner:
    """Runs jobs in `workers` spawned CPU processes, or one by one on a GPU (or with one
    worker) in this process. `submit` returns a Future either way."""

    def __init__(self, params: Params, images: torch.Tensor, labels: torch.Tensor, device: torch.device):
        self.params, self.device = params, device
        self.images, self.labels = images, labels
        self.pool = None
        if device.type == "cpu" and params.gan.workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(params.gan.workers, mp_context=mp.get_context("spawn"),
                                            initializer=_worker_init)
            self._raw = params.model_dump(by_alias=True)
            self._np = (images.numpy(), labels.numpy())

    def submit(self, job: Job):
        if self.pool is not None:
            return self.pool.submit(_worker_run, job, self._raw, *self._np)
        done: Future = Future()
        done.set_result(run_job(job, self.params, self.images.to(self.device), self.labels.to(self.device), self.device))
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


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
    runner = JobRunner(params, images, labels, device)
    start = time.perf_counter()
    histories, results, backbone_reads = {}, {}, {}
    selection = selection_jobs(params)
    bar = tqdm(total=len(selection) + len(planned_jobs(params)), desc="train@gan jobs", unit="run",
               disable=not params.trainer.progress_bar)
    try:
        futures = {job: runner.submit(job) for job in selection}
        scores: dict = defaultdict(dict)
        for job, fut in futures.items():
            state, hist = fut.result()
            scores[(job.bench, job.arm)][job.value] = {**read(job, restore_generator(params, job.bench, size, state)),
                                                       "seconds": hist["seconds"]}
            bar.update(1)
        chosen = {group: choose_value(per) for group, per in scores.items()}
        futures = {job: runner.submit(job) for job in planned_jobs(params, chosen)}
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
        runner.close()
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
        "workers": g.workers if runner.pool is not None else 1,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    write_json_atomic(out / "history.json", {"curve_every": CURVE_EVERY, "runs": histories})
    log_live(paths.dvclive(NAME), histories, config["tuning"])
    write_json_atomic(out / "config.json", config)


def log_live(live_dir: Path, histories: dict, tuning: dict) -> None:
    """dvclive/gan/: the loss curves of the first stacked_weak seed per arm (the dvc plots every
    other model shows), and the tuning choices as metrics."""
    from dvclive import Live

    runs = {k: v for k, v in histories.items() if k.startswith("stacked_weak/")}
    first = min((int(k.rsplit("seed", 1)[1]) for k in runs), default=None)
    curves = {k.split("/")[1]: v for k, v in runs.items() if k.endswith(f"/seed{first}")}
    # dvcyaml=False: the plots are declared once, in the project's dvc.yaml (Live would
    # otherwise append its own entries there, with paths relative to wherever it ran).
    with Live(str(live_dir), save_dvc_exp=False, dvcyaml=False, report=None) as live:
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


# --- evaluate -------------------------------------------------------------------------------


def first_seed(jobs: list[dict], bench: str, arm: str | None = None) -> int:
    """The lowest seed trained for `bench` (and `arm`): the run the pictures show."""
    return min(j["seed"] for j in jobs if j["bench"] == bench and arm in (None, j["arm"]))


def published_seed(config: dict) -> int:
    """The reported stacked_weak mee run with the most modes in the backbone's reading (ties: lower
    KL, then the lower seed): what publish registers. The evaluator plays no part in the choice."""
    reads = config["backbone_reads"]["per_seed"]
    return int(min(reads, key=lambda s: (-reads[s]["modes_covered"], reads[s]["mode_kl"], int(s))))


@torch.no_grad()
def evaluate(params: Params, paths: Paths, evaluator: torch.nn.Module) -> dict:
    from tqdm.auto import tqdm

    from embedlab.data.prepare import read_prepared
    from embedlab.evaluation.intervals import METHODS, over_seeds
    from embedlab.evaluation.samples import SampleScorer, evaluator_id
    from embedlab.methods.gan.arms import sample
    from embedlab.methods.gan.plots import write_plots
    from embedlab.methods.gan.scoring import score_stacked, score_toy, stacked_ceiling, stacked_readings, toy_ceiling

    g, e = params.gan, params.evaluation
    model_dir = paths.model_dir(NAME)
    config = json.loads((model_dir / "config.json").read_text())
    history = json.loads((model_dir / "history.json").read_text())
    data = read_prepared(paths.prepared)
    images, labels = (torch.as_tensor(a) for a in data.split("train"))
    size = int(data.meta["image_size"])
    scorer = SampleScorer(evaluator, data, e.confidence, e.bootstrap, e.seed)
    n_digits = scorer.cap(e.samples)

    # The real ceiling of every benchmark at its N, and the min count it implies.
    ceilings, min_count = {}, {}
    for bench in TOY:
        ceilings[bench], min_count[bench] = toy_ceiling(*mixture(params, bench), g.toy.eval_samples, e.seed,
                                                         e.mode_min_fraction)
    ceilings["stacked"], min_count["stacked"] = stacked_ceiling(images, labels, evaluator, g.image.eval_samples,
                                                                e.seed, e.confidence, e.mode_min_fraction)
    ceilings["digits"] = scorer.floor(n_digits, seed=e.seed)

    def read(bench: str, gen, seed: int):
        if bench in TOY:
            points = sample(gen, g.toy.eval_samples, seed)
            return score_toy(points, *mixture(params, bench), min_count[bench]), points
        if bench == "digits":
            imgs = sample(gen, n_digits, seed)
            return scorer.score(imgs, seed=seed), imgs[:100]
        imgs = sample(gen, g.image.eval_samples, seed)
        return score_stacked(imgs, evaluator, e.confidence, min_count["stacked"]), imgs

    per_seed: dict = defaultdict(lambda: defaultdict(list))   # bench -> arm -> [score dict per seed]
    seconds: dict = defaultdict(lambda: defaultdict(list))
    shown: dict = defaultdict(dict)
    first = {bench: first_seed(config["jobs"], bench) for bench in {j["bench"] for j in config["jobs"]}}
    for job in tqdm(config["jobs"], desc="evaluate@gan", unit="generator", disable=not params.trainer.progress_bar):
        bench, arm, seed = job["bench"], job["arm"], job["seed"]
        scores, view = read(bench, load_generator(model_dir, bench, arm, seed), seed)
        per_seed[bench][arm].append(scores)
        seconds[bench][arm].append(job["seconds"])
        if seed == first[bench]:
            if bench.startswith("stacked"):
                hist = np.bincount(np.clip(stacked_readings(view, evaluator, e.confidence)[1].numpy(), -1, None) + 1,
                                   minlength=1001)[1:]
                view = (view[:100], hist)
            shown[bench][arm] = view
    # The untrained floor: each benchmark's generator before any step (first seed).
    floors = {bench: read(bench, untrained_generator(params, bench, size, first[bench]), first[bench])[0]
              for bench in per_seed}

    rename = {"stacked_weak": "stacked"}
    metrics: dict = {"evaluator": evaluator_id(evaluator), "ablation": {}}
    for bench, arms in per_seed.items():
        key = rename.get(bench, bench)
        ceiling = ceilings.get(key) if bench != "stacked_full" else ceilings["stacked"]
        tables = _tables(arms, ceiling, floors[bench])
        metrics[key] = {m: {a: v for a, v in t.items() if a not in arms or a in MAIN_ARMS} for m, t in tables.items()}
        extra = [a for a in arms if a not in MAIN_ARMS]
        if extra:
            metrics["ablation"][key] = {m: {a: t[a] for a in extra} for m, t in tables.items()}
        if bench != "digits":
            metrics[key]["min_count"] = min_count[key if bench in TOY else "stacked"]
    metrics["claims"] = claims(per_seed, ceilings, floors, params)
    seed = published_seed(config)
    published_runs = [j["seed"] for j in config["jobs"] if (j["bench"], j["arm"]) == PUBLISHED]
    pub = per_seed[PUBLISHED[0]][PUBLISHED[1]][published_runs.index(seed)]
    metrics["published"] = {"bench": PUBLISHED[0], "arm": PUBLISHED[1], "seed": seed,
                            "chosen_by": "the backbone's confident mode count of the reported mee runs",
                            "modes_covered": pub["modes_covered"], "confident_share": pub["confident_share"]}
    metrics["per_seed"] = {rename.get(b, b): {a: [_flat(s) for s in v] for a, v in arms.items()}
                           for b, arms in per_seed.items()}
    metrics["wall_seconds"] = {rename.get(b, b): {a: round(float(np.mean(v)), 2) for a, v in arms.items()}
                               for b, arms in seconds.items()}
    metrics["tuning"] = {"chosen": config["tuning"]["chosen"], "scores": config["tuning"]["scores"]}
    metrics["train_wall_seconds"] = config["wall_seconds"]
    metrics["settings"] = {"toy_steps": g.toy.steps, "image_steps": g.image.steps,
                           "toy_seeds": len(g.toy.seeds), "image_seeds": len(g.image.seeds),
                           "stacked_eval_samples": g.image.eval_samples, "digits_samples": n_digits,
                           "confidence": e.confidence, "mode_min_fraction": e.mode_min_fraction}
    metrics["intervals"] = {"per arm (mean over training seeds)": METHODS["seeds"],
                            "real / untrained (one run)": METHODS["bootstrap"] + "; shares: " + METHODS["wilson"],
                            "claims": METHODS["paired"]}
    write_plots(paths.plots(NAME), shown, history, {b: mixture(params, b) for b in TOY}, metrics)
    write_json_atomic(paths.metrics(NAME), metrics)
    return metrics


def _flat(scores: dict) -> dict:
    """A per-seed score dict with scores reduced to their values (for the per_seed table)."""
    from embedlab.evaluation.intervals import value_of

    return {k: value_of(v) if isinstance(v, dict) else v for k, v in scores.items()}


def _tables(arms: dict[str, list[dict]], ceiling: dict | None, floor: dict) -> dict:
    """{metric: {arm: mean over seeds with its interval, "real": ceiling, "untrained": floor}}."""
    from embedlab.evaluation.intervals import over_seeds, value_of

    out: dict = defaultdict(dict)
    for arm, runs in arms.items():
        for metric in runs[0]:
            values = [r[metric] for r in runs]
            out[metric][arm] = over_seeds(values) if isinstance(values[0], dict) else \
                over_seeds([float(v) for v in values])
    for label, ref in (("real", ceiling), ("untrained", floor)):
        for metric, v in (ref or {}).items():
            if metric in out:
                out[metric][label] = v if isinstance(v, dict) else value_of(v)
    return dict(out)


def claims(per_seed: dict, ceilings: dict, floors: dict, params: Params) -> dict:
    """MEE's claims, each a paired verdict over the reported training seeds (evaluation.claims)."""
    from embedlab.evaluation.claims import precondition, verdict
    from embedlab.evaluation.intervals import value_of

    def values(bench, arm, metric):
        return [value_of(s[metric]) for s in per_seed[bench][arm]]

    def both(*checks):
        return {"description": "; ".join(c["description"] for c in checks), "checks": list(checks),
                "met": all(c["met"] for c in checks)}

    out = {}
    seeds = {"ring": params.gan.toy.seeds, "grid": params.gan.toy.seeds, "stacked_weak": params.gan.image.seeds}
    for bench, label in (("stacked_weak", "stacked"), ("ring", "ring"), ("grid", "grid")):
        if not {"mee", "maf"} <= set(per_seed.get(bench, {})):
            continue
        ceiling = value_of(ceilings[label]["modes_covered"])
        room = precondition(f"maf leaves modes to find: its mean modes covered <= 90% of the real ceiling ({ceiling:g})",
                            float(np.mean(values(bench, "maf", "modes_covered"))), 0.9 * ceiling, higher_is_better=False)
        checks = [room]
        if label == "stacked":
            floor = value_of(floors[bench]["confident_share"])
            checks.append(precondition(f"maf's channels are digit-like: confident share >= 2x the untrained "
                                       f"generator's ({floor:.3f}) and >= 0.5",
                                       float(np.mean(values(bench, "maf", "confident_share"))), max(0.5, 2 * floor)))
        out[f"mee_vs_maf_{label}"] = verdict(
            values(bench, "mee", "modes_covered"), values(bench, "maf", "modes_covered"),
            claim=f"MEE covers more modes than MaF ({label})", metric=f"{label}.modes_covered",
            arms=("mee", "maf"), margin=0.0, seeds=seeds[bench], requires=both(*checks))
    if {"mee", "dcgan"} <= set(per_seed.get("digits", {})):
        fd_mee, fd_dcgan = values("digits", "mee", "fd"), values("digits", "dcgan", "fd")
        # Quality kept: MEE's digit FD at most 25% of DCGAN's mean FD above DCGAN's.
        margin = round(0.25 * abs(float(np.mean(fd_dcgan))), 3)
        out["mee_quality_vs_dcgan_digits"] = verdict(
            fd_mee, fd_dcgan, claim="MEE keeps sample quality: digit FD at most 25% of DCGAN's above it",
            metric="digits.fd", arms=("mee", "dcgan"), higher_is_better=False, kind="noninferior", margin=margin,
            seeds=params.gan.image.seeds, digits=3)
    return out


# --- registry -------------------------------------------------------------------------------


def export(params: Params, paths: Paths):
    from embedlab.registry import ModelBundle

    model_dir = paths.model_dir(NAME)
    metrics = json.loads(paths.metrics(NAME).read_text())
    config = json.loads((model_dir / "config.json").read_text())
    seed = metrics["published"]["seed"]
    gen = load_generator(model_dir, *PUBLISHED, seed)
    example = torch.randn(4, gen.z_dim, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float32)
    files = [model_dir / "config.json", model_dir / Job(*PUBLISHED, seed).weights]
    if any((j["bench"], j["arm"]) == ("digits", "mee") for j in config["jobs"]):
        files.append(model_dir / Job("digits", "mee", first_seed(config["jobs"], "digits", "mee")).weights)
    return ModelBundle(
        module=gen, input_example=example, primary_metric=PRIMARY_METRIC, metrics=metrics,
        params=params.gan.model_dump(by_alias=True),
        # The program maps z -> stacked samples; the config and the plain-digits generator ride
        # along so `load_generator` can rebuild either from a downloaded bundle.
        artifacts=[Path(f) for f in files],
        description=f"MEE, stacked digits with a weakened D, seed {seed}: {metrics['published']['chosen_by']}",
    )
