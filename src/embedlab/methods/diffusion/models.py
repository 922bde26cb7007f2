"""The DDPM's Lightning module (unconditional, or conditional with label dropout for
classifier-free guidance) with EMA weights, and the seeded step stream every part of the method
trains on. The given DDPM's stage (given.py) reads this file, so the experts' modules live in
experts.py: changing them never retrains the DDPM."""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from embedlab.methods.diffusion.schedule import Schedule


def _lightning():
    import lightning as L

    return L


class _Steps:
    """An endless stream of random minibatches from tensors, seeded: `steps` of them."""

    def __init__(self, *tensors: Tensor, batch_size: int, steps: int, seed: int):
        self.tensors, self.batch_size, self.steps, self.seed = tensors, batch_size, steps, seed

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed)
        n = len(self.tensors[0])
        for _ in range(self.steps):
            idx = torch.randint(n, (self.batch_size,), generator=gen)
            yield tuple(t[idx] for t in self.tensors)


def lr_factor(step: int, steps: int, decay: bool) -> float:
    """Linear warm-up over the first 5% of the steps; then flat, or (decay) a cosine down to 5%."""
    warm = max(1, steps // 20)
    factor = min(1.0, (step + 1) / warm)
    if decay:
        factor *= 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(1, steps)))
    return factor


def min_snr_weight(schedule: Schedule, t: Tensor, gamma: float) -> Tensor:
    """Min-SNR-gamma loss weights for eps-prediction (Hang et al., ICCV 2023): min(SNR_t, gamma) / SNR_t.
    Low-noise steps, easy and many, count less; gamma <= 0 weights every step 1."""
    if gamma <= 0:
        return torch.ones(len(t), device=t.device)
    a = schedule.alphabar.to(t.device)[t].float()
    snr = a / (1 - a)
    return snr.clamp(max=gamma) / snr


def ddpm_module(unet: torch.nn.Module, schedule: Schedule, lr: float, ema_decay: float, label_dropout: float,
                steps: int, lr_decay: bool = False, min_snr_gamma: float = 0.0):
    L = _lightning()

    class DDPM(L.LightningModule):
        """eps-prediction MSE at uniform t, Min-SNR weighted; conditional nets see the null
        label with probability `label_dropout` (classifier-free guidance's training)."""

        def __init__(self):
            super().__init__()
            self.net = unet
            self.ema = copy.deepcopy(unet).requires_grad_(False)
            self.schedule = schedule

        def training_step(self, batch, _):
            x0, y = batch
            t = torch.randint(schedule.T, (len(x0),), device=x0.device)
            noise = torch.randn_like(x0)
            xt = schedule.q_sample(x0, t, noise)
            if self.net.num_classes:
                drop = torch.rand(len(y), device=y.device) < label_dropout
                y = torch.where(drop, torch.full_like(y, self.net.num_classes), y)
                pred = self.net(xt, t, y)
            else:
                pred = self.net(xt, t)
            per_sample = (pred - noise).pow(2).flatten(1).mean(1)
            loss = (min_snr_weight(schedule, t, min_snr_gamma) * per_sample).mean()
            self.log("train_loss", loss, prog_bar=True)
            return loss

        def on_train_batch_end(self, *_):
            with torch.no_grad():
                for e, p in zip(self.ema.parameters(), self.net.parameters()):
                    e.lerp_(p, 1 - ema_decay)

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=0.0)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, lr_decay))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return DDPM()
