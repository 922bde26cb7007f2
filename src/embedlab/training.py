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

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from embedlab.batches import TensorBatches, adamw_cosine, random_shift  # noqa: F401  (re-exported)
from embedlab.jobstore import RESUME_DIR, ResumeError, fresh_folder, key_digest, stored_key  # noqa: F401
from embedlab.params import ParamsError, TrainerParams


class Resume:
    """A fit's last checkpoint, kept where `dvc repro` does not delete it (RESUME_DIR/<name>/),
    keyed by what the fit's result depends on (`key`: params, data, code). `ckpt_path()` is the
    checkpoint to resume from, or None: a fresh start. A checkpoint of another key is set aside
    with a message and the fit starts fresh; an unreadable one stops the stage before any work
    (it is read with weights_only, never unpickled). `done()` removes the folder once the stage's
    outputs are written."""

    def __init__(self, root: Path, name: str, key: dict):
        self.name, self.dir = name, Path(root) / RESUME_DIR / name
        self.key = key_digest(key)
        self.last = self.dir / "last.ckpt"

    def _fresh(self) -> None:
        fresh_folder(self.dir, self.key)

    def ckpt_path(self, log: Callable[[str], None] = print) -> str | None:
        if not is_global_zero():  # a DDP rank the launcher started: rank 0 has decided, and owns the folder
            return str(self.last) if self.last.exists() else None
        if not self.last.exists():
            self._fresh()
            return None
        if stored_key(self.dir) != self.key:
            log(f"{self.last}: kept from a run with other params, data or code: starting {self.name} fresh")
            self._fresh()
            return None
        try:
            state = torch.load(self.last, map_location="cpu", weights_only=True)
            epoch, step = int(state["epoch"]), int(state["global_step"])
            if not isinstance(state["state_dict"], dict):
                raise TypeError("no state_dict")
        except Exception as exc:  # noqa: BLE001  (any failure to read it: never resumed from)
            raise ResumeError(f"{self.last}: not a readable checkpoint ({type(exc).__name__}: {exc}); "
                              f"delete {self.dir} to start {self.name} fresh") from None
        log(f"resuming {self.name} from {self.last}: {epoch + 1} epoch(s), step {step} done")
        return str(self.last)

    def done(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- several devices (Lightning's DDP) -----------------------------------------------------------

# The models whose fits shard their batches by rank and write from rank 0 alone. The federated
# runs do not (Flower is their way across machines).
MULTI_DEVICE = ("evaluator", "backbone", "vq", "diffusion", "gan")


class ShardedBatches(TensorBatches):
    """TensorBatches with each DDP rank its own shard of every epoch: the epoch's order (the same
    seeded permutation on every rank) is padded with its own head to a multiple of the world size,
    as torch's DistributedSampler does, and rank r takes every world-th index from r, so the ranks'
    shards are disjoint (but for the padding), cover the epoch and give every rank the same number
    of batches (unequal counts would hang DDP). `rank` and `world` come from the Trainer
    (each LightningModule's `setup`, `shard_by_rank`); with one rank it is TensorBatches, order and all."""

    rank, world = 0, 1

    def __len__(self) -> int:
        if self.world == 1:
            return super().__len__()
        n = -(-len(self.tensors[0]) // self.world)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def shard(self) -> torch.Tensor:
        """This rank's indices of the next epoch's order (and the epoch advances)."""
        n = len(self.tensors[0])
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        else:
            order = torch.arange(n)
        self.epoch += 1
        total = -(-n // self.world) * self.world
        return torch.cat([order, order[: total - n]])[self.rank :: self.world]

    def share(self) -> dict:
        """How DDP spreads an epoch: the world size and each rank's batches and rows."""
        return {"world_size": self.world, "batches_per_rank": len(self),
                "samples_per_rank": -(-len(self.tensors[0]) // self.world)}

    def __iter__(self):
        if self.world == 1:
            yield from super().__iter__()
            return
        mine = self.shard().to(self.tensors[0].device)
        for i in range(len(self)):
            idx = mine[i * self.batch_size : (i + 1) * self.batch_size]
            yield tuple(t[idx] for t in self.tensors)


def shard_by_rank(module) -> None:
    """In a LightningModule's `setup`, before Lightning first asks the train iterable its length:
    its `batches` (a ShardedBatches) take this rank's shard."""
    if isinstance(getattr(module, "batches", None), ShardedBatches):
        module.batches.rank, module.batches.world = module.global_rank, module.trainer.world_size


def world_size(trainer: TrainerParams) -> int:
    return trainer.devices * trainer.num_nodes


def is_global_zero() -> bool:
    """This process is rank 0 of its run: true outside DDP. The ranks Lightning's launcher (or
    torchrun, or a cluster launcher) starts carry their rank in the environment."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


def check_devices(trainer: TrainerParams, name: str) -> None:
    """Refuse, before any work, devices that are not there and models that cannot use several."""
    world = world_size(trainer)
    if world > 1 and name not in MULTI_DEVICE:
        raise ParamsError(
            f"trainer.devices: {trainer.devices} x trainer.num_nodes: {trainer.num_nodes}: {name} trains on one "
            f"device (its jobs are not sharded across ranks yet; only {', '.join(MULTI_DEVICE)} train with DDP). "
            f"Use trainer.devices: 1 for {name}; for federated training across machines, Flower "
            "(README, \"Several devices\")")
    if trainer.accelerator == "cpu" or (trainer.accelerator == "auto" and not torch.cuda.is_available()):
        cores = os.cpu_count() or 1
        if trainer.devices > cores:
            raise ParamsError(f"trainer.devices: {trainer.devices} CPU processes, but this machine has {cores} cores")
    else:
        visible = torch.cuda.device_count()
        if trainer.devices > visible:
            raise ParamsError(f"trainer.devices: {trainer.devices}, but {visible} CUDA device(s) are visible "
                              "(CUDA_VISIBLE_DEVICES, nvidia-smi)")


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
    resume: Resume | None = None,
    ddp_options: dict | None = None,
):
    """A Lightning Trainer configured from params; returns (trainer, device): the device the data
    should live on (under DDP the CPU: Lightning moves each rank's batches to its own device).
    With `resume`, a full last checkpoint (weights, optimiser, schedulers, loop and callback state)
    is written to its folder after every epoch, and DVCLive continues its steps."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

    L.seed_everything(seed, workers=True, verbose=False)
    device = resolve_device(trainer)
    ddp = world_size(trainer) > 1
    callbacks = list(extra_callbacks or [])
    if monitor and patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    if monitor and checkpoint_dir is not None:
        # Weights only, so the best checkpoint reloads with torch.load(weights_only=True).
        callbacks.append(
            ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor=monitor, mode=mode, save_weights_only=True, save_top_k=1)
        )
    if resume is not None:
        # The latest epoch, overwritten each epoch (Lightning writes checkpoints atomically).
        callbacks.append(ModelCheckpoint(dirpath=resume.dir, filename=resume.last.stem, monitor=None, save_top_k=1,
                                         save_on_train_epoch_end=True, enable_version_counter=False))
    if trainer.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    loggers = []
    if live_dir is not None:
        from dvclive.lightning import DVCLiveLogger

        # dvcyaml=False: the plots are declared once, in the project's dvc.yaml.
        loggers.append(DVCLiveLogger(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False, report=None,
                                     resume=resume is not None and resume.last.exists()))
    pl_trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=trainer.devices,
        num_nodes=trainer.num_nodes,
        strategy=_ddp_strategy(ddp_options) if ddp else "auto",  # on CPU over gloo, on GPUs over NCCL
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
    return pl_trainer, torch.device("cpu") if ddp else device


def _ddp_strategy(options: dict | None):
    """"ddp", or Lightning's DDPStrategy with `options` passed to torch's DistributedDataParallel
    (e.g. find_unused_parameters, broadcast_buffers: the GAN stacks)."""
    if not options:
        return "ddp"
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(**options)


def load_best_weights(module: torch.nn.Module, trainer) -> bool:
    """Put the best checkpoint's weights back into `module` (weights_only: no unpickling)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.best_model_path:
            state = torch.load(cb.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
            return True
    return False
