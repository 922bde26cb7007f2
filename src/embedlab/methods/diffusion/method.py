"""train@diffusion: per training seed, PPAP's experts, the supervised baseline, the cfg DDPM and
each arm's guidance scale, all over the given DDPM.

The unconditional DDPM is given (PPAP is plug-and-play on an off-the-shelf model): trained once
per data set by pretrain@ddpm (given.py) into models/ddpm, read here, never retrained. Every
training seed in `diffusion.seeds` retrains what the PPAP claim compares, on `workers` spawned
processes (one thread each), each job starting as soon as its inputs exist:
  1. PPAP's experts (data-free: that seed's stream of unlabelled samples of the given DDPM,
     distilled from the backbone) and the supervised multi-experts (one fully fine-tuned
     backbone copy per timestep range, on labelled noisy train images, the experts' step
     budget); for `cfg_seeds`, the conditional DDPM with label dropout (the cfg reference arm,
     the given DDPM's architecture and fit)
  2. the guidance-scale sweep: per arm, samples at each scale, judged by the *backbone*
     (accuracy on the requested class; backbone-feature FD to the val split as a guard).
     The evaluator never sees them here.

models/diffusion/seed<s>/ holds each seed's parts; train.json the timings and chosen scales.
Arms: unguided (the given DDPM: seeds differ only in sampling), naive (the clean backbone on
x_t), supervised, ppap, cfg.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from embedlab.data.prepare import read_prepared
from embedlab.evaluation import class_accuracy, predict
from embedlab.evaluation.distances import features, frechet_distance
from embedlab.io import load_tensors, save_tensors, write_json_atomic
from embedlab.jobs import run_graph
from embedlab.jobstore import method_store
from embedlab.live import open_live
from embedlab.methods.diffusion.experts import expert_module, expert_range, supervised_module, teacher_logits
from embedlab.methods.diffusion.given import check_current, fit, fit_ddpm, load_ddpm, schedule_of
from embedlab.methods.diffusion.lora import add_lora
from embedlab.methods.diffusion.models import _Steps
from embedlab.methods.diffusion.parts import NAME, PRIMARY_METRIC, Parts, _backbone, requested_labels, seed_dir
from embedlab.methods.diffusion.schedule import ddim_sample
from embedlab.methods.diffusion.scoring import evaluate, export, load_bundle
from embedlab.params import Params, ParamsError, parse_params
from embedlab.paths import Paths
from embedlab.training import is_global_zero, resolve_device, world_size

# The method interface (methods/base.py): this module trains; scoring.py evaluates and exports.
name = NAME
primary_metric = PRIMARY_METRIC
needs_evaluator = True
__all__ = ["name", "primary_metric", "needs_evaluator", "train", "evaluate", "export", "load_bundle"]
SELECTION_SEED = 100  # the sweep's sampling seed: never one of the reported seeds


class ShardedSteps(_Steps):
    """_Steps under Lightning's DDP: every step draws world x batch_size rows from the one seeded
    stream and rank r trains on its slice, so the ranks' batches are disjoint draws and each rank
    runs the same number of steps. With one rank (the process group not started) it is _Steps,
    draw for draw. `rank` and `world` come from the process group unless set."""

    rank: int | None = None
    world: int | None = None

    def __iter__(self):
        dist = torch.distributed
        started = dist.is_available() and dist.is_initialized()
        rank = self.rank if self.rank is not None else dist.get_rank() if started else 0
        world = self.world if self.world is not None else dist.get_world_size() if started else 1
        if world == 1:
            yield from super().__iter__()
            return
        b = self.batch_size
        gen = torch.Generator().manual_seed(self.seed)
        n = len(self.tensors[0])
        for _ in range(self.steps):
            idx = torch.randint(n, (world * b,), generator=gen)[rank * b : (rank + 1) * b]
            yield tuple(t[idx] for t in self.tensors)


def _data(paths: Paths, split: str):
    data = read_prepared(paths.prepared)
    x, y = data.split(split)
    return torch.from_numpy(x), torch.from_numpy(y), data.num_classes


# ---- phase 1: the parts ----------------------------------------------------------------------

def train_cfg_ddpm(params: Params, paths: Paths, seed: int) -> dict:
    """The cfg reference arm's conditional DDPM of one training seed: the given DDPM's
    architecture and fit (`diffusion.ddpm`), labels dropped at `label_dropout`."""
    p = params.diffusion
    x, y, classes = _data(paths, "train")
    start = time.perf_counter()
    ema = fit_ddpm(params, p.ddpm, x, y, 1000 * seed + 1, f"ddpm_cond_seed{seed}", classes, p.label_dropout)
    out = seed_dir(paths, seed)
    out.mkdir(parents=True, exist_ok=True)
    if is_global_zero():
        save_tensors(ema, out / "ddpm_cond.safetensors")
    return {f"seed{seed}/ddpm_cond": round(time.perf_counter() - start, 1)}


def kd_images(unet, params: Params, n: int, seed: int, image_size: int) -> tuple[torch.Tensor]:
    """PPAP's distillation set: `n` samples of the given unconditional DDPM. Images only — a
    1-tuple, so no label can ride along (the experts' training step unpacks exactly one)."""
    p = params.diffusion
    gen = torch.Generator().manual_seed(seed)
    out = [ddim_sample(unet.eval(), schedule_of(p.ddpm), (min(500, n - i), unet.stem.in_channels, image_size, image_size), p.ddim_steps,
                       generator=gen, clip=p.ddim_clip) for i in range(0, n, 500)]
    return (torch.cat(out),)


def train_experts(params: Params, paths: Paths, seed: int, which: list[int]) -> dict:
    """PPAP experts `which` of one training seed, each saved as expert_<i>.safetensors (`collect` joins
    them). Every worker of a seed draws the same distillation set (the seed's own sampling stream
    of the given DDPM)."""
    p = params.diffusion
    out = seed_dir(paths, seed)
    out.mkdir(parents=True, exist_ok=True)
    unet, _ = load_ddpm(paths.model_dir("ddpm"))
    start = time.perf_counter()
    kd = kd_images(unet, params, p.ppap.kd_samples, 1000 * seed + 7, int(_data(paths, "val")[0].shape[-1]))
    assert len(kd) == 1, "the distillation set must hold images only"
    seconds = {f"seed{seed}/kd_sampling": round(time.perf_counter() - start, 1)}
    backbone = _backbone(paths)
    targets = teacher_logits(backbone, kd[0])  # the frozen classifier reads the set once
    for i in which:
        t0 = time.perf_counter()
        stream = 1000 * seed + 100 + i
        torch.manual_seed(stream)
        expert = add_lora(backbone, p.ppap.rank, p.ppap.alpha)
        module = expert_module(expert, schedule_of(p.ddpm), expert_range(i, p.ddpm.timesteps, p.ppap.experts),
                               p.ppap.lr, p.ppap.tau)
        fit(module, params, f"expert_{i}_seed{seed}", p.ppap.steps, stream,
            ShardedSteps(kd[0], targets, batch_size=p.ppap.batch_size, steps=p.ppap.steps, seed=stream))
        if is_global_zero():
            save_tensors(expert.state_dict(), out / f"expert_{i}.safetensors")
        seconds[f"seed{seed}/expert_{i}"] = round(time.perf_counter() - t0, 1)
    return seconds


def train_supervised(params: Params, paths: Paths, seed: int, which: list[int]) -> dict:
    """The supervised multi-experts PPAP compares with: for each timestep range a copy of the
    backbone, every weight fine-tuned on labelled noisy train images x_t of that range, with the
    same step budget, batch size and optimiser as a PPAP expert (lr `supervised_lr`)."""
    import copy

    p = params.diffusion
    x, y, _ = _data(paths, "train")
    out = seed_dir(paths, seed)
    out.mkdir(parents=True, exist_ok=True)
    backbone = _backbone(paths)
    seconds = {}
    for i in which:
        t0 = time.perf_counter()
        stream = 1000 * seed + 200 + i
        torch.manual_seed(stream)
        net = copy.deepcopy(backbone).train().requires_grad_(True)  # every weight trains
        module = supervised_module(net, schedule_of(p.ddpm), p.supervised_lr,
                                   expert_range(i, p.ddpm.timesteps, p.ppap.experts))
        fit(module, params, f"supervised_{i}_seed{seed}", p.ppap.steps, stream,
            ShardedSteps(x, y, batch_size=p.ppap.batch_size, steps=p.ppap.steps, seed=stream))
        if is_global_zero():
            save_tensors(net.state_dict(), out / f"supervised_{i}.safetensors")
        seconds[f"seed{seed}/supervised_{i}"] = round(time.perf_counter() - t0, 1)
    return seconds


def collect(model_dir: Path, kind: str, experts: int) -> None:
    """<kind>_<i>.safetensors files -> <kind>s.safetensors (experts) or <kind>.safetensors
    (supervised): a list in timestep order."""
    states = [load_tensors(model_dir / f"{kind}_{i}.safetensors") for i in range(experts)]
    save_tensors(states, model_dir / (f"{kind}s.safetensors" if kind == "expert" else f"{kind}.safetensors"))
    for i in range(experts):
        (model_dir / f"{kind}_{i}.safetensors").unlink()


# ---- the arms ------------------------------------------------------------------------------

def sweep(params: Params, paths: Paths, seed: int, arms: list[str], keep_images: bool) -> dict:
    """Phase 2 for one training seed: each arm's scale, chosen by the backbone on samples at
    SELECTION_SEED: the highest backbone accuracy on the requested class among scales whose
    backbone-feature FD to the val split stays within `fd_guard` x the unguided samples' FD."""
    p = params.diffusion
    parts = Parts.from_stage(params, paths, seed)
    val, _, _ = _data(paths, "val")
    val_features = features(parts.backbone, val)
    labels = requested_labels(parts.num_classes, p.sweep_per_class)
    fd_unguided = frechet_distance(val_features, features(parts.backbone, parts.sample("unguided", labels, 0.0,
                                                                                     SELECTION_SEED)))
    out = {}
    for arm in arms:
        rows = []
        for scale in (p.cfg_scales if arm == "cfg" else p.scales):
            t0 = time.perf_counter()
            images = parts.sample(arm, labels, scale, SELECTION_SEED)
            acc = class_accuracy(predict(parts.backbone, images)[0], labels)
            fd = frechet_distance(val_features, features(parts.backbone, images))
            rows.append({"scale": scale, "backbone_accuracy": round(acc, 4), "backbone_fd_val": round(fd, 2),
                         "seconds": round(time.perf_counter() - t0, 1)})
            if keep_images:  # the first seed's sweep samples, for the evaluator's accuracy-vs-scale plot
                folder = paths.model_dir(NAME) / "sweep"
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / f"{arm}_{scale:g}.npy",
                        ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy())
        allowed = [r for r in rows if r["backbone_fd_val"] <= p.fd_guard * fd_unguided] or rows
        best = max(allowed, key=lambda r: (r["backbone_accuracy"], -r["scale"]))
        out[arm] = {"chosen": best["scale"], "sweep": rows}
    out["_unguided_backbone_fd_val"] = round(fd_unguided, 2)
    return out


