"""train / evaluate / export for the vq method: RVQ tokenizer, ResGen-style prior, AR baseline.

models/vq/ holds tokenizer.safetensors, resgen.safetensors, ar.safetensors and config.json
(the constructor arguments of all three), so `load_parts` rebuilds them without pickle.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from embedlab.io import load_weights, save_weights, write_json_atomic
from embedlab.params import Params
from embedlab.paths import Paths

NAME = "vq"
PRIMARY_METRIC = "published.psnr"
FD_MARGIN = 0.10  # ResGen's FD may exceed the AR prior's by at most 10% and still count as no worse
needs_evaluator = True


def _configs(params: Params, meta: dict) -> dict:
    t, p = params.vq.tokenizer, params.vq.prior
    num_classes = int(meta["num_classes"])
    tokenizer = {
        "image_size": int(meta["image_size"]), "hidden": t.hidden, "latent_dim": t.latent_dim,
        "downsample": t.downsample, "num_quantizers": t.num_quantizers, "codebook_size": t.codebook_size,
        "decay": t.decay, "commitment_weight": t.commitment_weight, "threshold_ema_dead_code": t.dead_code_threshold,
    }
    positions = (int(meta["image_size"]) // t.downsample) ** 2
    shared = {"num_positions": positions, "num_classes": num_classes, "width": p.width, "layers": p.layers,
              "heads": p.heads, "dropout": p.dropout, "class_dropout": p.class_dropout}
    return {
        "tokenizer": tokenizer,
        "resgen": {**shared, "mixtures": p.mixtures},
        "ar": {**shared, "depth": t.num_quantizers, "codebook_size": t.codebook_size},
    }


def build_parts(config: dict, codebooks: torch.Tensor | None = None):
    from embedlab.methods.vq.ar import ARPrior
    from embedlab.methods.vq.prior import ResGenPrior
    from embedlab.methods.vq.tokenizer import RVQTokenizer

    tokenizer = RVQTokenizer(**config["tokenizer"])
    t = config["tokenizer"]
    if codebooks is None:
        codebooks = torch.zeros(t["num_quantizers"], t["codebook_size"], t["latent_dim"])
    return tokenizer, ResGenPrior(codebooks, **config["resgen"]), ARPrior(**config["ar"])


def load_parts(model_dir: Path, device="cpu"):
    """(tokenizer, resgen, ar, config) from models/vq/, eval mode."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    tokenizer, resgen, ar = build_parts(config)
    parts = [load_weights(m, Path(model_dir) / f"{n}.safetensors", device).requires_grad_(False) for n, m in
             (("tokenizer", tokenizer), ("resgen", resgen), ("ar", ar))]
    return (*parts, config)


