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
PRIMARY_METRIC_DEPTH = "psnr.d{depth}"
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


def _fit(lit, params: Params, paths: Paths, part: str, cfg, monitor: str, mode: str, train, val, seed: int,
         max_epochs: int | None = None):
    from embedlab.training import TensorBatches, load_best_weights, make_trainer

    trainer, _ = make_trainer(
        params.trainer, name=f"{NAME}-{part}", max_epochs=max_epochs or cfg.max_epochs, seed=seed,
        live_dir=paths.dvclive(NAME) / part, checkpoint_dir=paths.model_dir(NAME) / "checkpoints" / part,
        monitor=monitor, mode=mode, patience=cfg.patience,
    )
    trainer.fit(lit, train_dataloaders=TensorBatches(*train, batch_size=cfg.batch_size, shuffle=True, seed=seed),
                val_dataloaders=TensorBatches(*val, batch_size=1024))
    load_best_weights(lit, trainer)
    return trainer.current_epoch


def train_tokenizer(params: Params, paths: Paths, config: dict, split: dict):
    """Fit the RVQ tokenizer on the train images, early-stopped on validation PSNR."""
    from embedlab.methods.vq.tokenizer_training import LitTokenizer

    cfg = params.vq
    torch.manual_seed(cfg.seed)
    tokenizer, _, _ = build_parts(config)
    lit = LitTokenizer(tokenizer, cfg.tokenizer, cfg.tokenizer.max_epochs, seed=cfg.seed)
    epochs = _fit(lit, params, paths, "tokenizer", cfg.tokenizer, "val_psnr", "max",
                  (split["train"][0],), (split["val"][0],), cfg.seed)
    return lit.tokenizer.eval(), epochs


def prior_data(tokenizer, params: Params, split: dict):
    """Token sequences for the priors: the train images plus `augment_copies` shifted copies
    (without them both priors overfit within a few epochs), and the validation images."""
    from embedlab.training import random_shift

    cfg = params.vq
    gen = torch.Generator().manual_seed(cfg.seed)
    train_x, train_y = split["train"]
    copies = [train_x] + [random_shift(train_x, 1, gen) for _ in range(cfg.prior.augment_copies)]
    train = (tokenize_all(tokenizer, torch.cat(copies)), train_y.repeat(len(copies)))
    val = (tokenize_all(tokenizer, split["val"][0]), split["val"][1])
    return train, val


def train_prior(prior, part: str, params: Params, paths: Paths, train, val) -> int:
    """Fit one prior (resgen or ar) in place, early-stopped on validation likelihood."""
    from embedlab.methods.vq.prior_training import LitPrior

    cfg = params.vq
    epochs = cfg.prior.ar_max_epochs if part == "ar" else cfg.prior.max_epochs
    torch.manual_seed(cfg.seed)
    lit = LitPrior(prior, cfg.prior, epochs)
    return _fit(lit, params, paths, part, cfg.prior, "val_loss", "min", train, val, cfg.seed, max_epochs=epochs)


def save_parts(model_dir: Path, config: dict, parts: dict, epochs: dict) -> None:
    for part, module in parts.items():
        save_weights(module, Path(model_dir) / f"{part}.safetensors")
    (Path(model_dir) / "config.json").write_text(json.dumps({**config, "epochs_run": epochs}, indent=2) + "\n")


def train(params: Params, paths: Paths) -> None:
    from embedlab.data.prepare import read_prepared
    from embedlab.training import resolve_device

    data = read_prepared(paths.prepared)
    device = resolve_device(params.trainer)
    config = _configs(params, data.meta)
    split = {s: tuple(torch.as_tensor(a, device=device) for a in data.split(s)) for s in ("train", "val")}

    tokenizer, tok_epochs = train_tokenizer(params, paths, config, split)
    tokenizer = tokenizer.to(device)
    train_tokens, val_tokens = prior_data(tokenizer, params, split)
    _, resgen, ar = build_parts(config, codebooks=tokenizer.codebooks.detach().cpu())
    epochs = {"tokenizer": tok_epochs}
    for part, prior in (("resgen", resgen), ("ar", ar)):
        epochs[part] = train_prior(prior.to(device), part, params, paths, train_tokens, val_tokens)
    save_parts(paths.model_dir(NAME), config, {"tokenizer": tokenizer, "resgen": resgen, "ar": ar}, epochs)


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