# ---- the stage -----------------------------------------------------------------------------

def _run_part(name: str, raw: dict, root: str, seed: int, arg=None):
    """One job of `plan` in a worker: params and paths travel as plain values."""
    params, paths = parse_params(raw), Paths(Path(root))
    if name == "ddpm_cond":
        return train_cfg_ddpm(params, paths, seed)
    if name == "experts":
        return train_experts(params, paths, seed, arg)
    if name == "supervised":
        return train_supervised(params, paths, seed, arg)
    if name == "sweep":
        return sweep(params, paths, seed, arg, keep_images=seed == params.diffusion.seeds[0])
    raise ValueError(name)


def plan(p) -> tuple[dict, dict]:
    """Every job of train@diffusion, {key: (part, seed, argument)}, and what each waits for: the
    experts and supervised experts need only the given DDPM (there before the stage starts), a
    seed's sweep waits for those and its cfg DDPM. The cfg DDPMs, the longest jobs, go first.
    A seed's experts are one job, so its distillation set is sampled once (split in halves, each
    half sampled it again: 12 s per half, measured); with its supervised experts, also one job,
    the seeds give two workers an even number of equal jobs."""
    everyone = list(range(p.ppap.experts))
    jobs: dict = {f"ddpm_cond/{s}": ("ddpm_cond", s, None) for s in p.seeds if s in p.cfg_seeds}
    after: dict = {}
    for s in p.seeds:
        parts = []
        for kind in ("experts", "supervised"):
            key = f"{kind}/{s}/0"
            jobs[key] = (kind, s, everyone)
            parts.append(key)
        arm_groups = (["naive", "ppap"], ["supervised"] + (["cfg"] if s in p.cfg_seeds else []))
        for i, arms in enumerate(arm_groups):
            key = f"sweep/{s}/{i}"
            jobs[key] = ("sweep", s, arms)
            after[key] = parts + ([f"ddpm_cond/{s}"] if s in p.cfg_seeds else [])
    return jobs, after