@torch.no_grad()
def tokenize_all(tokenizer, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    tokenizer.eval()
    return torch.cat([tokenizer.tokenize(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def _fit(lit, params: Params, paths: Paths, seed: int, part: str, cfg, monitor: str, mode: str, train, val,
         max_epochs: int | None = None) -> tuple[int, float | None]:
    """One Lightning fit of a part of training seed `seed`: (epochs run, best monitored value)."""
    from embedlab.training import TensorBatches, load_best_weights, make_trainer

    trainer, _ = make_trainer(
        params.trainer, name=f"{NAME}-{part}-seed{seed}", max_epochs=max_epochs or cfg.max_epochs, seed=seed,
        live_dir=paths.dvclive(NAME) / f"seed{seed}" / part, checkpoint_dir=seed_dir(paths, seed) / "checkpoints" / part,
        monitor=monitor, mode=mode, patience=cfg.patience,
    )
    trainer.fit(lit, train_dataloaders=TensorBatches(*train, batch_size=cfg.batch_size, shuffle=True, seed=seed),
                val_dataloaders=TensorBatches(*val, batch_size=1024))
    load_best_weights(lit, trainer)
    best = trainer.checkpoint_callback.best_model_score
    return trainer.current_epoch, None if best is None else round(float(best), 4)


def seed_dir(paths: Paths, seed: int) -> Path:
    return paths.model_dir(NAME) / f"seed{seed}"


def train_tokenizer(params: Params, paths: Paths, config: dict, split: dict, seed: int):
    """Fit the RVQ tokenizer on the train images, early-stopped on validation PSNR."""
    from embedlab.methods.vq.tokenizer_training import LitTokenizer

    cfg = params.vq
    torch.manual_seed(seed)
    tokenizer, _, _ = build_parts(config)
    lit = LitTokenizer(tokenizer, cfg.tokenizer, cfg.tokenizer.max_epochs, seed=seed)
    epochs, best = _fit(lit, params, paths, seed, "tokenizer", cfg.tokenizer, "val_psnr", "max",
                        (split["train"][0],), (split["val"][0],))
    return lit.tokenizer.eval(), epochs, best


def prior_data(tokenizer, params: Params, split: dict, seed: int):
    """Token sequences for the priors: the train images plus `augment_copies` shifted copies
    (without them both priors overfit within a few epochs), and the validation images."""
    from embedlab.training import random_shift

    cfg = params.vq
    gen = torch.Generator().manual_seed(seed)
    train_x, train_y = split["train"]
    copies = [train_x] + [random_shift(train_x, 1, gen) for _ in range(cfg.prior.augment_copies)]
    train = (tokenize_all(tokenizer, torch.cat(copies)), train_y.repeat(len(copies)))
    val = (tokenize_all(tokenizer, split["val"][0]), split["val"][1])
    return train, val


def train_prior(prior, part: str, params: Params, paths: Paths, train, val, seed: int) -> tuple[int, float | None]:
    """Fit one prior (resgen or ar) in place, early-stopped on validation likelihood."""
    from embedlab.methods.vq.prior_training import LitPrior

    cfg = params.vq
    epochs = cfg.prior.ar_max_epochs if part == "ar" else cfg.prior.max_epochs
    torch.manual_seed(seed)
    lit = LitPrior(prior, cfg.prior, epochs)
    return _fit(lit, params, paths, seed, part, cfg.prior, "val_loss", "min", train, val, max_epochs=epochs)


def _splits(paths: Paths, device) -> tuple[dict, dict]:
    from embedlab.data.prepare import read_prepared

    data = read_prepared(paths.prepared)
    return data.meta, {s: tuple(torch.as_tensor(a, device=device) for a in data.split(s)) for s in ("train", "val")}


def fit_tokenizer_job(raw: dict, root: str, seed: int) -> dict:
    """Phase 1 of a training seed: the tokenizer, then the priors' token sequences (saved)."""
    from embedlab.params import parse_params
    from embedlab.training import resolve_device

    params, paths = parse_params(raw), Paths(Path(root))
    device = resolve_device(params.trainer)
    meta, split = _splits(paths, device)
    config = _configs(params, meta)
    start = time.perf_counter()
    tokenizer, epochs, best = train_tokenizer(params, paths, config, split, seed)
    tokenizer = tokenizer.to(device)
    train_tokens, val_tokens = prior_data(tokenizer, params, split, seed)
    out = seed_dir(paths, seed)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(tokenizer, out / "tokenizer.safetensors")
    torch.save({"train": [t.cpu() for t in train_tokens], "val": [t.cpu() for t in val_tokens],
                "codebooks": tokenizer.codebooks.detach().cpu()}, out / "tokens.pt")
    return {"epochs": epochs, "best_val_psnr": best, "seconds": round(time.perf_counter() - start, 1)}


def fit_part_job(raw: dict, root: str, seed: int, part: str) -> dict:
    return fit_tokenizer_job(raw, root, seed) if part == "tokenizer" else fit_prior_job(raw, root, seed, part)


def fit_prior_job(raw: dict, root: str, seed: int, part: str) -> dict:
    """Phase 2 of a training seed: one prior on that seed's tokens."""
    from embedlab.params import parse_params
    from embedlab.training import resolve_device

    params, paths = parse_params(raw), Paths(Path(root))
    device = resolve_device(params.trainer)
    meta, _ = _splits(paths, "cpu")
    out = seed_dir(paths, seed)
    tokens = torch.load(out / "tokens.pt", weights_only=True)
    _, resgen, ar = build_parts(_configs(params, meta), codebooks=tokens["codebooks"])
    prior = {"resgen": resgen, "ar": ar}[part].to(device)
    train_tokens = tuple(t.to(device) for t in tokens["train"])
    val_tokens = tuple(t.to(device) for t in tokens["val"])
    start = time.perf_counter()
    epochs, best = train_prior(prior, part, params, paths, train_tokens, val_tokens, seed)
    save_weights(prior, out / f"{part}.safetensors")
    positions = train_tokens[0].shape[1] * (train_tokens[0].shape[2] if part == "ar" else 1) + 1
    return {"epochs": epochs, "best_val_loss": best, "seconds": round(time.perf_counter() - start, 1),
            # tokens through the transformer in training: the compute the two priors are matched on
            "tokens_processed": int(epochs) * len(train_tokens[0]) * positions}


def train(params: Params, paths: Paths) -> None:
    """Every training seed: tokenizer (phase 1), then both priors on its tokens (phase 2), on
    `vq.workers` processes of one thread each (in-process on a GPU)."""
    from tqdm.auto import tqdm

    from embedlab.jobs import run_graph
    from embedlab.training import resolve_device

    cfg = params.vq
    meta, _ = _splits(paths, "cpu")
    config = _configs(params, meta)
    raw, root = params.model_dump(by_alias=True), str(paths.root)
    in_process = resolve_device(params.trainer).type != "cpu"
    # A seed's priors start as soon as its tokenizer (and tokens) exist; the longer AR first.
    jobs = {f"{part}/{s}": (raw, root, s, part) for s in cfg.seeds for part in ("tokenizer", "ar", "resgen")}
    after = {f"{part}/{s}": [f"tokenizer/{s}"] for s in cfg.seeds for part in ("ar", "resgen")}
    bar = tqdm(total=len(jobs), desc="train@vq parts", unit="part", disable=not params.trainer.progress_bar)
    start = time.perf_counter()
    try:
        results = run_graph(fit_part_job, jobs, after, cfg.workers, in_process, bar)
    finally:
        bar.close()
    runs: dict = {str(s): {} for s in cfg.seeds}
    for key, result in results.items():
        part, s = key.split("/")
        runs[s][part] = result
    for s in cfg.seeds:
        (seed_dir(paths, s) / "tokens.pt").unlink()
        (seed_dir(paths, s) / "config.json").write_text(json.dumps({**config, "training": runs[str(s)]}, indent=2) + "\n")
    write_json_atomic(paths.model_dir(NAME) / "train.json", {"seeds": list(cfg.seeds), "runs": runs,
                                                            "wall_seconds": round(time.perf_counter() - start, 1)})


def codebook_stats(tokens: torch.Tensor, codebook_size: int) -> tuple[list[float], list[float], list[float]]:
    """Per depth: fraction of codes used, perplexity, entropy in bits."""
    usage, perplexity, bits = [], [], []
    for d in range(tokens.shape[-1]):
        counts = torch.bincount(tokens[..., d].flatten(), minlength=codebook_size).double()
        p = counts / counts.sum()
        entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
        usage.append(round((counts > 0).double().mean().item(), 4))
        perplexity.append(round(math.exp(entropy), 3))
        bits.append(entropy / math.log(2))
    return usage, perplexity, bits


def sample_indices(prior, kind: str, labels: torch.Tensor, prior_cfg) -> torch.Tensor:
    """Class-conditional token indices (B, L, D) from either prior with the params' guidance
    and temperature; ResGen also takes its S steps."""
    steps = {"steps": prior_cfg.steps} if kind == "resgen" else {}
    return prior.sample(labels, guidance=prior_cfg.guidance, temperature=prior_cfg.temperature, **steps)


@torch.no_grad()
def sample_images(tokenizer, prior, labels: torch.Tensor, prior_cfg, kind: str, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([tokenizer.decode_indices(sample_indices(prior, kind, labels[i : i + batch_size], prior_cfg))
                      for i in range(0, len(labels), batch_size)])


@torch.no_grad()
def sampling_seconds(config: dict, cfg, depth: int, n: int) -> dict[str, float]:
    """Seconds per 1,000 class-conditional samples for untrained priors of this architecture
    at RVQ depth `depth`: cost depends on the architecture, not on the weights."""
    t = config["tokenizer"]
    codebooks = torch.randn(depth, t["codebook_size"], t["latent_dim"])
    sub = {**config, "ar": {**config["ar"], "depth": depth}}
    _, resgen, ar = build_parts(sub, codebooks=codebooks)
    labels = torch.arange(n) % config["resgen"]["num_classes"]
    timings = {}
    for kind, prior in (("resgen", resgen.eval()), ("ar", ar.eval())):
        start = time.perf_counter()
        sample_indices(prior, kind, labels, cfg)
        timings[kind] = round((time.perf_counter() - start) * 1000 / n, 3)
    return timings


def published_seed(info: dict) -> int:
    """The training seed the registry gets: its tokenizer's best validation PSNR (never test)."""
    runs = info["runs"]
    return int(max(runs, key=lambda s: (runs[s]["tokenizer"]["best_val_psnr"] or -1.0, -int(s))))


def claims(per_seed: dict, seeds: list[int]) -> dict:
    """ResGen's claims against the AR prior, paired over training seeds (evaluation.claims)."""
    from embedlab.evaluation.claims import verdict
    from embedlab.evaluation.intervals import value_of

    fd = {k: [value_of(r["fd"]) for r in per_seed[k]] for k in ("resgen", "ar")}
    acc = {k: [value_of(r["accuracy"]) for r in per_seed[k]] for k in ("resgen", "ar")}
    margin = round(FD_MARGIN * abs(float(np.mean(fd["ar"]))), 3)  # 10% of the AR prior's mean FD
    return {
        "resgen_vs_ar_fd": verdict(fd["resgen"], fd["ar"], claim="ResGen's samples are no worse than the AR prior's: "
                                   f"FD at most {FD_MARGIN:.0%} of the AR's above it", metric="fd",
                                   arms=("resgen", "ar"), higher_is_better=False, kind="noninferior", margin=margin,
                                   seeds=seeds, digits=3),
        "resgen_vs_ar_accuracy": verdict(acc["resgen"], acc["ar"], claim="ResGen's samples show the requested class "
                                         "more often than the AR prior's", metric="class_accuracy",
                                         arms=("resgen", "ar"), margin=0.01, seeds=seeds),
    }


@torch.no_grad()
def evaluate(params: Params, paths: Paths, evaluator: torch.nn.Module) -> dict:
    from tqdm.auto import tqdm

    from embedlab.data.prepare import read_prepared
    from embedlab.evaluation.intervals import METHODS, mean_interval, over_seeds, score
    from embedlab.evaluation.samples import SampleScorer, evaluator_id
    from embedlab.methods.vq.plots import write_plots
    from embedlab.methods.vq.tokenizer import psnr

    cfg, e = params.vq, params.evaluation
    data = read_prepared(paths.prepared)
    info = json.loads((paths.model_dir(NAME) / "train.json").read_text())
    scorer = SampleScorer(evaluator, data, e.confidence, e.bootstrap, e.seed)
    test_x = torch.as_tensor(data.split("test")[0])
    k = int(data.meta["num_classes"])
    labels = torch.arange(k).repeat_interleave(cfg.samples_per_class)
    floor = scorer.floor(len(labels), labels, seed=e.seed)
    per_seed: dict = {"psnr": [], "codebook_usage": [], "resgen": [], "ar": [], "reconstruction": []}
    shown = {}
    for seed in tqdm(cfg.seeds, desc="evaluate@vq", unit="seed", disable=not params.trainer.progress_bar):
        tokenizer, resgen, ar, config = load_parts(seed_dir(paths, seed))
        tokens = tokenize_all(tokenizer, test_x)
        depth = tokens.shape[-1]
        recon = {d: tokenizer.decode_indices(tokens, d) for d in sorted(set(cfg.eval_depths) | {depth})}
        per_seed["psnr"].append({f"d{d}": score(*mean_interval(psnr(test_x, r).tolist()), len(test_x), 3)
                                 for d, r in recon.items()})
        usage, perplexity, bits = codebook_stats(tokens, config["tokenizer"]["codebook_size"])
        per_seed["codebook_usage"].append(min(usage))
        per_seed["reconstruction"].append(scorer.score(recon[depth], seed=seed))
        torch.manual_seed(seed)
        samples = {kind: sample_images(tokenizer, prior, labels, cfg.prior, kind) for kind, prior in
                   (("resgen", resgen), ("ar", ar))}
        for kind, images in samples.items():
            per_seed[kind].append(scorer.score(images, labels, seed=seed))
        if not shown:
            shown = {"recon": recon, "samples": samples, "perplexity": perplexity, "usage": usage, "bits": bits,
                     "config": config, "positions": tokens.shape[1], "depth": depth}

    def table(metric: str) -> dict:
        out = {kind: over_seeds([r[metric] for r in per_seed[kind]]) for kind in ("resgen", "ar")}
        out["real"] = floor[metric]
        return out

    config, depth = shown["config"], shown["depth"]
    timing = {f"d{d}": sampling_seconds(config, cfg.prior, d, cfg.timing_samples) for d in cfg.timing_depths}
    pub_seed = published_seed(info)
    pub_index = list(cfg.seeds).index(pub_seed)
    metrics = {
        "evaluator": evaluator_id(evaluator),
        "n": len(labels),
        "psnr": {d: over_seeds([r[d] for r in per_seed["psnr"]]) for d in per_seed["psnr"][0]},
        "codebook_usage": over_seeds(per_seed["codebook_usage"]),
        "codebook_usage_per_depth": shown["usage"],
        "perplexity": {f"d{i + 1}": p for i, p in enumerate(shown["perplexity"])},
        "bits_per_image": shown["positions"] * depth * math.log2(config["tokenizer"]["codebook_size"]),
        "bits_per_image_entropy": round(shown["positions"] * sum(shown["bits"]), 1),
        "fd": {**table("fd"), "reconstruction": over_seeds([r["fd"] for r in per_seed["reconstruction"]])},
        "kid": table("kid"),
        "class_accuracy": table("accuracy"),
        "confident_share": {**table("confident_share"), "real_test": scorer.real_test_share()},
        "claims": claims(per_seed, list(cfg.seeds)),
        "published": {"seed": pub_seed, "chosen_by": "the tokenizer's best validation PSNR",
                      "psnr": per_seed["psnr"][pub_index][f"d{depth}"]},
        "training": {s: {part: {k: v for k, v in r.items()} for part, r in run.items()}
                     for s, run in info["runs"].items()},
        "sampling_seconds": {kind: {d: t[kind] for d, t in timing.items()} for kind in ("resgen", "ar")},
        "default_depth": depth,
        "samples_per_class": cfg.samples_per_class,
        "seeds": list(cfg.seeds),
        "train_wall_seconds": info["wall_seconds"],
        "per_seed": {kind: [{m: (v["value"] if isinstance(v, dict) else v) for m, v in r.items()}
                            for r in per_seed[kind]] for kind in ("resgen", "ar")},
        "intervals": {"psnr (per seed: over test images; here over seeds)": METHODS["seeds"],
                      "per prior (mean over training seeds)": METHODS["seeds"],
                      "real (train images, same class counts)": METHODS["bootstrap"] + "; shares: " + METHODS["wilson"],
                      "claims": METHODS["paired"]},
    }
    hi = max(cfg.timing_depths)
    for kind in ("resgen", "ar"):
        times = metrics["sampling_seconds"][kind]
        for lo in sorted(set(cfg.timing_depths) - {hi}):
            times[f"ratio_d{hi}_d{lo}"] = round(times[f"d{hi}"] / times[f"d{lo}"], 3)
    write_plots(paths.plots(NAME), test_x, shown["recon"], shown["samples"], labels, metrics, k)
    write_json_atomic(paths.metrics(NAME), metrics)
    return metrics


class _Reconstructor(torch.nn.Module):
    """The exported face of the tokenizer: images -> reconstruction at full depth.

    The quantiser library branches on its own state (k-means initialised yet?), which
    torch.export cannot trace, so the exported graph quantises with `greedy_codes` against
    a snapshot of the codebooks: the same codes the library picks in eval (tested)."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self.register_buffer("codebooks", tokenizer.codebooks.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from embedlab.methods.vq.tokenizer import greedy_codes

        _, quantized = greedy_codes(self.tokenizer.encode(x), self.codebooks)
        return self.tokenizer.decode_latent(quantized)


def export(params: Params, paths: Paths):
    from embedlab.data.prepare import read_prepared
    from embedlab.registry import ModelBundle

    metrics = json.loads(paths.metrics(NAME).read_text())
    seed = metrics["published"]["seed"]
    folder = seed_dir(paths, seed)
    tokenizer, _, _, config = load_parts(folder)
    data = read_prepared(paths.prepared)
    return ModelBundle(
        module=_Reconstructor(tokenizer).eval(),
        input_example=data.split("test")[0][:4].astype(np.float32),
        primary_metric=PRIMARY_METRIC,
        metrics=metrics,
        params=params.vq.model_dump(),
        # Encoding, decoding and sampling need all three parts: weights + config ride along.
        artifacts=[folder / f for f in ("config.json", "tokenizer.safetensors", "resgen.safetensors", "ar.safetensors")],
        description=f"RVQ tokenizer + ResGen and AR priors, training seed {seed}: {metrics['published']['chosen_by']}",
    )
