"""Fitting a classifier from nets.py: the Lightning module and the fit that `reference@<name>`
runs. The reference stages depend on this file and nets.py only (plus data and params):
their weights are the project's fixed instruments, committed to git."""

from __future__ import annotations

import tempfile

import lightning as L
import torch
import torch.nn.functional as F

from embedlab.classifiers.nets import build_classifier, save_classifier
from embedlab.data.prepare import read_prepared
from embedlab.params import ClassifierParams, Params
from embedlab.paths import Paths
from embedlab.training import TensorBatches, adamw_cosine, load_best_weights, make_trainer, random_shift


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
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        return adamw_cosine(self.net.parameters(), self.cfg.lr, self.cfg.weight_decay, self.max_epochs)


def fit_classifier(name: str, kwargs: dict, params: Params, paths: Paths) -> None:
    """Train `name` (evaluator | backbone) on the train split, early-stopped on val accuracy;
    models/<name>/ receives model.safetensors and config.json only (the best checkpoint lives in
    a scratch folder: the folder is committed to git)."""
    cfg = params.model_section(name)
    data = read_prepared(paths.prepared)
    with tempfile.TemporaryDirectory(prefix=f"embedlab-{name}-ckpt-") as scratch:
        trainer, device = make_trainer(
            params.trainer, name=name, max_epochs=cfg.max_epochs, max_steps=cfg.max_steps, seed=cfg.seed,
            live_dir=paths.dvclive(name), checkpoint_dir=scratch, monitor="val_acc", patience=cfg.patience,
        )
        tensors = {}
        for split in ("train", "val"):
            x, y = data.split(split)
            tensors[split] = (torch.as_tensor(x, device=device), torch.as_tensor(y, device=device))
        lit = LitClassifier(build_classifier(name, **kwargs), cfg, cfg.max_epochs)
        trainer.fit(
            lit,
            train_dataloaders=TensorBatches(*tensors["train"], batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed),
            val_dataloaders=TensorBatches(*tensors["val"], batch_size=1024),
        )
        load_best_weights(lit, trainer)
    save_classifier(lit.net, name, kwargs, paths.model_dir(name),
                    extra={"epochs_run": trainer.current_epoch,
                           "best_val_acc": round(float(trainer.checkpoint_callback.best_model_score or 0), 4)})
