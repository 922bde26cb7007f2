"""The Trainer factory (`make_trainer`): accelerator, devices, precision, loggers, checkpoints,
progress bars. Harness plumbing, kept out of the train stages' deps (dvc.yaml): what in it
changes a result is named by the `trainer.*` params those stages list; minibatches, augmentation
and the optimiser live in embedlab.batches, which is a dep.

The classifiers, the vq parts, the diffusion parts and the GAN (its stacked runs: one
LightningModule per stack, methods/gan/module.py) train through `make_trainer`. The federated
engine does not yet: it builds a bare Lightning Trainer per run (one fit of all stacked
clients, no logger or checkpoints: its curves go through `embedlab.live`).

params decide accelerator, devices, precision, epochs/steps, seed, determinism,
early stopping and checkpoints; DVCLive writes the curves DVC plots; a progress
bar shows the work. Lightning is imported here, and this module is imported
only by stages that train (it costs ~9 s).
"""

from __future__ import annotations

from pathlib import Path

import torch

from embedlab.batches import TensorBatches, adamw_cosine, random_shift  # noqa: F401  (re-exported)
from embedlab.params import TrainerParams


def resolve_device(trainer: TrainerParams) -> torch.device:
    """The device the data should live on before Lightning starts."""
    if trainer.accelerator in ("auto", "gpu") and torch.cuda.is_available():
        return torch.device("cuda", 0)
    if trainer.accelerator == "gpu":
        raise RuntimeError("trainer.accelerator: 'gpu' requested but no CUDA device is visible; use 'auto' or 'cpu'")
    return torch.device("cpu")


def resolve_precision(trainer: TrainerParams, device: torch.device) -> str:
    if trainer.precision != "auto":
        return trainer.precision
    return "bf16-mixed" if device.type == "cuda" else "32-true"


def make_trainer(
    trainer: TrainerParams,
    *,
    name: str,
    max_epochs: int,
    max_steps: int = -1,
    seed: int,
    live_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    monitor: str | None = "val_acc",
    mode: str = "max",
    patience: int | None = None,
    extra_callbacks: list | None = None,
):
    """A Lightning Trainer configured from params; returns (trainer, device)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

    L.seed_everything(seed, workers=True, verbose=False)
    device = resolve_device(trainer)
    callbacks = list(extra_callbacks or [])
    if monitor and patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    if monitor and checkpoint_dir is not None:
        # Weights only, so the best checkpoint reloads with torch.load(weights_only=True).
        callbacks.append(
            ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor=monitor, mode=mode, save_weights_only=True, save_top_k=1)
        )
    if trainer.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    loggers = []
    if live_dir is not None:
        from dvclive.lightning import DVCLiveLogger

        # dvcyaml=False: the plots are declared once, in the project's dvc.yaml.
        loggers.append(DVCLiveLogger(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False, report=None))
    pl_trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=trainer.devices,
        precision=resolve_precision(trainer, device),
        max_epochs=max_epochs,
        max_steps=max_steps,
        deterministic=trainer.deterministic,
        log_every_n_steps=trainer.log_every_n_steps,
        enable_progress_bar=trainer.progress_bar,
        enable_model_summary=False,
        enable_checkpointing=checkpoint_dir is not None,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(checkpoint_dir or live_dir or "."),
    )
    return pl_trainer, device


def load_best_weights(module: torch.nn.Module, trainer) -> bool:
    """Put the best checkpoint's weights back into `module` (weights_only: no unpickling)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.best_model_path:
            state = torch.load(cb.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
            return True
    return False
