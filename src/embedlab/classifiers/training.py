"""Fitting a classifier from nets.py: the Lightning module and the fit that `reference@<name>`
runs. The reference stages depend on this file and nets.py only (plus data and params):
their weights are the project's fixed instruments, committed to git.

With `trainer.devices` x `trainer.num_nodes` above 1 the fit is Lightning's DDP: each rank
trains on its own shard of every epoch (`ShardedBatches`), validation reads the whole val split
on every rank (so early stopping agrees), and rank 0 alone writes the weights."""

from __future__ import annotations

import hashlib
import inspect

import lightning as L
import torch
import torch.nn.functional as F

from embedlab import batches as batches_module
from embedlab.classifiers import nets as nets_module
from embedlab.classifiers.nets import build_classifier, save_classifier
from embedlab.data.prepare import read_prepared
from embedlab.params import ClassifierParams, Params
from embedlab.paths import Paths
from embedlab.training import (
    Resume,
    ShardedBatches,
    TensorBatches,
    adamw_cosine,
    load_best_weights,
    make_trainer,
    random_shift,
    shard_by_rank,
)


class LitClassifier(L.LightningModule):
    def __init__(self, net: torch.nn.Module, cfg: ClassifierParams, max_epochs: int):
        super().__init__()
        self.net = net
        self.cfg = cfg
        self.max_epochs = max_epochs
        self.shift_gen = torch.Generator().manual_seed(cfg.seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = random_shift(x, self.cfg.augment_shift, self.shift_gen)
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, prog_bar=True, sync_dist=True)

    def setup(self, stage: str) -> None:
        shard_by_rank(self)

    def configure_optimizers(self):
        return adamw_cosine(self.net.parameters(), self.cfg.lr, self.cfg.weight_decay, self.max_epochs)

    # What a resumed fit needs beyond Lightning's own state: the random streams (dropout draws from
    # torch's global one, the shift augmentation from its own) and the minibatch order's epoch.
    batches: TensorBatches | None = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["embedlab"] = {"torch_rng": torch.get_rng_state(), "shift_gen": self.shift_gen.get_state(),
                                  "batches_epoch": self.batches.epoch if self.batches is not None else 0}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["embedlab"]
        torch.set_rng_state(state["torch_rng"])
        self.shift_gen.set_state(state["shift_gen"])
        if self.batches is not None:
            self.batches.epoch = int(state["batches_epoch"])


def resume_key(name: str, kwargs: dict, params: Params, data) -> dict:
    """What a classifier's fit depends on: its params, the trainer keys, the train/val arrays and
    the code (nets, this file, the batches)."""
    digest = hashlib.sha256()
    for split in ("train", "val"):
        for array in data.split(split):
            digest.update(array.tobytes())
    code = hashlib.sha256("".join(inspect.getsource(m) for m in (nets_module, batches_module)).encode()
                          + inspect.getsource(LitClassifier).encode() + inspect.getsource(fit_classifier).encode())
    return {"name": name, "kwargs": kwargs, "section": params.model_section(name).model_dump(),
            "trainer": params.trainer.model_dump(exclude={"progress_bar", "log_every_n_steps"}),
            "data": digest.hexdigest(), "code": code.hexdigest()}


def fit_classifier(name: str, kwargs: dict, params: Params, paths: Paths) -> None:
    """Train `name` (evaluator | backbone) on the train split, early-stopped on val accuracy;
    models/<name>/ receives model.safetensors and config.json only (the folder is committed to
    git). The best and the last checkpoint live in .embedlab/resume/<name>/ until the weights are
    written: a killed run, rerun with the same params, data and code, resumes from its last epoch."""
    cfg = params.model_section(name)
    data = read_prepared(paths.prepared)
    resume = Resume(paths.root, name, resume_key(name, kwargs, params, data))
    ckpt_path = resume.ckpt_path()  # before any work: a corrupt checkpoint stops here
    trainer, device = make_trainer(
        params.trainer, name=name, max_epochs=cfg.max_epochs, max_steps=cfg.max_steps, seed=cfg.seed,
        live_dir=paths.dvclive(name), checkpoint_dir=resume.dir, monitor="val_acc", patience=cfg.patience, resume=resume,
    )
    tensors = {}
    for split in ("train", "val"):
        x, y = data.split(split)
        tensors[split] = (torch.as_tensor(x, device=device), torch.as_tensor(y, device=device))
    lit = LitClassifier(build_classifier(name, **kwargs), cfg, cfg.max_epochs)
    lit.batches = ShardedBatches(*tensors["train"], batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    trainer.fit(lit, train_dataloaders=lit.batches, val_dataloaders=TensorBatches(*tensors["val"], batch_size=1024),
                ckpt_path=ckpt_path, weights_only=True)
    if not trainer.is_global_zero:
        return  # rank 0 writes
    load_best_weights(lit, trainer)
    extra = {"epochs_run": trainer.current_epoch,
             "best_val_acc": round(float(trainer.checkpoint_callback.best_model_score or 0), 4)}
    if trainer.world_size > 1:  # how the fit was spread: each rank's share of an epoch
        extra["ddp"] = lit.batches.share()
    save_classifier(lit.net, name, kwargs, paths.model_dir(name), extra=extra)
    resume.done()
