"""train@vq: per training seed, the ResGen-style prior and, with `vq.ar_baseline` (the paper
preset), the AR baseline, each on the tokens of the one given tokenizer (models/tokenizer,
trained once per data set by methods/vq/given.py): the claims compare two priors over one
tokenizer (evaluate and export: scoring.py).

models/vq/seed<s>/ holds resgen.safetensors (ar.safetensors with the baseline) and config.json
(the constructor arguments of both priors and of the tokenizer, and the id of the tokenizer
weights they were trained on), so `parts.load_priors` rebuilds them without pickle.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from embedlab.batches import TensorBatches, random_shift
from embedlab.data.prepare import read_prepared
from embedlab.evaluation.samples import weights_id
from embedlab.io import load_tensors, save_tensors, save_weights, write_json_atomic
from embedlab.jobs import run_graph
from embedlab.jobstore import method_store
from embedlab.methods.vq.given import load_tokenizer, tokenizer_config
from embedlab.methods.vq.parts import NAME, PRIMARY_METRIC, build_priors, prior_kinds, seed_dir, tokenize_all, tokenizer_dir
from embedlab.methods.vq.scoring import evaluate, export, load_bundle
from embedlab.params import Params, parse_params
from embedlab.paths import Paths
from embedlab.training import ShardedBatches, is_global_zero, load_best_weights, make_trainer, resolve_device, world_size

# The method interface (methods/base.py): this module trains; scoring.py evaluates and exports.
name = NAME
primary_metric = PRIMARY_METRIC
needs_evaluator = True
__all__ = ["name", "primary_metric", "needs_evaluator", "train", "evaluate", "export", "load_bundle"]


def _configs(params: Params, meta: dict, tokenizer: dict | None = None) -> dict:
    """Every part's constructor arguments; the priors' shapes come from the tokenizer's config
    (`tokenizer`: the given one's config.json; None: the one `vq.tokenizer` would train)."""
    p = params.vq.prior
    t = tokenizer or tokenizer_config(params.vq.tokenizer, meta["image_size"])
    positions = (int(t["image_size"]) // t["downsample"]) ** 2
    shared = {"num_positions": positions, "num_classes": int(meta["num_classes"]), "width": p.width,
              "layers": p.layers, "heads": p.heads, "dropout": p.dropout, "class_dropout": p.class_dropout}
    return {
        "tokenizer": t,
        "resgen": {**shared, "mixtures": p.mixtures},
        "ar": {**shared, "depth": t["num_quantizers"], "codebook_size": t["codebook_size"]},
    }


def _fit(lit, params: Params, paths: Paths, seed: int, part: str, cfg, monitor: str, mode: str, train, val,
         max_epochs: int | None = None) -> tuple[int, float | None, dict | None]:
    """One Lightning fit of a part of training seed `seed`: (epochs run, best monitored value,
    how DDP spread it: None on one device)."""
    trainer, _ = make_trainer(
        params.trainer, name=f"{NAME}-{part}-seed{seed}", max_epochs=max_epochs or cfg.max_epochs, seed=seed,
        live_dir=paths.dvclive(NAME) / f"seed{seed}" / part, checkpoint_dir=seed_dir(paths, seed) / "checkpoints" / part,
        monitor=monitor, mode=mode, patience=cfg.patience,
    )
    # Under DDP each rank its own shard of every epoch (with one rank: TensorBatches, order and
    # all); validation reads the whole val split on every rank, so early stopping agrees.
    lit.batches = ShardedBatches(*train, batch_size=cfg.batch_size, shuffle=True, seed=seed)
    trainer.fit(lit, train_dataloaders=lit.batches, val_dataloaders=TensorBatches(*val, batch_size=1024))
    if trainer.is_global_zero:  # the best checkpoint is rank 0's file
        load_best_weights(lit, trainer)
    best = trainer.checkpoint_callback.best_model_score
    ddp = lit.batches.share() if trainer.world_size > 1 else None  # each rank's share of an epoch
    return trainer.current_epoch, None if best is None else round(float(best), 4), ddp


def prior_data(tokenizer, params: Params, split: dict, seed: int):
    """Token sequences for the priors: the train images plus `augment_copies` shifted copies
    (without them both priors overfit within a few epochs), and the validation images."""
    cfg = params.vq
    gen = torch.Generator().manual_seed(seed)
    train_x, train_y = split["train"]
    copies = [train_x] + [random_shift(train_x, 1, gen) for _ in range(cfg.prior.augment_copies)]
    train = (tokenize_all(tokenizer, torch.cat(copies)), train_y.repeat(len(copies)))
    val = (tokenize_all(tokenizer, split["val"][0]), split["val"][1])
    return train, val


def train_prior(prior, part: str, params: Params, paths: Paths, train, val, seed: int) -> tuple[int, float | None, dict | None]:
    """Fit one prior (resgen or ar) in place, early-stopped on validation likelihood."""
    from embedlab.methods.vq.prior_training import LitPrior

    cfg = params.vq
    epochs = cfg.prior.ar_max_epochs if part == "ar" else cfg.prior.max_epochs
    torch.manual_seed(seed)
    lit = LitPrior(prior, cfg.prior, epochs)
    return _fit(lit, params, paths, seed, part, cfg.prior, "val_loss", "min", train, val, max_epochs=epochs)


def _splits(paths: Paths, device) -> tuple[dict, dict]:
    data = read_prepared(paths.prepared)
    return data.meta, {s: tuple(torch.as_tensor(a, device=device) for a in data.split(s)) for s in ("train", "val")}


def fit_prior_job(raw: dict, root: str, seed: int, part: str) -> dict:
    """One prior of one training seed, on that seed's tokens (written by `train`)."""
    params, paths = parse_params(raw), Paths(Path(root))
    return _fit_prior(params, paths, seed, part, load_tensors(seed_dir(paths, seed) / "tokens.safetensors"))


def _fit_prior(params: Params, paths: Paths, seed: int, part: str, tokens: dict) -> dict:
    device = resolve_device(params.trainer)
    meta, _ = _splits(paths, "cpu")
    out = seed_dir(paths, seed)
    tok_config = json.loads((tokenizer_dir(paths) / "config.json").read_text())
    torch.manual_seed(seed)  # the priors' initial weights: this seed's, not the worker's history
    resgen, ar = build_priors(_configs(params, meta, tok_config), codebooks=tokens["codebooks"])
    prior = {"resgen": resgen, "ar": ar}[part].to(device)
    train_tokens = tuple(t.to(device) for t in tokens["train"])
    val_tokens = tuple(t.to(device) for t in tokens["val"])
    start = time.perf_counter()
    epochs, best, ddp = train_prior(prior, part, params, paths, train_tokens, val_tokens, seed)
    if is_global_zero():
        save_weights(prior, out / f"{part}.safetensors")
    positions = train_tokens[0].shape[1] * (train_tokens[0].shape[2] if part == "ar" else 1) + 1
    result = {"epochs": epochs, "best_val_loss": best, "seconds": round(time.perf_counter() - start, 1),
              # tokens through the transformer in training: the compute the two priors are matched on
              "tokens_processed": int(epochs) * len(train_tokens[0]) * positions}
    return result if ddp is None else {**result, "ddp": ddp}


def seed_tokens(tokenizer, params: Params, split: dict, seed: int) -> dict:
    """A training seed's token sequences (its shifted copies differ by seed), for the priors, and
    the codebooks: what `_fit_prior` reads."""
    train_tokens, val_tokens = prior_data(tokenizer, params, split, seed)
    return {"train": list(train_tokens), "val": list(val_tokens), "codebooks": tokenizer.codebooks}


def write_tokens(tokenizer, params: Params, paths: Paths, split: dict, seed: int) -> None:
    """`seed_tokens` into the seed's folder, for the workers."""
    seed_dir(paths, seed).mkdir(parents=True, exist_ok=True)
    save_tensors(seed_tokens(tokenizer, params, split, seed), seed_dir(paths, seed) / "tokens.safetensors")


def train(params: Params, paths: Paths) -> None:
    """Every training seed's priors (ResGen's; the AR's with `vq.ar_baseline`) over the given
    tokenizer's tokens (tokenized here, once per seed), on `vq.workers` processes of one thread each (in-process on a GPU). With
    `trainer.devices` x `trainer.num_nodes` above 1, each prior is one Lightning DDP fit instead:
    every rank (Lightning's launcher starts the others at the first fit, rerunning this command)
    tokenizes in memory and runs the same fits in the same order on its own shard of each epoch,
    and rank 0 alone writes."""
    from tqdm.auto import tqdm

    cfg = params.vq
    device = resolve_device(params.trainer)
    tokenizer, tok_config = load_tokenizer(tokenizer_dir(paths), device)
    meta, split = _splits(paths, device)
    config = {**_configs(params, meta, tok_config), "tokenizer_sha256": weights_id(tokenizer)}
    start = time.perf_counter()
    # Every (longer) AR prior first (with `vq.ar_baseline`), so no worker idles on one at the end.
    keys = [f"{part}/{s}" for part in reversed(prior_kinds(cfg.ar_baseline)) for s in cfg.seeds]
    bar = tqdm(total=len(keys), desc="train@vq priors", unit="prior",
               disable=not params.trainer.progress_bar or not is_global_zero())
    ddp = world_size(params.trainer) > 1
    if ddp:
        # No job-level resume here: every rank must run every fit, in one order.
        tokens = {s: seed_tokens(tokenizer, params, split, s) for s in cfg.seeds}
        for s in cfg.seeds:
            seed_dir(paths, s).mkdir(parents=True, exist_ok=True)
        results = {}
        for key in keys:
            part, s = key.split("/")
            results[key] = _fit_prior(params, paths, int(s), part, tokens[int(s)])
            bar.update(1)
        bar.close()
        if not is_global_zero():
            return  # rank 0 writes
        store = None
    else:
        for s in cfg.seeds:
            write_tokens(tokenizer, params, paths, split, s)
        raw, root = params.model_dump(by_alias=True), str(paths.root)
        jobs = {key: (raw, root, int(key.split("/")[1]), key.split("/")[0]) for key in keys}
        # A killed run's finished priors (and their weights) are kept for the rerun (embedlab.jobstore).
        store = method_store(NAME, params, paths, [paths.prepared, tokenizer_dir(paths)])
        try:
            results = run_graph(fit_prior_job, jobs, {}, cfg.workers, device.type != "cpu", bar, store=store,
                                files=lambda key, _: [seed_dir(paths, int(key.split("/")[1])) / f"{key.split('/')[0]}.safetensors"])
        finally:
            bar.close()
        for s in cfg.seeds:
            (seed_dir(paths, s) / "tokens.safetensors").unlink()
    del tokenizer
    runs: dict = {str(s): {} for s in cfg.seeds}
    for key, result in results.items():
        part, s = key.split("/")
        runs[s][part] = result
    for s in cfg.seeds:
        write_json_atomic(seed_dir(paths, s) / "config.json", {**config, "training": runs[str(s)]})
    summary = {"seeds": list(cfg.seeds), "runs": runs, "wall_seconds": round(time.perf_counter() - start, 1)}
    if ddp:
        summary["ddp"] = {"world_size": world_size(params.trainer)}
    write_json_atomic(paths.model_dir(NAME) / "train.json", summary)
    if store is not None:
        store.done()
