"""Lightning module that fits an RVQTokenizer (imported only when training; lightning costs ~9 s)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from embedlab.batches import adamw_cosine, random_shift
from embedlab.evaluation.scores import psnr
from embedlab.methods.vq.params import VQTokenizerParams
from embedlab.methods.vq.tokenizer import RVQTokenizer


class LitTokenizer(L.LightningModule):
    """loss = mse(recon, x) + commit_loss; batches are (images,) or (images, labels).

    val_psnr (full depth) is what make_trainer(monitor="val_psnr", mode="max") watches;
    val_psnr_d1 shows how much the first depth alone carries, which a prior leans on."""

    def __init__(
        self, tokenizer: RVQTokenizer, cfg: VQTokenizerParams, max_epochs: int, weight_decay: float = 0.0, seed: int = 0
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.max_epochs = max_epochs
        self.weight_decay = weight_decay
        self.shift_gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor):
        return self.tokenizer(x)

    def training_step(self, batch, batch_idx):
        x = random_shift(batch[0], self.cfg.augment_shift, self.shift_gen)
        recon, commit_loss, _ = self.tokenizer(x)
        loss = F.mse_loss(recon, x) + commit_loss
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x = batch[0]
        z = self.tokenizer.encode(x)
        z_q, indices, commit_loss = self.tokenizer.quantize(z)
        recon = self.tokenizer.decode_latent(z_q, clamp=False)
        coarse = self.tokenizer.decode_indices(indices, depth=1)
        self.log("val_loss", F.mse_loss(recon, x) + commit_loss, on_epoch=True, batch_size=len(x))
        self.log("val_psnr", psnr(recon.clamp(-1, 1), x).mean(), on_epoch=True, prog_bar=True, batch_size=len(x))
        self.log("val_psnr_d1", psnr(coarse, x).mean(), on_epoch=True, batch_size=len(x))

    def configure_optimizers(self):
        return adamw_cosine(self.tokenizer.parameters(), self.cfg.lr, self.weight_decay, self.max_epochs)
