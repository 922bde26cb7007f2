"""train / evaluate / export for the gan method: MEE against MaF, its ablation and a DCGAN.

Benchmarks (each arm x seed is one job, iteration-matched within a benchmark):
  ring, grid      2-D mixtures, MLP nets                       (params gan.toy)
  stacked_weak    stacked digits, weakened D: where collapse shows (params gan.image)
  stacked_full    stacked digits, full-capacity D
  digits          plain digits, for sample quality (Fréchet distance)

train@gan first picks sigma (the entropy weight): one `mee` run per value of
`gan.loss.sigma_sweep` at a selection seed that no reported run uses. On stacked_weak the
*backbone's* mode count decides (and that sigma also serves stacked_full and digits); on
each 2-D mixture, where no classifier is involved, the mixture's own mode count does. Then
every job runs with its benchmark's sigma. models/gan/ holds each generator's
safetensors, config.json (what evaluate and the registry need) and history.json (losses).
Jobs run in `gan.workers` CPU processes with one thread each, or in-process on a GPU.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from embedlab.io import load_weights, save_weights, write_json_atomic
from embedlab.params import Params
from embedlab.paths import Paths

NAME = "gan"
PRIMARY_METRIC = "stacked.modes_covered.mee"
needs_evaluator = True
TOY = ("ring", "grid")
IMAGE = ("stacked_weak", "stacked_full", "digits")
CURVE_EVERY = 10  # loss curves are kept every 10th step


@dataclass(frozen=True)
class Job:
    bench: str  # one of TOY + IMAGE
    arm: str
    seed: int
    sigma: float
    selection: bool = False  # a run of the sigma sweep: scored for the choice, not kept

    @property
    def key(self) -> str:
        if self.selection:
            return f"select/{self.bench}/sigma{self.sigma}"
        return f"{self.bench}/{self.arm}/seed{self.seed}"

    @property
    def weights(self) -> str:
        # Flat, distinct file names: the registry bundle logs files side by side.
        return f"generators/{self.bench}-{self.arm.replace('+', '_')}-seed{self.seed}.safetensors"


# --- nets, data and loop settings per benchmark --------------------------------------------


# Where each benchmark's sigma is chosen.
SIGMA_FROM = {"ring": "ring", "grid": "grid", "stacked_weak": "stacked_weak", "stacked_full": "stacked_weak",
              "digits": "stacked_weak"}


def gen_config(params: Params, bench: str, image_size: int) -> dict:
    """Constructor arguments of a benchmark's generator (stored with its weights)."""
    if bench in TOY:
        t = params.gan.toy
        return {"kind": "mlp", "z_dim": t.z_dim, "out_dim": 2, "hidden": t.hidden, "layers": t.layers}
    i = params.gan.image
    return {"kind": "conv", "z_dim": i.z_dim, "image_size": image_size,
            "channels": 1 if bench == "digits" else 3, "width": i.gen_width}


def build_generator(config: dict) -> torch.nn.Module:
    from embedlab.methods.gan.nets import ConvGenerator, MLPGenerator

    kwargs = {k: v for k, v in config.items() if k != "kind"}
    return MLPGenerator(**kwargs) if config["kind"] == "mlp" else ConvGenerator(**kwargs)


def restore_generator(params: Params, bench: str, image_size: int, state: dict) -> torch.nn.Module:
    """A generator of `bench` from the state dict a job returned, in eval mode."""
    gen = build_generator(gen_config(params, bench, image_size))
    gen.load_state_dict(state)
    return gen.eval()


def _disc_factory(params: Params, bench: str, image_size: int):
    from embedlab.methods.gan.nets import ConvDiscriminator, MLPDiscriminator

    dim = params.gan.loss.embedding_dim
    if bench in TOY:
        t = params.gan.toy
        return lambda head: MLPDiscriminator(2, t.hidden, t.layers, head, dim, t.input_scale)
    i = params.gan.image
    width = i.weak_disc_width if bench == "stacked_weak" else i.disc_width
    channels = 1 if bench == "digits" else 3
    return lambda head: ConvDiscriminator(image_size, channels, width, head, dim)


def loop_config(params: Params, bench: str, sigma: float):
    from embedlab.methods.gan.arms import LoopConfig

    loss = params.gan.loss
    s = params.gan.toy if bench in TOY else params.gan.image
    image_aug = {} if bench in TOY else {"aug_shift": s.aug_shift, "aug_degrees": s.aug_degrees}
    return LoopConfig(
        steps=s.steps, batch_size=s.batch_size, lr=s.lr, betas=tuple(s.betas), maf_form=loss.maf_form,
        maf_scale=loss.maf_scale, lambda_dlle=loss.lambda_dlle, lambda_disomap=loss.lambda_disomap,
        disomap_distance=loss.disomap_distance, sigma=sigma, sigma_ramp=int(loss.sigma_ramp * s.steps),
        buffer_size=loss.buffer_size, aug_noise=s.aug_noise, **image_aug,
    )


