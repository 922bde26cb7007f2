"""The Trainer factory (`make_trainer`) and tensor batches on the device.

The classifiers, the vq parts and the diffusion parts train through `make_trainer`. Two do
not yet: the federated engine builds a bare Lightning Trainer per run (one fit of all stacked
clients, no logger or checkpoints: its curves go through `embedlab.live`), and the GAN trains
in a plain loop (methods/gan/arms.py); both are issue 16's work.

params decide accelerator, devices, precision, epochs/steps, seed, determinism,
early stopping and checkpoints; DVCLive writes the curves DVC plots; a progress
bar shows the work. Lightning is imported here, and this module is imported
only by stages that train (it costs ~9 s).
"""

from __future__ import annotations

from pathlib import Path

import torch

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


class TensorBatches:
    """Minibatches sliced from tensors that already live on the training device.

    No DataLoader workers, no per-sample Python: one permutation per epoch,
    seeded by (seed, epoch) so a rerun sees the same order."""

    def __init__(self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorBatches needs tensors of one common length")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.tensors[0])
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=gen).to(self.tensors[0].device)
        else:
            order = torch.arange(n, device=self.tensors[0].device)
        self.epoch += 1
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield tuple(t[idx] for t in self.tensors)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by up to +-max_shift pixels (background -1 fills in), batched."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).to(images.device, images.dtype)
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * shifts[:, 0] / w
    theta[:, 1, 2] = -2.0 * shifts[:, 1] / h
    grid = torch.nn.functional.affine_grid(theta, images.shape, align_corners=False)
    shifted = torch.nn.functional.grid_sample(images + 1.0, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return shifted - 1.0


def adamw_cosine(parameters, lr: float, weight_decay: float, max_epochs: int) -> dict:
    """AdamW with a per-epoch cosine decay: what every model here returns from configure_optimizers."""
    opt = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, max_epochs))}


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
