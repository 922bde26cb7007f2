"""Lightning module that fits a classifier from classifier.py (imported only when training)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from embedlab.params import ClassifierParams
from embedlab.training import adamw_cosine, random_shift


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
