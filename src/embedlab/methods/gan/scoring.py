"""How a generator is read, per benchmark: the shared toolkit (evaluation/) applied to GAN samples.

- 2-D mixtures: a point has the mode of its nearest Gaussian when within 3 std, else none;
  `high_quality` is the share with a mode.
- Stacked digits: each channel is read by a classifier (the evaluator to score, the backbone to
  select); a channel counts only when the reading is confident, a sample has a mode only when
  all three channels do (`confident_share` is the share of confident channels: how digit-like
  the channels are).
- Plain digits: FD / KID / confident share against val + test (`evaluation.samples`), and
  the confident mode count over the 10 classes (how MEE's plain-digit generator is published
  when stacked digits do not run).

Every count is reported beside the real-data ceiling (real samples at the same N) and the
untrained floor; a mode needs `min_count` samples, derived from the ceiling
(`evaluation.modes.min_count_from_ceiling`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from embedlab.classifiers.nets import load_classifier
from embedlab.data.prepare import read_prepared
from embedlab.evaluation.claims import all_of, precondition, verdict
from embedlab.evaluation.intervals import METHODS, over_seeds, value_of
from embedlab.evaluation.modes import confident_classes
from embedlab.evaluation.samples import SampleScorer, evaluator_id
from embedlab.evaluation.scores import predict
from embedlab.io import write_json_atomic
from embedlab.methods.base import ModelBundle
from embedlab.methods.gan.arms import sample
from embedlab.methods.gan.modes import (
    digit_mode_count,
    digits_ceiling,
    score_digit_modes,
    score_stacked,
    score_toy,
    stacked_ceiling,
    stacked_mode_count,
    stacked_readings,
    toy_ceiling,
)
from embedlab.methods.gan.parts import (
    DIGITS_CLAIM_NOT_RUN,
    NAME,
    NOT_RUN,
    PRIMARY_METRIC,
    STACKED,
    TOY,
    TOY_NOT_RUN,
    Job,
    load_generator,
    mixture,
    untrained_generator,
)
from embedlab.methods.gan.plots import write_plots
from embedlab.params import Params
from embedlab.paths import Paths

MAIN_ARMS = ("dcgan", "maf", "mee")


# --- evaluate (the stage) -------------------------------------------------------------------------------


def first_seed(jobs: list[dict], bench: str, arm: str | None = None) -> int:
    """The lowest seed trained for `bench` (and `arm`): the run the pictures show."""
    return min(j["seed"] for j in jobs if j["bench"] == bench and arm in (None, j["arm"]))


def published_seed(config: dict) -> int:
    """The reported run of the published benchmark and arm (`published_of`) with the most modes in
    the backbone's reading (ties: lower KL, then the lower seed): what publish registers. The
    evaluator plays no part in the choice."""
    reads = config["backbone_reads"]["per_seed"]
    return int(min(reads, key=lambda s: (-reads[s]["modes_covered"], reads[s]["mode_kl"], int(s))))


def published_of(config: dict) -> tuple[str, str, int]:
    """(benchmark, arm, seed) of the published generator, from models/gan/config.json: MEE on
    stacked_weak with `gan.image.stacked`, else MEE on plain digits (`benchmarks.published_run`)."""
    reads = config["backbone_reads"]
    return reads.get("bench", "stacked_weak"), reads.get("arm", "mee"), published_seed(config)


@torch.no_grad()
def evaluate(params: Params, paths: Paths, evaluator: torch.nn.Module) -> dict:
    from tqdm.auto import tqdm

    g, e = params.gan, params.evaluation
    model_dir = paths.model_dir(NAME)
    config = json.loads((model_dir / "config.json").read_text())
    history = json.loads((model_dir / "history.json").read_text())
    data = read_prepared(paths.prepared)
    images, labels = (torch.as_tensor(a) for a in data.split("train"))
    size = int(data.meta["image_size"])
    scorer = SampleScorer(evaluator, data, e.confidence, e.bootstrap, e.seed)
    n_digits = scorer.cap(e.samples)

    # The real ceiling of every benchmark trained at its N, and the min count it implies.
    trained = {j["bench"] for j in config["jobs"]}
    ceilings, min_count = {}, {}
    for bench in [b for b in TOY if b in trained]:
        ceilings[bench], min_count[bench] = toy_ceiling(*mixture(params, bench), g.toy.eval_samples, e.seed,
                                                         e.mode_min_fraction)
    if trained & set(STACKED):
        ceilings["stacked"], min_count["stacked"] = stacked_ceiling(images, labels, evaluator, g.image.eval_samples,
                                                                    e.seed, e.confidence, e.mode_min_fraction)
    digit_modes, min_count["digits"] = digits_ceiling(images, evaluator, n_digits, e.seed, e.confidence,
                                                      e.mode_min_fraction)
    ceilings["digits"] = {**scorer.floor(n_digits, seed=e.seed), **digit_modes}

    backbone = load_classifier(paths.model_dir("backbone")).eval()
    gate_reads: dict = defaultdict(list)  # digits arm -> the backbone's confident share per seed

    def read(bench: str, gen, seed: int, arm: str | None = None):
        if bench in TOY:
            points = sample(gen, g.toy.eval_samples, seed)
            return score_toy(points, *mixture(params, bench), min_count[bench]), points
        if bench == "digits":
            imgs = sample(gen, n_digits, seed)
            modes = score_digit_modes(imgs, evaluator, e.confidence, min_count["digits"])
            # The quality gate's reading: the backbone's, not the scoring evaluator's (claims()).
            gate_reads[arm].append(confident_share(imgs, backbone, e.confidence))
            return {**scorer.score(imgs, seed=seed), **modes}, imgs[:100]
        imgs = sample(gen, g.image.eval_samples, seed)
        return score_stacked(imgs, evaluator, e.confidence, min_count["stacked"]), imgs

    per_seed: dict = defaultdict(lambda: defaultdict(list))   # bench -> arm -> [score dict per seed]
    seconds: dict = defaultdict(lambda: defaultdict(list))
    shown: dict = defaultdict(dict)
    first = {bench: first_seed(config["jobs"], bench) for bench in {j["bench"] for j in config["jobs"]}}
    for job in tqdm(config["jobs"], desc="evaluate@gan", unit="generator", disable=not params.trainer.progress_bar):
        bench, arm, seed = job["bench"], job["arm"], job["seed"]
        scores, view = read(bench, load_generator(model_dir, bench, arm, seed), seed, arm)
        per_seed[bench][arm].append(scores)
        seconds[bench][arm].append(job["seconds"])
        if seed == first[bench]:
            if bench.startswith("stacked"):
                hist = np.bincount(np.clip(stacked_readings(view, evaluator, e.confidence)[1].numpy(), -1, None) + 1,
                                   minlength=1001)[1:]
                view = (view[:100], hist)
            shown[bench][arm] = view
    # The untrained floor: each benchmark's generator before any step (first seed).
    floors = {bench: read(bench, untrained_generator(params, bench, size, first[bench], int(images.shape[1])), first[bench],
                          "untrained")[0]
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
        metrics[key]["min_count"] = min_count[key if bench in TOY or bench == "digits" else "stacked"]
    # What the CPU default leaves to the paper preset, benchmarks and the claims on them.
    if not trained & set(STACKED):
        metrics["not_run"] = {"stacked": NOT_RUN, "stacked_full": NOT_RUN, "mee_vs_maf_stacked": NOT_RUN}
    if not trained & set(TOY):
        metrics.setdefault("not_run", {}).update({key: TOY_NOT_RUN for bench in TOY
                                                  for key in (bench, f"mee_vs_maf_{bench}")})
    metrics["claims"] = claims(per_seed, ceilings, floors, params, config["tuning"], dict(gate_reads))
    if "mee_quality_vs_dcgan_digits" not in metrics["claims"]:
        metrics.setdefault("not_run", {})["mee_quality_vs_dcgan_digits"] = DIGITS_CLAIM_NOT_RUN
    bench, arm, seed = published_of(config)
    published_runs = [j["seed"] for j in config["jobs"] if (j["bench"], j["arm"]) == (bench, arm)]
    pub = per_seed[bench][arm][published_runs.index(seed)]
    stacked = bench in STACKED
    metrics["published"] = {"bench": bench, "arm": arm, "seed": seed,
                            "chosen_by": "the backbone's confident mode count of the reported mee runs"
                                         + ("" if stacked else " on plain digits"),
                            "modes_covered": pub["modes_covered"],
                            "modes": stacked_mode_count(evaluator) if stacked else digit_mode_count(evaluator),
                            "min_count": min_count["stacked" if stacked else "digits"],
                            "confident_share": pub["confident_share"]}
    metrics["per_seed"] = {rename.get(b, b): {a: [_flat(s) for s in v] for a, v in arms.items()}
                           for b, arms in per_seed.items()}
    metrics["wall_seconds"] = {rename.get(b, b): {a: round(float(np.mean(v)), 2) for a, v in arms.items()}
                               for b, arms in seconds.items()}
    metrics["tuning"] = {"chosen": config["tuning"]["chosen"], "scores": config["tuning"]["scores"]}
    metrics["train_wall_seconds"] = config["wall_seconds"]
    metrics["settings"] = {"stacked": bool(trained & set(STACKED)), "toy": bool(trained & set(TOY)),
                           "toy_steps": g.toy.steps, "image_steps": g.image.steps,
                           "toy_seeds": len(g.toy.seeds), "image_seeds": len(g.image.seeds),
                           "stacked_eval_samples": g.image.eval_samples, "digits_samples": n_digits,
                           "confidence": e.confidence, "mode_min_fraction": e.mode_min_fraction}
    metrics["intervals"] = {"per arm (mean over training seeds)": METHODS["seeds"],
                            "real / untrained (one run)": METHODS["bootstrap"] + "; shares: " + METHODS["wilson"],
                            "claims": METHODS["paired"]}
    write_plots(paths.plots(NAME), shown, history, {b: mixture(params, b) for b in TOY if b in trained}, metrics)
    write_json_atomic(paths.metrics(NAME), metrics)
    return metrics


def _flat(scores: dict) -> dict:
    """A per-seed score dict with scores reduced to their values (for the per_seed table)."""
    return {k: value_of(v) if isinstance(v, dict) else v for k, v in scores.items()}


def _tables(arms: dict[str, list[dict]], ceiling: dict | None, floor: dict) -> dict:
    """{metric: {arm: mean over seeds with its interval, "real": ceiling, "untrained": floor}}."""
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


def confident_share(images: torch.Tensor, classifier: torch.nn.Module, threshold: float) -> float:
    """The share of samples `classifier` reads as some class with confidence >= threshold."""
    return float((confident_classes(predict(classifier, images)[0], threshold) >= 0).float().mean())


QUALITY_FLOOR = 0.5  # a readable image sample: the backbone confident on at least half of them


def claims(per_seed: dict, ceilings: dict, floors: dict, params: Params, tuning: dict,
           gate_reads: dict | None = None) -> dict:
    """MEE's claims, each a paired verdict over the reported training seeds (evaluation.claims),
    with preconditions fixed before the reported seeds are scored:

    - room (the mode-count claims): MaF, at its chosen configuration on the selection seed
      (train@gan's tuning run, read by the mixture or the backbone), covers at most 90% of the
      real ceiling's modes;
    - one quality gate on every benchmark: both compared arms beat the untrained generator. On
      the 2-D mixtures each covers more modes than the untrained floor (selection seed); on
      stacked digits each arm's channels are confident (>= max(0.5, 2x the untrained floor)
      in every reported seed: the tuning runs keep mode counts only); on plain digits, which no
      tuning run reads, the backbone is confident on >= 0.5 of each arm's samples in every
      reported seed and on more than twice the untrained generator's share (the gate reads the
      confident share, never the claim's FD, and never through the scoring evaluator).

    Each check carries `decided_on` and its test-time counterpart (`test_value`), which is
    reported, never a gate. A claim whose checks fail is "untested", the reason in its row."""
    def values(bench, arm, metric):
        return [value_of(s[metric]) for s in per_seed[bench][arm]]

    def at_choice(bench, arm) -> tuple[dict, str]:
        chosen = tuning["chosen"][f"{bench}/{arm}"]
        where = (f"selection seed {tuning['seeds'][bench]}: {arm} at its chosen {chosen['key']} "
                 f"{chosen['value']:g} (train@gan's tuning run, {tuning['by'][bench]})")
        return tuning["scores"][f"{bench}/{arm}"][f"{chosen['value']:g}"], where

    out = {}
    seeds = {"ring": params.gan.toy.seeds, "grid": params.gan.toy.seeds, "stacked_weak": params.gan.image.seeds}
    for bench, label in (("stacked_weak", "stacked"), ("ring", "ring"), ("grid", "grid")):
        if not {"mee", "maf"} <= set(per_seed.get(bench, {})) or f"{bench}/maf" not in tuning.get("chosen", {}):
            continue
        ceiling = value_of(ceilings[label]["modes_covered"])
        maf, where = at_choice(bench, "maf")
        checks = [precondition(f"maf leaves modes to find: modes covered <= 90% of the real ceiling ({ceiling:g})",
                               float(maf["modes_covered"]), 0.9 * ceiling, higher_is_better=False, decided_on=where,
                               test_value=float(np.mean(values(bench, "maf", "modes_covered"))))]
        for arm in ("maf", "mee"):
            read, where = at_choice(bench, arm)
            if label == "stacked":
                # train@gan's tuning runs keep their mode counts only: the channels' confident
                # share is read on the reported samples, the lowest seed counting (as for digits).
                floor = value_of(floors[bench]["confident_share"])
                shares = values(bench, arm, "confident_share")
                checks.append(precondition(
                    f"{arm}'s channels are digit-like: confident share >= max(0.5, 2x the untrained generator's "
                    f"{floor:.3f}) in every seed", min(shares), max(QUALITY_FLOOR, 2 * floor),
                    decided_on="the evaluator's confident share of each reported seed's channels, the lowest seed "
                               "counting (the tuning runs record mode counts only; never the claim's mode count)",
                    per_seed=[round(x, 4) for x in shares]))
            else:
                floor = value_of(floors[bench]["modes_covered"])
                checks.append(precondition(
                    f"{arm} beats the untrained generator: modes covered > its {floor:g}",
                    float(read["modes_covered"]), floor + 1, decided_on=where,
                    test_value=float(np.mean(values(bench, arm, "modes_covered")))))
        out[f"mee_vs_maf_{label}"] = verdict(
            values(bench, "mee", "modes_covered"), values(bench, "maf", "modes_covered"),
            claim=f"MEE covers more modes than MaF ({label})", metric=f"{label}.modes_covered",
            arms=("mee", "maf"), margin=0.0, seeds=seeds[bench], requires=all_of(*checks))
    if {"mee", "dcgan"} <= set(per_seed.get("digits", {})):
        fd_mee, fd_dcgan = values("digits", "mee", "fd"), values("digits", "dcgan", "fd")
        reads = gate_reads or {}
        floor = (reads.get("untrained") or [float("nan")])[0]
        checks = [precondition(
            f"{arm}'s digits are readable: the backbone confident on >= {QUALITY_FLOOR} of its samples in every seed, "
            f"and on > 2x the untrained generator's share ({floor:.3f})",
            min(reads.get(arm) or [float("nan")]), max(QUALITY_FLOOR, 2 * floor),
            decided_on="the backbone's confident share of each reported seed's samples, the lowest seed counting: "
                       "the reader every other GAN gate uses, never the scoring evaluator and never the claim's FD "
                       "(no selection run reads plain digits)",
            per_seed=[round(x, 4) for x in reads.get(arm, [])],
            evaluator_per_seed=[round(x, 4) for x in values("digits", arm, "confident_share")]) for arm in ("dcgan", "mee")]
        # Quality kept: MEE's digit FD at most 25% of DCGAN's mean FD above DCGAN's.
        margin = round(0.25 * abs(float(np.mean(fd_dcgan))), 3)
        out["mee_quality_vs_dcgan_digits"] = verdict(
            fd_mee, fd_dcgan, claim="MEE keeps sample quality: digit FD at most 25% of DCGAN's above it",
            metric="digits.fd", arms=("mee", "dcgan"), higher_is_better=False, kind="noninferior", margin=margin,
            seeds=params.gan.image.seeds, digits=3, requires=all_of(*checks))
    return out


# --- registry -------------------------------------------------------------------------------


def _digits_seed(config: dict) -> int | None:
    """The plain-digit MEE generator a bundle carries: the published run when digits is
    published, else the first seed; None where no digits mee run was trained."""
    bench, arm, seed = published_of(config)
    if (bench, arm) == ("digits", "mee"):
        return seed
    if any((j["bench"], j["arm"]) == ("digits", "mee") for j in config["jobs"]):
        return first_seed(config["jobs"], "digits", "mee")
    return None


def export(params: Params, paths: Paths):
    model_dir = paths.model_dir(NAME)
    metrics = json.loads(paths.metrics(NAME).read_text())
    config = json.loads((model_dir / "config.json").read_text())
    bench, arm, seed = published_of(config)
    if seed != metrics["published"]["seed"] or bench != metrics["published"]["bench"]:
        raise RuntimeError("metrics/gan.json's published run is not models/gan/config.json's; run `dvc repro evaluate@gan`")
    gen = load_generator(model_dir, bench, arm, seed)
    example = torch.randn(4, gen.z_dim, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float32)
    files = [model_dir / "config.json", model_dir / Job(bench, arm, seed).weights]
    digits_seed = _digits_seed(config)
    if digits_seed is not None and bench != "digits":
        files.append(model_dir / Job("digits", "mee", digits_seed).weights)
    if bench in STACKED:
        what = "stacked digits with a weakened D"
        limits = "Generates 3-channel stacks of three 16x16 digits (a mode-collapse benchmark), not natural images"
    else:
        what = "plain digits (stacked digits not run: gan.image.stacked is false)"
        limits = "Generates single-channel 16x16 digits, not natural images"
    return ModelBundle(
        module=gen, input_example=example, primary_metric=PRIMARY_METRIC, metrics=metrics,
        params=params.gan.model_dump(by_alias=True), quality=quality_floor(metrics),
        # The program maps z -> the published benchmark's samples; the config (and, when stacked
        # digits are published, the plain-digits generator) ride along so `load_generator` can
        # rebuild either from a downloaded bundle.
        artifacts=[Path(f) for f in files],
        description=f"MEE, {what}, seed {seed}: {metrics['published']['chosen_by']}",
        limits=f"{limits}; trained at the pipeline's short step budgets.",
    )


def quality_floor(metrics: dict) -> dict:
    """What a user of `embedlab-gan` gets is readable: the evaluator confident on >= 0.5 of the
    published run's samples (channels, for stacked digits) and on more than twice the untrained
    generator's share. Below it the version is registered but never champion (registry.publish)."""
    pub = metrics["published"]
    bench = "stacked" if pub["bench"] in STACKED else pub["bench"]
    untrained = value_of(metrics[bench]["confident_share"]["untrained"])
    return precondition(f"the evaluator is confident on its samples: confident share >= max({QUALITY_FLOOR}, 2x the "
                        f"untrained generator's {untrained:.3f})", value_of(pub["confident_share"]),
                        max(QUALITY_FLOOR, 2 * untrained))


def load_bundle(bundle_dir: Path, device="cpu") -> dict[str, torch.nn.Module]:
    """The published generators from a downloaded `embedlab-gan` bundle (`registry.download_bundle`)
    or models/gan/: "stacked" -> MEE's stacked-digit generator (the registered program's weights)
    when stacked digits were published, and "digits" -> MEE's plain-digit generator (the
    published run when plain digits were published, else the first seed, where trained).
    Sample with `arms.sample(gen, n, seed)`."""
    config = json.loads((Path(bundle_dir) / "config.json").read_text())
    bench, arm, seed = published_of(config)
    out = {"stacked": load_generator(bundle_dir, bench, arm, seed, device)} if bench in STACKED else {}
    digits_seed = _digits_seed(config)
    if digits_seed is not None:
        out["digits"] = load_generator(bundle_dir, "digits", "mee", digits_seed, device)
    return out
