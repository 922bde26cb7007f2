"""`embedlab pretrain tokenizer`: the RVQ tokenizer ResGen and its AR baseline share, trained once
per data set (`vq.tokenizer`, its own `seed`) and committed to git like the evaluator and the
backbone. The claim compares two priors over one tokenizer, so the tokenizer is held fixed and
training seeds (`vq.seeds`) vary only the priors (train@vq).

models/tokenizer/ receives tokenizer.safetensors, config.json (the RVQTokenizer constructor
arguments: `load_tokenizer` rebuilds it without params) and train.json (how it was fit); the
best checkpoint lives in a scratch folder. Of vq, this stage reads this file, tokenizer.py and
tokenizer_training.py only (plus the data, `vq.tokenizer`, the trainer keys, embedlab.batches and
evaluation/scores.py's psnr, which picks the best epoch).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from embedlab.io import load_weights, save_weights, write_json_atomic
from embedlab.params import Params
from embedlab.paths import Paths

name = "tokenizer"  # models/tokenizer, dvclive/tokenizer


def tokenizer_config(cfg, image_size: int, channels: int = 1) -> dict:
    """RVQTokenizer's constructor arguments from `vq.tokenizer` and the data's image size and
    channels (recorded for colour only: a grey config is as it was)."""
    return {
        "image_size": int(image_size), "hidden": cfg.hidden, "latent_dim": cfg.latent_dim,
        "downsample": cfg.downsample, "num_quantizers": cfg.num_quantizers, "codebook_size": cfg.codebook_size,
        "decay": cfg.decay, "commitment_weight": cfg.commitment_weight,
        "threshold_ema_dead_code": cfg.dead_code_threshold,
        **({"channels": int(channels)} if channels != 1 else {}),
    }


def fit(params: Params, paths: Paths, config: dict, split: dict, checkpoint_dir: Path):
    """Fit the tokenizer on the train images, early-stopped on validation PSNR: (tokenizer in
    eval mode, epochs run, best val PSNR). `split[s]` is (images, labels); the labels are never
    read (tests/unit/test_vq_given.py hands it labels that fail on any use)."""
    from embedlab.batches import TensorBatches
    from embedlab.methods.vq.tokenizer import RVQTokenizer
    from embedlab.methods.vq.tokenizer_training import LitTokenizer
    from embedlab.training import load_best_weights, make_trainer

    cfg = params.vq.tokenizer
    trainer, _ = make_trainer(
        params.trainer, name=name, max_epochs=cfg.max_epochs, seed=cfg.seed, live_dir=paths.dvclive(name),
        checkpoint_dir=checkpoint_dir, monitor="val_psnr", mode="max", patience=cfg.patience,
    )
    lit = LitTokenizer(RVQTokenizer(**config), cfg, cfg.max_epochs, seed=cfg.seed)  # built after the seeding
    trainer.fit(lit, train_dataloaders=TensorBatches(split["train"][0], batch_size=cfg.batch_size, shuffle=True,
                                                     seed=cfg.seed),
                val_dataloaders=TensorBatches(split["val"][0], batch_size=1024))
    load_best_weights(lit, trainer)
    best = trainer.checkpoint_callback.best_model_score
    return lit.tokenizer.eval(), trainer.current_epoch, None if best is None else round(float(best), 4)


def train(params: Params, paths: Paths) -> None:
    from embedlab.data.prepare import read_prepared
    from embedlab.training import resolve_device

    data = read_prepared(paths.prepared)
    device = resolve_device(params.trainer)
    config = tokenizer_config(params.vq.tokenizer, data.meta["image_size"], data.channels)
    split = {s: tuple(torch.as_tensor(a, device=device) for a in data.split(s)) for s in ("train", "val")}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="embedlab-tokenizer-ckpt-") as scratch:
        tokenizer, epochs, best = fit(params, paths, config, split, Path(scratch))
    out = paths.model_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(tokenizer, out / "tokenizer.safetensors")
    write_json_atomic(out / "config.json", config)
    write_json_atomic(out / "train.json", {"seed": params.vq.tokenizer.seed, "epochs": epochs,
                                           "best_val_psnr": best,
                                           "wall_seconds": round(time.perf_counter() - start, 1)})


def build_tokenizer(config: dict, weights: Path, device="cpu"):
    """The frozen tokenizer (eval mode, no grad) from its constructor arguments and weights file."""
    from embedlab.methods.vq.tokenizer import RVQTokenizer

    return load_weights(RVQTokenizer(**config), weights, device).requires_grad_(False)


def load_tokenizer(folder: Path, device="cpu"):
    """(tokenizer, config) from models/tokenizer/ (or a copy of its two files), frozen."""
    folder = Path(folder)
    missing = [str(folder / f) for f in ("config.json", "tokenizer.safetensors") if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} missing: train the tokenizer (embedlab pretrain tokenizer)")
    config = json.loads((folder / "config.json").read_text())
    return build_tokenizer(config, folder / "tokenizer.safetensors", device), config
