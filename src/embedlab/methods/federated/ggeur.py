"""GGEUR's global geometric shape (Dai et al., CVPR 2025): per-class embedding statistics
pooled exactly across clients, and new embeddings drawn along the pooled eigen-directions.

A client sends, per class, (count n_k, mean mu_k, covariance Sigma_k) of its embeddings
(population covariance, divided by n_k). The server pools them exactly:

    mu    = (1/N) sum_k n_k mu_k
    Sigma = (1/N) [ sum_k n_k Sigma_k + sum_k n_k (mu_k - mu)(mu_k - mu)^T ]

which equals the covariance of all clients' embeddings stacked together (tested). A client
then augments each real embedding x as x + sum_m eps_m * scale(lambda_m) * xi_m, eps ~ N(0, 1),
over the eigen-pairs (lambda_m, xi_m) of Sigma: scale "sqrt" gives the pooled covariance
itself; "linear" multiplies by lambda_m (what the released code does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ClassStats:
    count: int
    mean: Tensor  # (d,)
    cov: Tensor  # (d, d), population covariance


def class_stats(embeddings: Tensor) -> ClassStats:
    """(n, d) embeddings of one class on one client -> its (count, mean, covariance)."""
    x = embeddings.double()
    n = len(x)
    if n == 0:
        raise ValueError("class_stats of zero embeddings")
    mean = x.mean(0)
    centred = x - mean
    return ClassStats(n, mean, centred.T @ centred / n)


def pool(stats: list[ClassStats]) -> ClassStats:
    """The exact pooled (count, mean, covariance) of several clients' statistics."""
    stats = [s for s in stats if s.count > 0]
    if not stats:
        raise ValueError("pool: no client holds samples of this class")
    total = sum(s.count for s in stats)
    mean = sum(s.count * s.mean for s in stats) / total
    within = sum(s.count * s.cov for s in stats)
    between = sum(s.count * torch.outer(s.mean - mean, s.mean - mean) for s in stats)
    return ClassStats(total, mean, (within + between) / total)


def eigen_directions(cov: Tensor, top: int | None = None) -> tuple[Tensor, Tensor]:
    """Eigenvalues (descending, clipped at 0) and eigenvectors (columns) of a covariance."""
    values, vectors = torch.linalg.eigh(cov.double())
    order = torch.argsort(values, descending=True)[:top]
    return values[order].clamp_min(0), vectors[:, order]


def augment(x: Tensor, values: Tensor, vectors: Tensor, copies: int, scale: str = "sqrt",
            generator: torch.Generator | None = None) -> Tensor:
    """(n, d) real embeddings -> (n * copies, d) new ones along the pooled eigen-directions."""
    if scale == "sqrt":
        weights = values.sqrt()
    elif scale == "linear":
        weights = values
    else:
        raise ValueError(f"ggeur scale {scale!r}: expected 'sqrt' or 'linear'")
    eps = torch.randn(len(x) * copies, len(values), generator=generator, dtype=torch.float64)
    offsets = (eps * weights) @ vectors.T
    return (x.double().repeat_interleave(copies, dim=0) + offsets).to(x.dtype)
