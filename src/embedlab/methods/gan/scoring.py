"""evaluate@gan and the registry bundle: every trained generator scored by the evaluator
(stacked and plain digits) or by the known mixture geometry (2-D), means and std over seeds.

The evaluator never trains or selects anything here: sigma was chosen in train@gan by the
backbone. metrics/gan.json puts dcgan / maf / mee at the top level of each benchmark and the
two ablation arms under `ablation.<benchmark>`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from embedlab.io import write_json_atomic
from embedlab.params import Params
from embedlab.paths import Paths

MAIN_ARMS = ("dcgan", "maf", "mee")
PUBLISHED = ("stacked_weak", "mee")  # the registry's program: the generator the primary metric scores


def _mean_std(values: list[float]) -> tuple[float, float]:
    return round(float(np.mean(values)), 4), round(float(np.std(values)), 4)


def score_toy(gen, centres: torch.Tensor, std: float, n: int, seed: int) -> tuple[dict, torch.Tensor]:
    from embedlab.evaluation import class_histogram_kl, count_modes
    from embedlab.methods.gan.arms import sample
    from embedlab.methods.gan.modes import assign_modes, high_quality_fraction

    points = sample(gen, n, seed)
    modes = assign_modes(points, centres, std)
    k = len(centres)
    return {"modes_covered": count_modes(modes, k), "high_quality": round(high_quality_fraction(modes), 4),
            "mode_kl": round(class_histogram_kl(modes, k), 4)}, points


def score_stacked(gen, evaluator, n: int, seed: int) -> tuple[dict, np.ndarray]:
    from embedlab.evaluation import class_histogram_kl, count_modes
    from embedlab.evaluation.scores import mode_histogram
    from embedlab.methods.gan.method import stacked_mode_count, stacked_modes

    modes, k = stacked_modes(gen, evaluator, n, seed), stacked_mode_count(evaluator)
    return ({"modes_covered": count_modes(modes, k), "mode_kl": round(class_histogram_kl(modes, k), 4)},
            mode_histogram(modes, k))


def first_seed(jobs: list[dict], bench: str, arm: str | None = None) -> int:
    """The lowest seed trained for `bench` (and `arm`): the run pictures and the bundle show."""
    return min(j["seed"] for j in jobs if j["bench"] == bench and arm in (None, j["arm"]))


def _table(per_seed: dict[str, dict[str, list[float]]], arms) -> dict:
    """{metric: {arm: mean}, metric_std: {arm: std}} over the arms present."""
    out: dict = defaultdict(dict)
    for arm in arms:
        for metric, values in per_seed.get(arm, {}).items():
            mean, std = _mean_std(values)
            out[metric][arm] = mean
            out[f"{metric}_std"][arm] = std
    return dict(out)


@torch.no_grad()
def evaluate(params: Params, paths: Paths, evaluator: torch.nn.Module) -> dict:
    from tqdm.auto import tqdm

    from embedlab.data.prepare import read_prepared
    from embedlab.evaluation.fid import frechet_distance
    from embedlab.methods.gan.arms import sample
    from embedlab.methods.gan.method import NAME, TOY, load_generator, mixture
    from embedlab.methods.gan.plots import write_plots

    g = params.gan
    model_dir = paths.model_dir(NAME)
    config = json.loads((model_dir / "config.json").read_text())
    history = json.loads((model_dir / "history.json").read_text())
    data = read_prepared(paths.prepared)
    test_x = torch.as_tensor(data.split("test")[0])
    val_x = torch.as_tensor(data.split("val")[0])

    per_seed: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    seconds: dict = defaultdict(lambda: defaultdict(list))
    shown: dict = defaultdict(dict)  # bench -> arm -> what the plots show (first seed)
    first = {bench: first_seed(config["jobs"], bench) for bench in {j["bench"] for j in config["jobs"]}}
    for job in tqdm(config["jobs"], desc="evaluate@gan", unit="generator"):
        bench, arm, seed = job["bench"], job["arm"], job["seed"]
        gen = load_generator(model_dir, bench, arm, seed)
        seconds[bench][arm].append(job["seconds"])
        if bench in TOY:
            centres, std = mixture(params, bench)
            scores, points = score_toy(gen, centres, std, g.toy.eval_samples, seed)
            view = points
        elif bench == "digits":
            images = sample(gen, g.image.fd_samples, seed)
            scores = {"fd": round(frechet_distance(test_x, images, evaluator), 3)}
            view = images[:100]
        else:
            scores, hist = score_stacked(gen, evaluator, g.image.eval_samples, seed)
            view = (sample(gen, 100, seed), hist)
        for metric, value in scores.items():
            per_seed[bench][arm][metric].append(value)
        if seed == first[bench]:
            shown[bench][arm] = view

    rename = {"stacked_weak": "stacked"}
    metrics: dict = {}
    ablation: dict = {}
    for bench, arms in per_seed.items():
        key = rename.get(bench, bench)
        metrics[key] = _table(arms, [a for a in MAIN_ARMS if a in arms])
        extra = [a for a in arms if a not in MAIN_ARMS]
        if extra:
            ablation[key] = _table(arms, extra)
    metrics["ablation"] = ablation
    metrics["digits"]["fd_real_val"] = round(frechet_distance(test_x, val_x, evaluator), 3)  # the floor
    metrics["per_seed"] = {rename.get(b, b): {a: dict(m) for a, m in arms.items()} for b, arms in per_seed.items()}
    metrics["wall_seconds"] = {rename.get(b, b): {a: round(float(np.mean(v)), 2) for a, v in arms.items()}
                               for b, arms in seconds.items()}
    metrics["sigma"] = config["sigma"]
    metrics["sigma_selection"] = config["sigma_selection"]["scores"]
    metrics["train_wall_seconds"] = config["wall_seconds"]
    metrics["settings"] = {"toy_steps": g.toy.steps, "image_steps": g.image.steps,
                           "toy_seeds": len(g.toy.seeds), "image_seeds": len(g.image.seeds),
                           "stacked_eval_samples": g.image.eval_samples, "fd_samples": g.image.fd_samples}
    write_plots(paths.plots(NAME), shown, history, {b: mixture(params, b) for b in TOY}, metrics)
    write_json_atomic(paths.metrics(NAME), metrics)
    return metrics


def export(params: Params, paths: Paths):
    from embedlab.methods.gan.method import NAME, Job, load_generator
    from embedlab.registry import ModelBundle

    model_dir = paths.model_dir(NAME)
    metrics = json.loads(paths.metrics(NAME).read_text())
    config = json.loads((model_dir / "config.json").read_text())
    seed = first_seed(config["jobs"], *PUBLISHED)
    gen = load_generator(model_dir, *PUBLISHED, seed)
    example = torch.randn(4, gen.z_dim, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float32)
    files = [model_dir / "config.json", model_dir / Job(*PUBLISHED, seed, 0.0).weights]
    if any((j["bench"], j["arm"]) == ("digits", "mee") for j in config["jobs"]):
        files.append(model_dir / Job("digits", "mee", first_seed(config["jobs"], "digits", "mee"), 0.0).weights)
    return ModelBundle(
        module=gen, input_example=example, primary_metric="stacked.modes_covered.mee", metrics=metrics,
        params=params.gan.model_dump(),
        # The program maps z -> stacked samples; the config and the plain-digits generator ride
        # along so `load_generator` can rebuild either from a downloaded bundle.
        artifacts=[Path(f) for f in files],
    )
