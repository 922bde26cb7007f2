"""evaluate@diffusion: guided accuracy, FD, KID and confident share per arm and training seed,
beside the real floor at the same N; PPAP's claims as paired verdicts over training seeds; export.

For each training seed in `diffusion.seeds` and each arm at the scale train@diffusion chose for
that seed (by the backbone): `samples_per_class` images per class, scored by the fixed evaluator
(`evaluation.samples`): accuracy on the requested class, FD / KID to val + test, confident share.
The real floor is train images with the same class counts. The evaluator also scores the first
seed's sweep samples for the accuracy-vs-scale plot; it selects nothing.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from embedlab.classifiers.nets import build_classifier
from embedlab.data.prepare import read_prepared
from embedlab.evaluation import class_accuracy, predict
from embedlab.evaluation.claims import precondition, verdict
from embedlab.evaluation.intervals import METHODS, mean_interval, over_seeds, value_of
from embedlab.evaluation.samples import SampleScorer, evaluator_id, weights_id
from embedlab.io import load_tensors, load_weights, write_json_atomic
from embedlab.jobs import run_all
from embedlab.methods.base import ModelBundle
from embedlab.methods.diffusion.given import WEIGHTS, ddpm_from, read_config
from embedlab.methods.diffusion.lora import trainable_parameters
from embedlab.methods.diffusion.params import DiffusionParams
from embedlab.methods.diffusion.parts import GUIDED, NAME, PRIMARY_METRIC, Parts, requested_labels, seed_dir
from embedlab.methods.diffusion.plots import plot_all
from embedlab.methods.diffusion.schedule import ddim_step, ddim_timesteps
from embedlab.params import Params, parse_params
from embedlab.paths import Paths

ROOM = 0.2        # the precondition: the off-the-shelf classifier must fail by this much (supervised - naive)
MARGIN = 0.05     # PPAP "guides nearly as well as supervised": no worse by more than 5 points


def sweep_accuracy(info: dict, seed: str, arm: str) -> float:
    """The backbone's accuracy on the requested class at `arm`'s chosen scale, in `seed`'s sweep
    (SELECTION_SEED samples, read by the backbone: train@diffusion's numbers, never the evaluator's)."""
    entry = info["scales"][seed][arm]
    return next(r["backbone_accuracy"] for r in entry["sweep"] if r["scale"] == entry["chosen"])


def room(info: dict, acc: dict | None = None) -> dict:
    """The precondition of both claims, decided before evaluation: the off-the-shelf classifier
    fails to guide (supervised - naive >= ROOM) in the sweeps' backbone accuracies, mean over
    training seeds, with its interval. The same difference in the evaluator's test scores is
    reported beside it (`test_value`), never as the gate."""
    diffs = [sweep_accuracy(info, s, "supervised") - sweep_accuracy(info, s, "naive") for s in info["scales"]]
    mean, lo, hi = mean_interval(diffs)
    test = float(np.mean(acc["supervised"]) - np.mean(acc["naive"])) if acc else None
    return precondition(f"the off-the-shelf classifier fails to guide: supervised - naive >= {ROOM}", mean, ROOM,
                        decided_on="train@diffusion's scale sweeps: the backbone's accuracy at each arm's chosen "
                                   "scale on selection-seed samples, mean over training seeds",
                        test_value=test, interval=(lo, hi), per_seed=[round(d, 4) for d in diffs])


def claims(per_seed: dict, seeds: list[int], info: dict) -> dict:
    """PPAP's claims from per-seed guided accuracies (evaluation.claims), gated by `room`."""
    acc = {arm: [value_of(s["accuracy"]) for s in runs] for arm, runs in per_seed.items() if "accuracy" in runs[0]}
    requires = room(info, acc)
    return {
        "ppap_vs_naive": verdict(acc["ppap"], acc["naive"], claim="PPAP's data-free experts guide better than the "
                                 "off-the-shelf classifier", metric="guided_accuracy", arms=("ppap", "naive"),
                                 margin=0.01, seeds=seeds, requires=requires),
        "ppap_vs_supervised": verdict(acc["ppap"], acc["supervised"], claim="PPAP guides nearly as well as the "
                                      f"supervised multi-experts (no worse by more than {MARGIN})",
                                      metric="guided_accuracy", arms=("ppap", "supervised"), kind="noninferior",
                                      margin=MARGIN, seeds=seeds, requires=requires),
    }


def published_seed(info: dict) -> int:
    """The training seed whose PPAP the registry gets: the highest backbone accuracy at its chosen
    scale in that seed's sweep (val-side, the backbone's reading; never the evaluator's, never test)."""
    return int(max(info["scales"], key=lambda s: (sweep_accuracy(info, s, "ppap"), -int(s))))