def score_samples(images: torch.Tensor, labels: torch.Tensor, real: torch.Tensor, evaluator) -> dict[str, float]:
    """What evaluate@vq reports per prior: Fréchet distance to `real` in evaluator features,
    and the share of samples the evaluator assigns to their requested class."""
    from embedlab.evaluation import class_accuracy, predict
    from embedlab.evaluation.fid import frechet_distance

    return {"fd": round(frechet_distance(real, images, evaluator), 3),
            "class_accuracy": round(class_accuracy(predict(evaluator, images)[0], labels), 4)}


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


@torch.no_grad()
def evaluate(params: Params, paths: Paths, evaluator: torch.nn.Module) -> dict:
    from embedlab.data.prepare import read_prepared
    from embedlab.evaluation.fid import frechet_distance
    from embedlab.methods.vq.plots import write_plots
    from embedlab.methods.vq.tokenizer import psnr

    cfg = params.vq
    data = read_prepared(paths.prepared)
    tokenizer, resgen, ar, config = load_parts(paths.model_dir(NAME))
    test_x, test_y = (torch.as_tensor(a) for a in data.split("test"))
    tokens = tokenize_all(tokenizer, test_x)
    depth = tokens.shape[-1]
    recon = {d: tokenizer.decode_indices(tokens, d) for d in sorted(set(cfg.eval_depths) | {depth})}
    usage, perplexity, bits = codebook_stats(tokens, config["tokenizer"]["codebook_size"])
    positions = tokens.shape[1]

    torch.manual_seed(cfg.seed)
    k = int(data.meta["num_classes"])
    labels = torch.arange(k).repeat_interleave(cfg.samples_per_class)
    samples = {kind: sample_images(tokenizer, prior, labels, cfg.prior, kind) for kind, prior in
               (("resgen", resgen), ("ar", ar))}
    scores = {kind: score_samples(imgs, labels, test_x, evaluator) for kind, imgs in samples.items()}

    timing = {f"d{d}": sampling_seconds(config, cfg.prior, d, cfg.timing_samples) for d in cfg.timing_depths}
    metrics = {
        "psnr": {f"d{d}": round(psnr(test_x, r).mean().item(), 3) for d, r in recon.items()},
        "codebook_usage": min(usage),
        "codebook_usage_per_depth": usage,
        "perplexity": {f"d{i + 1}": p for i, p in enumerate(perplexity)},
        "bits_per_image": positions * depth * math.log2(config["tokenizer"]["codebook_size"]),
        "bits_per_image_entropy": round(positions * sum(bits), 1),
        "fd": {
            **{kind: s["fd"] for kind, s in scores.items()},
            "reconstruction": round(frechet_distance(test_x, recon[depth], evaluator), 3),
        },
        "class_accuracy": {kind: s["class_accuracy"] for kind, s in scores.items()},
        "sampling_seconds": {kind: {d: t[kind] for d, t in timing.items()} for kind in ("resgen", "ar")},
        "default_depth": depth,
        "samples_per_class": cfg.samples_per_class,
    }
    hi = max(cfg.timing_depths)
    for kind in ("resgen", "ar"):
        times = metrics["sampling_seconds"][kind]
        for lo in sorted(set(cfg.timing_depths) - {hi}):
            times[f"ratio_d{hi}_d{lo}"] = round(times[f"d{hi}"] / times[f"d{lo}"], 3)
    write_plots(paths.plots(NAME), test_x, recon, samples, labels, metrics, k)
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

    model_dir = paths.model_dir(NAME)
    tokenizer, _, _, config = load_parts(model_dir)
    metrics = json.loads(paths.metrics(NAME).read_text())
    data = read_prepared(paths.prepared)
    return ModelBundle(
        module=_Reconstructor(tokenizer).eval(),
        input_example=data.split("test")[0][:4].astype(np.float32),
        primary_metric=PRIMARY_METRIC_DEPTH.format(depth=metrics["default_depth"]),
        metrics=metrics,
        params=params.vq.model_dump(),
        # Encoding, decoding and sampling need all three parts: weights + config ride along.
        artifacts=[model_dir / f for f in ("config.json", "tokenizer.safetensors", "resgen.safetensors", "ar.safetensors")],
    )
