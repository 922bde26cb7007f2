"""train@vq: per training seed, the RVQ tokenizer, then the ResGen-style prior and the AR
baseline on its tokens (evaluate and export: scoring.py).

models/vq/seed<s>/ holds tokenizer.safetensors, resgen.safetensors, ar.safetensors and
config.json (the constructor arguments of all three), so `parts.load_parts` rebuilds them
without pickle.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from embedlab.io import load_tensors, save_tensors, save_weights, write_json_atomic
from embedlab.methods.vq.parts import NAME, PRIMARY_METRIC, build_parts, seed_dir, tokenize_all
from embedlab.methods.vq.scoring import evaluate, export, load_bundle
from embedlab.params import Params
from embedlab.paths import Paths

# The method interface (methods/base.py): this module trains; scoring.py evaluates and exports.
name = NAME
primary_metric = PRIMARY_METRIC
needs_evaluator = True
__all__ = ["name", "primary_metric", "needs_evaluator", "train", "evaluate", "export", "load_bundle"]


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
    save_tensors({"train": list(train_tokens), "val": list(val_tokens), "codebooks": tokenizer.codebooks},
                 out / "tokens.safetensors")
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
    tokens = load_tensors(out / "tokens.safetensors")
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
        (seed_dir(paths, s) / "tokens.safetensors").unlink()
        (seed_dir(paths, s) / "config.json").write_text(json.dumps({**config, "training": runs[str(s)]}, indent=2) + "\n")
    write_json_atomic(paths.model_dir(NAME) / "train.json", {"seeds": list(cfg.seeds), "runs": runs,
                                                            "wall_seconds": round(time.perf_counter() - start, 1)})


