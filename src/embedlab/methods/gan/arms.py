"""The GAN arms, their loop settings, and sampling from a trained generator.

An arm is a discriminator head plus the regularisers it uses:
  dcgan             scalar D, non-saturating GAN loss (the standard baseline)
  maf               embedding D, MaF loss on the embedding mean, no regularisers
  maf+disomap       + DIsoMap
  maf+disomap+dlle  + DLLE
  mee               + the replay-buffer entropy term (D on real, G on fake embeddings)

Every arm runs the same number of generator updates (`steps`), one D update before each
(module.py trains them, many runs stacked as one model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Arm:
    head: str
    disomap: bool = False
    dlle: bool = False
    entropy: bool = False


ARMS: dict[str, Arm] = {
    "dcgan": Arm("scalar"),
    "maf": Arm("embedding"),
    "maf+disomap": Arm("embedding", disomap=True),
    "maf+disomap+dlle": Arm("embedding", disomap=True, dlle=True),
    "mee": Arm("embedding", disomap=True, dlle=True, entropy=True),
}


@dataclass(frozen=True)
class LoopConfig:
    steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    maf_form: str = "nonsaturating"  # or "linear", the paper's form
    maf_scale: float = 1.0
    lambda_dlle: float = 1.0
    lambda_disomap: float = 1.0
    disomap_distance: str = "mse"
    sigma: float = 0.1
    sigma_ramp: int = 500
    buffer_size: int = 1024
    aug_shift: float = 1.0
    aug_degrees: float = 10.0
    aug_noise: float = 0.05


@torch.no_grad()
def sample(gen: nn.Module, n: int, seed: int, batch_size: int = 2048) -> Tensor:
    """n samples from a generator in eval mode, the same for a seed (z drawn on the CPU)."""
    device = next(gen.parameters()).device
    z = torch.randn(n, gen.z_dim, generator=torch.Generator().manual_seed(seed))
    return torch.cat([gen(z[i : i + batch_size].to(device)).cpu() for i in range(0, n, batch_size)])