def mixture(params: Params, bench: str) -> tuple[torch.Tensor, float]:
    """(centres, std) of a 2-D benchmark."""
    from embedlab.methods.gan.modes import grid_modes, ring_modes

    t = params.gan.toy
    if bench == "ring":
        return ring_modes(8, t.ring_radius), t.ring_std
    return grid_modes(5, t.grid_spacing), t.grid_std


def real_sampler(params: Params, bench: str, images: torch.Tensor, labels: torch.Tensor):
    """(n, torch.Generator) -> a batch of real data for `bench`, on the images' device."""
    from embedlab.methods.gan.modes import sample_mixture, stack_digits

    if bench in TOY:
        centres, std = mixture(params, bench)
        return lambda n, g: sample_mixture(centres, std, n, g).to(images.device)
    if bench == "digits":
        return lambda n, g: images[torch.randint(len(images), (n,), generator=g).to(images.device)]
    return lambda n, g: stack_digits(images, labels, n, g)[0]


# --- running jobs ---------------------------------------------------------------------------


def run_job(job: Job, params: Params, images: torch.Tensor, labels: torch.Tensor, device="cpu") -> tuple[dict, dict]:
    """Train one arm on one benchmark; returns (generator state dict on the CPU, history)."""
    from embedlab.methods.gan.arms import train_arm

    size = int(images.shape[-1])
    config = gen_config(params, job.bench, size)
    gen, history = train_arm(
        job.arm, lambda: build_generator(config), _disc_factory(params, job.bench, size),
        real_sampler(params, job.bench, images, labels), loop_config(params, job.bench, job.sigma), job.seed,
        device=device,
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


def planned_jobs(params: Params, sigma: float) -> list[Job]:
    g = params.gan
    jobs = [Job(bench, arm, seed, sigma) for bench in TOY for arm in g.toy.arms for seed in g.toy.seeds]
    jobs += [Job("stacked_weak", arm, seed, sigma) for arm in g.image.arms for seed in g.image.seeds]
    jobs += [Job("stacked_full", arm, seed, sigma) for arm in g.image.compare_arms for seed in g.image.full_seeds]
    jobs += [Job("digits", arm, seed, sigma) for arm in g.image.compare_arms for seed in g.image.seeds]
    return jobs


def selection_jobs(params: Params) -> list[Job]:
    """The sigma sweep: mee at each sigma, on each benchmark that chooses one."""
    g = params.gan
    seeds = {"ring": g.toy.selection_seed, "grid": g.toy.selection_seed, "stacked_weak": g.image.selection_seed}
    return [Job(bench, "mee", seed, s, selection=True) for bench, seed in seeds.items() for s in g.loss.sigma_sweep]


@torch.no_grad()
def stacked_modes(gen: torch.nn.Module, classifier: torch.nn.Module, n: int, seed: int) -> torch.Tensor:
    """(n,) triple-mode index of n stacked samples, each channel classified by `classifier`:
    K classes give K^3 modes (1,000 for digits)."""
    from embedlab.evaluation import predict
    from embedlab.methods.gan.arms import sample
    from embedlab.methods.gan.modes import triple_modes

    images = sample(gen, n, seed)
    channels = images.reshape(-1, 1, *images.shape[-2:])  # (3n, 1, S, S): channel c of sample i at 3i + c
    probs = predict(classifier, channels)[0]
    return triple_modes(probs.argmax(1).reshape(n, 3), probs.shape[1])


def stacked_mode_count(classifier: torch.nn.Module) -> int:
    return int(classifier.head.out_features) ** 3


def choose_sigma(scores: dict[float, dict]) -> float:
    """Most modes; ties go to the lower mode KL, then to the smaller sigma."""
    return min(scores, key=lambda s: (-scores[s]["modes"], scores[s]["mode_kl"], s))


def selection_score(job: Job, gen: torch.nn.Module, params: Params, backbone: torch.nn.Module) -> dict:
    """What the sigma sweep compares: the backbone's stacked mode count, or (2-D) the
    mixture's own, at the selection seed. The evaluator is never involved."""
    from embedlab.evaluation import class_histogram_kl, count_modes

    if job.bench in TOY:
        from embedlab.methods.gan.scoring import score_toy

        centres, std = mixture(params, job.bench)
        scores, _ = score_toy(gen, centres, std, params.gan.toy.eval_samples, job.seed)
        return {"modes": scores["modes_covered"], "mode_kl": scores["mode_kl"]}
    modes, k = stacked_modes(gen, backbone, params.gan.image.eval_samples, job.seed), stacked_mode_count(backbone)
    return {"modes": count_modes(modes, k), "mode_kl": round(class_histogram_kl(modes, k), 4)}


def train(params: Params, paths: Paths) -> None:
    from tqdm.auto import tqdm

    from embedlab.classifier import load_classifier
    from embedlab.data.prepare import read_prepared
    from embedlab.methods.gan.arms import ARMS
    from embedlab.training import resolve_device

    g = params.gan
    data = read_prepared(paths.prepared)
    images, labels = (torch.as_tensor(a) for a in data.split("train"))
    size = int(data.meta["image_size"])
    backbone = load_classifier(paths.model_dir("backbone"))
    device = resolve_device(params.trainer)
    out = paths.model_dir(NAME)
    out.mkdir(parents=True, exist_ok=True)
    runner = JobRunner(params, images, labels, device)
    start = time.perf_counter()
    histories, results = {}, {}
    try:
        selection = {job: runner.submit(job) for job in selection_jobs(params)}
        # Jobs that do not use sigma run while the sweep finishes; the entropy jobs wait for it.
        later = planned_jobs(params, 0.0)
        uses_sigma = {arm for arm, spec in ARMS.items() if spec.entropy}
        first = {j: runner.submit(j) for j in later if j.arm not in uses_sigma}
        bar = tqdm(total=len(selection) + len(later), desc="train@gan jobs", unit="run")
        scores: dict = defaultdict(dict)
        for job, fut in selection.items():
            state, hist = fut.result()
            gen = restore_generator(params, job.bench, size, state)
            scores[job.bench][job.sigma] = {**selection_score(job, gen, params, backbone),
                                            "seconds": hist["seconds"]}
            bar.update(1)
        sigma = {bench: choose_sigma(scores[source]) for bench, source in SIGMA_FROM.items()}
        bar.set_postfix(sigma=",".join(f"{b}={s}" for b, s in sigma.items() if b in SIGMA_FROM.values()))
        rest = [replace(j, sigma=sigma[j.bench]) for j in later if j.arm in uses_sigma]
        futures = {**first, **{j: runner.submit(j) for j in rest}}
        for job, fut in futures.items():
            state, hist = fut.result()
            path = out / job.weights
            path.parent.mkdir(parents=True, exist_ok=True)
            save_weights(restore_generator(params, job.bench, size, state), path)
            histories[job.key] = hist
            results[job.key] = asdict(job)
            bar.update(1)
        bar.close()
    finally:
        runner.close()
    config = {
        "generators": {b: gen_config(params, b, size) for b in TOY + IMAGE},
        "jobs": [{**results[k], "weights": Job(**results[k]).weights, "seconds": histories[k]["seconds"]}
                 for k in results],
        "sigma": sigma,
        "sigma_selection": {
            "by": {"stacked_weak": "backbone mode count (also for stacked_full, digits)",
                   "ring": "mixture mode count", "grid": "mixture mode count"},
            "seeds": {"stacked_weak": g.image.selection_seed, "ring": g.toy.selection_seed,
                      "grid": g.toy.selection_seed},
            "scores": {b: {str(s): v for s, v in per.items()} for b, per in scores.items()},
        },
        "device": str(device),
        "workers": g.workers if runner.pool is not None else 1,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    write_json_atomic(out / "history.json", {"curve_every": CURVE_EVERY, "runs": histories})
    log_live(paths.dvclive(NAME), histories, scores, sigma)
    write_json_atomic(out / "config.json", config)


def log_live(live_dir: Path, histories: dict, scores: dict, sigma: dict) -> None:
    """dvclive/gan/: the loss curves of the first stacked_weak seed per arm (the dvc plots every
    other model shows), and the sigma sweep as metrics."""
    from dvclive import Live

    runs = {k: v for k, v in histories.items() if k.startswith("stacked_weak/")}
    first = min((int(k.rsplit("seed", 1)[1]) for k in runs), default=None)
    curves = {k.split("/")[1]: v for k, v in runs.items() if k.endswith(f"/seed{first}")}
    # dvcyaml=False: the plots are declared once, in the project's dvc.yaml (Live would
    # otherwise append its own entries there, with paths relative to wherever it ran).
    with Live(str(live_dir), save_dvc_exp=False, dvcyaml=False, report=None) as live:
        for bench, per in scores.items():
            for s, score in per.items():
                live.summary[f"sigma_sweep/{bench}/{s}/modes"] = score["modes"]
        live.summary["sigma"] = sigma
        length = max((len(c["d_loss"]) for c in curves.values()), default=0)
        for i in range(length):
            live.step = i * CURVE_EVERY
            for arm, c in curves.items():
                if i < len(c["d_loss"]):
                    live.log_metric(f"stacked_weak/{arm}/d_loss", c["d_loss"][i])
                    live.log_metric(f"stacked_weak/{arm}/g_loss", c["g_loss"][i])


def load_generator(model_dir: Path, bench: str, arm: str, seed: int, device="cpu") -> torch.nn.Module:
    """A trained generator from models/gan/ (or a folder from `registry.download_bundle`),
    eval mode, grads off."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    gen = build_generator(config["generators"][bench])
    path = model_dir / Job(bench, arm, seed, 0.0).weights
    if not path.exists() and (model_dir / path.name).exists():  # a registry bundle keeps files flat
        path = model_dir / path.name
    if not path.exists():
        raise FileNotFoundError(f"{path}: no generator for {bench}/{arm}/seed{seed}; run `dvc repro train@gan`")
    return load_weights(gen, path, device).requires_grad_(False).eval()


# evaluate / export live in evaluation.py (scoring never shares a module with training).
from embedlab.methods.gan.scoring import evaluate, export  # noqa: E402,F401
