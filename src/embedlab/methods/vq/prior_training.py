"""Lightning module that fits either prior on token indices (imported only when training)."""

from __future__ import annotations

import lightning as L
import torch

from embedlab.batches import adamw_cosine
from embedlab.methods.vq.params import VQPriorParams
from embedlab.training import shard_by_rank


class LitPrior(L.LightningModule):
    """Any prior with `loss(indices, labels) -> scalar`; early stopping watches val_loss,
    the held-out likelihood, since both priors overfit a 1,259-image training set fast."""

    def __init__(self, prior: torch.nn.Module, cfg: VQPriorParams, max_epochs: int, val_draws: int = 4):
        super().__init__()
        self.prior = prior
        self.val_draws = val_draws
        self.cfg = cfg
        self.max_epochs = max_epochs

    def training_step(self, batch, batch_idx):
        indices, labels = batch
        loss = self.prior.loss(indices, labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        # ResGen's loss draws mask ratios and orders at random: the same draws every epoch
        # (forked RNG, fixed seed), averaged over a few, keep early stopping off the noise.
        indices, labels = batch
        devices = [indices.device] if indices.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(batch_idx)
            loss = torch.stack([self.prior.loss(indices, labels) for _ in range(self.val_draws)]).mean()
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(labels), sync_dist=True)

    def setup(self, stage: str) -> None:
        shard_by_rank(self)  # under DDP: this rank's shard of every epoch (`batches`, set by the fit)

    def configure_optimizers(self):
        return adamw_cosine(self.prior.parameters(), self.cfg.lr, 0.01, self.max_epochs)