def train(params: Params, paths: Paths) -> None:
    from tqdm.auto import tqdm

    p = params.diffusion
    try:  # the given DDPM: present, and trained on these params and data
        check_current(params, paths)
    except ValueError as exc:  # a stale given network: refused before any work, as bad params are
        raise ParamsError(str(exc)) from None
    model_dir = paths.model_dir(NAME)
    model_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    raw, root = params.model_dump(by_alias=True), str(paths.root)
    jobs, after = plan(p)
    in_process = resolve_device(params.trainer).type != "cpu"
    bar = tqdm(total=len(jobs), desc="train@diffusion parts", unit="part",
               disable=not params.trainer.progress_bar or not is_global_zero())
    parts_of = {s: [k for k in jobs if k.split("/")[0] in ("experts", "supervised") and k.split("/")[1] == str(s)]
                for s in p.seeds}
    done: set = set()

    def join_experts(key: str, _result) -> None:
        # A seed's sweep waits for all its expert files; join them into one file per kind first.
        done.add(key)
        seed = int(key.split("/")[1])
        if key in parts_of[seed] and set(parts_of[seed]) <= done:
            collect(seed_dir(paths, seed), "expert", p.ppap.experts)
            collect(seed_dir(paths, seed), "supervised", p.ppap.experts)

    def written(key: str, _result) -> list[Path]:
        """The files job `key` wrote: kept with its result for a rerun (embedlab.jobstore)."""
        part, seed, arg = jobs[key]
        folder = seed_dir(paths, seed)
        if part == "ddpm_cond":
            return [folder / "ddpm_cond.safetensors"]
        if part in ("experts", "supervised"):
            return [folder / f"{part.removesuffix('s')}_{i}.safetensors" for i in arg]
        if seed != p.seeds[0]:  # a sweep: the first seed's keeps its samples
            return []
        return [model_dir / "sweep" / f"{arm}_{scale:g}.npy" for arm in arg
                for scale in (p.cfg_scales if arm == "cfg" else p.scales)]

    store = None
    if world_size(params.trainer) > 1:
        results = _train_ddp(jobs, raw, root, bar, join_experts)
        if results is None:
            return  # a rank the launcher started: rank 0 writes
    else:
        # A killed run's finished parts (and their files) are kept for the rerun (embedlab.jobstore).
        store = method_store(NAME, params, paths, [paths.prepared, paths.model_dir("backbone"), paths.model_dir("ddpm")])
        try:
            results = run_graph(_run_part, {k: (n, raw, root, s, a) for k, (n, s, a) in jobs.items()}, after,
                                min(2, p.workers), in_process, bar, on_done=join_experts, store=store, files=written)
        finally:
            bar.close()
    out: dict = {"seconds": {}, "scales": {}, "unguided_backbone_fd_val": {}}
    for key, result in sorted(results.items()):  # job keys, not completion order: the same file on every run
        part, seed = key.split("/")[:2]
        if part == "sweep":
            out["scales"].setdefault(seed, {}).update({k: v for k, v in result.items() if not k.startswith("_")})
            out["unguided_backbone_fd_val"][seed] = result["_unguided_backbone_fd_val"]
        else:
            out["seconds"].update(result)
    out["seconds"]["train"] = round(time.perf_counter() - start, 1)
    out["config"] = p.model_dump()
    if world_size(params.trainer) > 1:
        out["ddp"] = {"world_size": world_size(params.trainer), "batch_per_rank": p.ppap.batch_size}
    write_json_atomic(model_dir / "train.json", out)
    log_live(paths.dvclive(NAME), out, str(p.seeds[0]))
    if store is not None:
        store.done()


