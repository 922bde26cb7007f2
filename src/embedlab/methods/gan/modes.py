"""Where mode collapse shows: 2-D Gaussian mixtures and stacked digits, with their counters.

- `ring_modes` (8 on a circle) and `grid_modes` (25 on a 5 x 5 grid), sampled by
  `sample_mixture`; a generated point belongs to its nearest mode if it lies within
  3 std of it (`assign_modes`). Modes covered = modes with at least `min_count` points;
  high quality = the share of points within 3 std of some mode.
- Stacked digits: three independent digits in three channels (1,000 modes, `stack_digits`);
  a sample's mode is the triple of per-channel classes (`triple_modes`).
- `mode_kl`: KL divergence of the mode histogram to uniform (0 when every mode is equally hit).
"""

from __future__ import annotations

import math

import numpy as np
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


def mode_histogram(modes: Tensor | np.ndarray, num_modes: int) -> np.ndarray:
    modes = np.asarray(modes)
    return np.bincount(modes[modes >= 0], minlength=num_modes)[:num_modes]


def modes_covered(modes: Tensor | np.ndarray, num_modes: int, min_count: int = 1) -> int:
    return int((mode_histogram(modes, num_modes) >= min_count).sum())


def high_quality_fraction(modes: Tensor | np.ndarray) -> float:
    return float((np.asarray(modes) >= 0).mean())


def mode_kl(modes: Tensor | np.ndarray, num_modes: int) -> float:
    """KL(p || uniform) of the histogram of assigned modes (unassigned samples left out)."""
    counts = mode_histogram(modes, num_modes).astype(np.float64)
    if counts.sum() == 0:
        return float(math.log(num_modes))
    p = counts / counts.sum()
    nz = p > 0
    return float((p[nz] * np.log(p[nz] * num_modes)).sum())


def stack_digits(images: Tensor, labels: Tensor, n: int, generator: torch.Generator | None = None):
    """(n, 3, S, S) images whose channels are three independently drawn digits, and (n, 3)
    their labels: with 10 classes, 1,000 equally likely modes."""
    picks = torch.randint(len(images), (n, 3), generator=generator)
    stacked = images[picks].squeeze(2)  # (n, 3, 1, S, S) -> (n, 3, S, S)
    return stacked, labels[picks]


def triple_modes(channel_classes: Tensor, num_classes: int = 10) -> Tensor:
    """(N, 3) per-channel classes -> (N,) mode index c0 * K^2 + c1 * K + c2."""
    c = channel_classes.long()
    return c[:, 0] * num_classes**2 + c[:, 1] * num_classes + c[:, 2]
