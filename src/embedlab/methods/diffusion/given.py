"""pretrain@ddpm: the off-the-shelf unconditional DDPM that PPAP guides, trained once per data set.

PPAP is plug-and-play: the diffusion model is given and only the guidance is trained for it. So
the DDPM sits with the references (evaluator, backbone), not with the compared arms: one network
per data set, its weights committed to git in models/ddpm/, retrained only when the train split
or `diffusion.ddpm` change. Training seeds (`diffusion.seeds`) vary what the claim compares, the
experts and baselines (method.py), never this network.

models/ddpm/: ddpm_uncond.safetensors (the EMA weights), config.json (what rebuilds the UNet and
its schedule without params.yaml, and what it was fit on), train.json (wall seconds, steps, seed).
Training reads this file, models.py, unet.py and schedule.py of the method (and the data).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from embedlab.io import load_tensors, save_tensors, write_json_atomic
from embedlab.params import Params
from embedlab.paths import Paths

name = "ddpm"
WEIGHTS = "ddpm_uncond.safetensors"


def schedule_of(d):
    """The noise schedule of a DDPM's params (`diffusion.ddpm`, or a config.json read back)."""
    from embedlab.methods.diffusion.schedule import Schedule

    return Schedule(d.timesteps, d.schedule)


def build_unet(d, num_classes: int = 0, in_channels: int = 1):
    """`d.channels` are the UNet's widths; `in_channels` the images' (1 grey, 3 colour)."""
    from embedlab.methods.diffusion.unet import UNet

    return UNet(tuple(d.channels), in_channels=in_channels, attention=d.attention, num_classes=num_classes)


def train_split(paths: Paths) -> tuple[torch.Tensor, torch.Tensor, int]:
    from embedlab.data.prepare import read_prepared

    data = read_prepared(paths.prepared)
    x, y = data.split("train")
    return torch.from_numpy(x), torch.from_numpy(y), data.num_classes


def data_sha256(x: torch.Tensor, y: torch.Tensor) -> str:
    """What a DDPM was fit on: the train split's images and labels, as bytes (a new data set, a
    new split: a new hash)."""
    digest = hashlib.sha256()
    for tensor in (x, y):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def fit(module, params: Params, run_name: str, steps: int, seed: int, batches) -> None:
    """`steps` optimiser steps of a Lightning module through the project's Trainer factory."""
    from embedlab.training import make_trainer

    trainer, _ = make_trainer(params.trainer, name=run_name, max_epochs=1, max_steps=steps, seed=seed, monitor=None)
    trainer.fit(module, train_dataloaders=batches)


def fit_ddpm(params: Params, d, x: torch.Tensor, y: torch.Tensor, stream: int, run_name: str,
             num_classes: int = 0, label_dropout: float = 0.0) -> dict:
    """A DDPM with `d`'s architecture and fit (`diffusion.ddpm`), on (x, y), seeded by `stream`:
    its EMA state dict. Unconditional here; conditional (num_classes > 0) for the cfg arm."""
    from embedlab.methods.diffusion.models import _Steps, ddpm_module

    torch.manual_seed(stream)
    module = ddpm_module(build_unet(d, num_classes, int(x.shape[1])), schedule_of(d), d.lr, d.ema_decay, label_dropout,
                         d.steps, d.lr_decay, d.min_snr_gamma)
    fit(module, params, run_name, d.steps, stream, _Steps(x, y, batch_size=d.batch_size, steps=d.steps, seed=stream))
    return module.ema.state_dict()


def train(params: Params, paths: Paths) -> None:
    """The given DDPM, seeded by `diffusion.ddpm.seed` (stream 1000 * seed, the stream training
    seed 0's DDPM had when every seed retrained its own)."""
    d = params.diffusion.ddpm
    x, y, _ = train_split(paths)
    start = time.perf_counter()
    ema = fit_ddpm(params, d, x, y, 1000 * d.seed, f"ddpm_seed{d.seed}")
    seconds = round(time.perf_counter() - start, 1)
    out = paths.model_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(ema, out / WEIGHTS)
    colour = {"image_channels": int(x.shape[1])} if x.shape[1] != 1 else {}  # grey: the config as before
    write_json_atomic(out / "config.json", {**d.model_dump(), "image_size": int(x.shape[-1]), **colour,
                                            "train_images": int(len(x)), "data_sha256": data_sha256(x, y)})
    write_json_atomic(out / "train.json", {"wall_seconds": seconds, "steps": d.steps, "seed": d.seed,
                                           "accelerator": params.trainer.accelerator})


def ddpm_from(config: dict, weights: Path, device="cpu"):
    """(the EMA UNet in eval mode, its `diffusion.ddpm` params) from a config.json's contents and
    its weights: models/ddpm, or the copy a registry bundle carries."""
    from embedlab.methods.diffusion.params import DiffusionDDPMParams

    d = DiffusionDDPMParams(**{k: v for k, v in config.items() if k in DiffusionDDPMParams.model_fields})
    unet = build_unet(d, in_channels=int(config.get("image_channels", 1)))
    unet.load_state_dict(load_tensors(weights))
    return unet.to(device).eval(), d


def read_config(folder: Path) -> dict:
    folder = Path(folder)
    if not (folder / WEIGHTS).exists() or not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: no given DDPM there; train it once with `embedlab pretrain ddpm` "
                                "(dvc repro pretrain@ddpm)")
    return json.loads((folder / "config.json").read_text())


def load_ddpm(folder: Path, device="cpu"):
    """models/ddpm (`paths.model_dir("ddpm")`) -> (the EMA UNet in eval mode, its params)."""
    return ddpm_from(read_config(folder), Path(folder) / WEIGHTS, device)


def check_current(params: Params, paths: Paths) -> None:
    """Refuse a stale given DDPM: one trained with other `diffusion.ddpm` params or on another
    train split would leave the experts guiding a network nobody asked for."""
    config = read_config(paths.model_dir(name))
    stale = [k for k, v in params.diffusion.ddpm.model_dump().items() if config.get(k) != v]
    if config.get("data_sha256") != data_sha256(*train_split(paths)[:2]):
        stale.append("the train split")
    if stale:
        raise ValueError(f"{paths.model_dir(name)} is stale ({', '.join(stale)}: not what diffusion.ddpm and "
                         "data/prepared hold now); retrain it: `embedlab pretrain ddpm`")