def _train_ddp(jobs: dict, raw: dict, root: str, bar, join_experts) -> dict | None:
    """train@diffusion under Lightning's DDP (trainer.devices x num_nodes > 1): every fit (the
    experts, the supervised experts, a cfg DDPM) on every rank, in one order, each rank on its
    slice of every step's draws (ShardedSteps; the cfg DDPM's stream, given.py's, is not sliced:
    every rank the same batch, so that fit gains nothing from more devices); then rank 0 alone
    joins the experts and runs the sweeps, which sample and never train. Job-level resume is
    off under DDP (every rank must run every fit). Returns None on the other ranks."""
    results = {}
    for key, (part, seed, arg) in jobs.items():
        if part != "sweep":
            results[key] = _run_part(part, raw, root, seed, arg)
            bar.update(1)
    if not is_global_zero():
        bar.close()
        return None
    for key in list(results):
        join_experts(key, results[key])
    for key, (part, seed, arg) in jobs.items():
        if part == "sweep":
            results[key] = _run_part(part, raw, root, seed, arg)
            bar.update(1)
    bar.close()
    return results


def log_live(live_dir: Path, results: dict, seed: str) -> None:
    """dvclive/diffusion/: the first seed's scale sweep (backbone accuracy and backbone FD to val
    per arm, one step per scale index) and every seed's chosen scales. Seeds and arms in sorted
    order: the jobs finish in an order that depends on timing (the file is committed to git)."""
    with open_live(live_dir) as live:
        live.summary["chosen_scale"] = {s: {arm: v["chosen"] for arm, v in sorted(per.items())}
                                        for s, per in sorted(results["scales"].items())}
        scales = dict(sorted(results["scales"][seed].items()))
        length = max(len(v["sweep"]) for v in scales.values())
        for i in range(length):
            live.step = i
            for arm, v in scales.items():
                if i < len(v["sweep"]):
                    live.log_metric(f"sweep/{arm}/backbone_accuracy", v["sweep"][i]["backbone_accuracy"])
                    live.log_metric(f"sweep/{arm}/backbone_fd_val", v["sweep"][i]["backbone_fd_val"])

