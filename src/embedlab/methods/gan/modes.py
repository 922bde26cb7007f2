"""Where mode collapse shows: 2-D Gaussian mixtures and stacked digits, with their counters.

- `ring_modes` (8 on a circle) and `grid_modes` (25 on a 5 x 5 grid), sampled by
  `sample_mixture`; a generated point belongs to its nearest mode if it lies within
  3 std of it (`assign_modes`, -1 otherwise).
- Stacked digits: three independent digits in three channels (1,000 modes, `stack_digits`);
  a sample's mode is the triple of per-channel classes (`evaluation.modes.triple_modes`).

Counting (confident readings, min counts, coverage, KL) is the shared `embedlab.evaluation.modes`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ring_modes(count: int = 8, radius: float = 2.0) -> Tensor:
    angles = torch.arange(count, dtype=torch.float32) * (2 * math.pi / count)
    return torch.stack([radius * angles.cos(), radius * angles.sin()], dim=1)


def grid_modes(side: int = 5, spacing: float = 2.0) -> Tensor:
    coords = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    return torch.cartesian_prod(coords, coords)


def sample_mixture(centres: Tensor, std: float, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n points from the equal-weight mixture of isotropic Gaussians at `centres` (K, 2)."""
    which = torch.randint(len(centres), (n,), generator=generator)
    return centres[which] + std * torch.randn(n, centres.shape[1], generator=generator)


def assign_modes(points: Tensor, centres: Tensor, std: float) -> Tensor:
    """(N,) index of the nearest centre, or -1 when it is farther than 3 std."""
    dist = torch.cdist(points.float(), centres.float())
    nearest = dist.min(dim=1)
    return torch.where(nearest.values <= 3 * std, nearest.indices, torch.full_like(nearest.indices, -1))


def stack_digits(images: Tensor, labels: Tensor, n: int, generator: torch.Generator | None = None):
    """(n, 3, S, S) images whose channels are three independently drawn digits, and (n, 3)
    their labels: with 10 classes, 1,000 equally likely modes."""
    picks = torch.randint(len(images), (n, 3), generator=generator)
    stacked = images[picks].squeeze(2)  # (n, 3, 1, S, S) -> (n, 3, S, S)
    return stacked, labels[picks]
