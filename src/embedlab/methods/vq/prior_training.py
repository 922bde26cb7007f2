"""Lightning module that fits either prior on token indices (imported only when training)."""

from __future__ import annotations

import lightning as L
import torch

from embedlab.params import VQPriorParams
from embedlab.training import adamw_cosine


class LitPrior(L.LightningModule):
    """Any prior with `loss(indices, labels) -> scalar`; early stopping watches val_loss,
    the held-out likelihood, since both priors overfit a 1,259-image training set fast."""

    def __init__(self, prior: torch.nn.Module, cfg: VQPriorParams, max_epochs: int):
        super().__init__()
        self.prior = prior
        self.cfg = cfg
        self.max_epochs = max_epochs

    def training_step(self, batch, batch_idx):
        indices, labels = batch
        loss = self.prior.loss(indices, labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        indices, labels = batch
        self.log("val_loss", self.prior.loss(indices, labels), on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        return adamw_cosine(self.prior.parameters(), self.cfg.lr, 0.01, self.max_epochs)