def sample_arm(raw: dict, root: str, seed: int, arm: str, scale: float, per_class: int) -> tuple[np.ndarray, float]:
    """One job of `evaluate` in a worker: a training seed's arm at its scale, `per_class` images per
    class drawn at sampling seed = the training seed, and the milliseconds per sample it took."""
    params, paths = parse_params(raw), Paths(Path(root))
    parts = Parts.from_stage(params, paths, seed)
    labels = requested_labels(parts.num_classes, per_class)
    t0 = time.perf_counter()
    images = parts.sample(arm, labels, scale, seed)
    return images.numpy(), (time.perf_counter() - t0) / len(labels) * 1000


def evaluate(params: Params, paths: Paths, evaluator: torch.nn.Module) -> dict:
    from tqdm.auto import tqdm

    p, e = params.diffusion, params.evaluation
    model_dir = paths.model_dir(NAME)
    info = json.loads((model_dir / "train.json").read_text())
    data = read_prepared(paths.prepared)
    scorer = SampleScorer(evaluator, data, e.confidence, e.bootstrap, e.seed)
    labels = requested_labels(data.num_classes, p.samples_per_class)
    floor = scorer.floor(len(labels), labels, seed=e.seed)
    per_seed: dict = defaultdict(list)  # arm -> [scores per training seed]
    first_images, seconds = {}, defaultdict(list)
    # Each (seed, arm)'s samples depend on that seed and arm alone (`Parts.sample`): drawn on
    # `workers` processes, scored here in the same order, so the numbers do not depend on workers.
    jobs = [(seed, arm, 0.0 if arm == "unguided" else float(info["scales"][str(seed)][arm]["chosen"]))
            for seed in p.seeds for arm in ("unguided",) + GUIDED if arm != "cfg" or seed in p.cfg_seeds]
    raw, root = params.model_dump(by_alias=True), str(paths.root)
    bar = tqdm(total=len(jobs), desc="evaluate@diffusion samples", unit="arm", disable=not params.trainer.progress_bar)
    try:
        drawn = run_all(sample_arm, [(raw, root, *job, p.samples_per_class) for job in jobs], min(2, p.workers),
                        bar=bar)
    finally:
        bar.close()
    for (seed, arm, scale), (array, ms_per_sample) in zip(jobs, drawn):
        images = torch.from_numpy(array)
        seconds[arm].append(ms_per_sample)
        scores = scorer.score(images, None if arm == "unguided" else labels, seed=seed)
        per_seed[arm].append({**scores, "scale": scale})
        first_images.setdefault(arm, images)

    def table(metric: str) -> dict:
        out = {arm: over_seeds([r[metric] for r in runs]) for arm, runs in per_seed.items() if metric in runs[0]}
        if metric in floor:
            out["real"] = floor[metric]
        return out

    parts = Parts.from_stage(params, paths, p.seeds[0])
    backbone_total = sum(q.numel() for q in parts.backbone.parameters())
    ppap_trainable = sum(trainable_parameters(x) for x in parts.ppap.experts)
    supervised_trainable = sum(trainable_parameters(x.requires_grad_(True)) for x in parts.supervised.experts)
    pub_seed = published_seed(info)
    pub = per_seed["ppap"][list(p.seeds).index(pub_seed)]
    metrics = {
        "evaluator": evaluator_id(evaluator),
        "ddpm": {"sha256": weights_id(parts.uncond), "weights": "models/ddpm/ddpm_uncond.safetensors",
                 "given": "trained once per data set (pretrain@ddpm); training seeds vary the experts and baselines",
                 **json.loads((paths.model_dir("ddpm") / "train.json").read_text())},
        "n": len(labels),
        "guided_accuracy": table("accuracy"),
        "fd": table("fd"),
        "kid": table("kid"),
        "confident_share": {**table("confident_share"), "real_test": scorer.real_test_share()},
        "scale": {str(s): {a: v["chosen"] for a, v in per.items()} for s, per in info["scales"].items()},
        "claims": claims({a: r for a, r in per_seed.items() if a in GUIDED}, list(p.seeds), info),
        "published": {"seed": pub_seed, "arm": "ppap",
                      "chosen_by": "the backbone's accuracy at the chosen scale in that seed's sweep",
                      "guided_accuracy": pub["accuracy"], "fd": pub["fd"]},
        "trainable_params": {"supervised": supervised_trainable, "supervised_per_expert": backbone_total,
                             "ppap": ppap_trainable, "ppap_per_expert": ppap_trainable // len(parts.ppap.experts)},
        "trainable_fraction": {"ppap": round(ppap_trainable / backbone_total, 4),
                               "ppap_per_expert": round(ppap_trainable / len(parts.ppap.experts) / backbone_total, 4)},
        "sampling_seconds_per_1k": {a: round(float(np.mean(v)), 2) for a, v in seconds.items()},
        "ddim_steps": p.ddim_steps,
        "seeds": list(p.seeds),
        "per_seed": {a: [{k: (v["value"] if isinstance(v, dict) else v) for k, v in r.items()} for r in runs]
                     for a, runs in per_seed.items()},
        "intervals": {"per arm (mean over training seeds)": METHODS["seeds"],
                      "real (train images at the same class counts)": METHODS["bootstrap"] + "; shares: "
                      + METHODS["wilson"], "claims": METHODS["paired"], "published": METHODS["wilson"]},
        "wall_seconds": info["seconds"],
    }
    metrics["sampling_seconds_per_1k"]["guided"] = metrics["sampling_seconds_per_1k"]["ppap"]
    sweep_rows = _score_sweep(model_dir, info["scales"][str(p.seeds[0])], evaluator, parts.num_classes,
                              p.sweep_per_class)
    metrics["sweep"] = sweep_rows
    write_json_atomic(paths.metrics(NAME), metrics)

    plot_all(paths.plots(NAME), first_images, labels, parts.num_classes, sweep_rows, metrics)
    return metrics


def _score_sweep(model_dir: Path, scales: dict, evaluator, num_classes: int, per_class: int) -> dict:
    labels = requested_labels(num_classes, per_class)
    out = {}
    for arm, entry in scales.items():
        rows = []
        for row in entry["sweep"]:
            images = torch.from_numpy(np.load(model_dir / "sweep" / f"{arm}_{row['scale']:g}.npy")).float() / 127.5 - 1
            rows.append({**row, "evaluator_accuracy": round(class_accuracy(predict(evaluator, images)[0], labels), 4)})
        out[arm] = {"chosen": entry["chosen"], "rows": rows}
    return out


# ---- registry --------------------------------------------------------------------------------

class UnguidedSampler(torch.nn.Module):
    """The published program: deterministic DDIM with the given unconditional EMA DDPM, x_T -> x_0
    (the same `ddim_step` as every sampler here). Guided sampling needs gradients of a
    classifier, which a torch.export program cannot take: the bundle carries the parts (`load_bundle`)."""
    def __init__(self, unet, schedule, steps: int, clip: bool = True):
        super().__init__()

        self.unet = unet.eval()
        self.clip = clip
        times = ddim_timesteps(schedule.T, steps)
        self.times = times
        ab = schedule.alphabar.float()
        self.register_buffer("a_now", torch.stack([ab[t] for t in times]))
        self.register_buffer("a_next", torch.stack([ab[t] for t in times[1:]] + [torch.tensor(1.0)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, t in enumerate(self.times):
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            last = i + 1 == len(self.times)
            x = ddim_step(x, self.unet(x, tt), self.a_now[i], None if last else self.a_next[i], self.clip)
        return x.clamp(-1, 1)


def export(params: Params, paths: Paths):
    """The published seed's parts (chosen on the backbone's sweep, `published_seed`), its
    unguided sampler as the program, gated on that seed's PPAP guided accuracy. The given DDPM
    rides along (weights, and its config under config["ddpm"]): the bundle stands alone."""
    metrics = json.loads(paths.metrics(NAME).read_text())
    seed = metrics["published"]["seed"]
    parts = Parts.from_stage(params, paths, seed)
    program = UnguidedSampler(parts.uncond, parts.schedule, params.diffusion.ddim_steps, params.diffusion.ddim_clip)
    ddpm_dir = paths.model_dir("ddpm")
    s = parts.image_size
    c = parts.uncond.stem.in_channels
    example = torch.randn(2, c, s, s, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float32)
    config = {"diffusion": params.diffusion.model_dump(), "seed": seed, "scales": metrics["scale"][str(seed)],
              "image_size": s, "backbone": json.loads((paths.model_dir("backbone") / "config.json").read_text()),
              "ddpm": read_config(ddpm_dir)}
    folder = seed_dir(paths, seed)
    names = ("ddpm_cond", "experts", "supervised")
    files = [ddpm_dir / WEIGHTS] + [folder / f"{n}.safetensors" for n in names if (folder / f"{n}.safetensors").exists()]
    # The backbone rides along under its bundle name (the experts are LoRA over it).
    backbone = load_tensors(paths.model_dir("backbone") / "model.safetensors")
    return ModelBundle(module=program, input_example=example, primary_metric=PRIMARY_METRIC,
                       metrics=metrics, params=params.diffusion.model_dump(), artifacts=files,
                       files={"config.json": config, "backbone.safetensors": backbone},
                       description=f"PPAP, training seed {seed}: {metrics['published']['chosen_by']}",
                       limits="The program samples unguided; guided sampling needs the bundle's parts and the "
                              "backbone. 16x16 greyscale digits only.")


def load_bundle(bundle_dir: Path, device="cpu"):
    """A downloaded `embedlab-diffusion` bundle -> the `Parts` that sample every arm:
    `parts.sample("ppap", labels, parts_scale, seed)` with the scale from config["scales"]."""
    bundle_dir = Path(bundle_dir)
    config = json.loads((bundle_dir / "config.json").read_text())
    backbone = build_classifier(config["backbone"]["arch"], **config["backbone"]["kwargs"])
    backbone = load_weights(backbone, bundle_dir / "backbone.safetensors", device).requires_grad_(False)
    parts = Parts(DiffusionParams(**config["diffusion"]), bundle_dir, backbone, config["image_size"],
                  ddpm_from(config["ddpm"], bundle_dir / WEIGHTS, device), device)
    parts.scales = config["scales"]
    return parts
