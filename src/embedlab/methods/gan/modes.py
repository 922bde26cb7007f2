"""Where mode collapse shows: 2-D Gaussian mixtures and stacked digits, with their counters.

- `ring_modes` (8 on a circle) and `grid_modes` (25 on a 5 x 5 grid), sampled by
  `sample_mixture`; a generated point belongs to its nearest mode if it lies within
  3 std of it (`assign_modes`, -1 otherwise).
- Stacked digits: three independent digits in three channels (1,000 modes, `stack_digits`);
  a sample's mode is the triple of per-channel classes (`evaluation.modes.triple_modes`).

How a benchmark's samples are read (`score_toy`, `score_stacked`, `score_digit_modes`) and the
real-data ceiling at the same N (`*_ceiling`) live here too: the train stage's selection
(method.py, with the backbone) and the evaluation (scoring.py, with the evaluator) both call
them, and neither calls the other. Counting (confident readings, min counts, coverage, KL) is
the shared `embedlab.evaluation.modes`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from embedlab.evaluation.intervals import proportion
from embedlab.evaluation.modes import confident_classes, coverage, min_count_from_ceiling, triple_modes
from embedlab.evaluation.scores import predict


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


# --- reading samples, and the real-data ceiling at the same N ---------------------------------------


def toy_modes(points: torch.Tensor, centres: torch.Tensor, std: float) -> torch.Tensor:
    return assign_modes(points, centres, std)


def score_toy(points: torch.Tensor, centres: torch.Tensor, std: float, min_count: int) -> dict:
    cov = coverage(toy_modes(points, centres, std), len(centres), min_count)
    cov["high_quality"] = cov.pop("assigned_share")
    return cov


def stacked_readings(images: torch.Tensor, classifier: torch.nn.Module, threshold: float):
    """(channel confident share, (N,) triple modes) of stacked samples (N, 3, S, S)."""
    n = len(images)
    probs = predict(classifier, images.reshape(-1, 1, *images.shape[-2:]))[0]  # channel c of sample i at 3i + c
    classes = confident_classes(probs, threshold).reshape(n, 3)
    return proportion((classes >= 0).flatten()), triple_modes(classes, probs.shape[1])


def stacked_mode_count(classifier: torch.nn.Module) -> int:
    return int(classifier.head.out_features) ** 3


def score_stacked(images: torch.Tensor, classifier: torch.nn.Module, threshold: float, min_count: int) -> dict:
    share, modes = stacked_readings(images, classifier, threshold)
    return {"confident_share": share, **coverage(modes, stacked_mode_count(classifier), min_count)}


def toy_ceiling(centres: torch.Tensor, std: float, n: int, seed: int, fraction: float) -> tuple[dict, int]:
    """Real mixture samples at N: their score and the min count they imply."""
    points = sample_mixture(centres, std, n, torch.Generator().manual_seed(seed))
    min_count = min_count_from_ceiling(toy_modes(points, centres, std), len(centres), fraction)
    return score_toy(points, centres, std, min_count), min_count


def stacked_ceiling(images: torch.Tensor, labels: torch.Tensor, classifier: torch.nn.Module, n: int, seed: int,
                    threshold: float, fraction: float) -> tuple[dict, int]:
    """Real stacked triples (three train digits) at N, read by `classifier`: their score and the
    min count they imply."""
    real, _ = stack_digits(images, labels, n, torch.Generator().manual_seed(seed))
    _, modes = stacked_readings(real, classifier, threshold)
    min_count = min_count_from_ceiling(modes, stacked_mode_count(classifier), fraction)
    return score_stacked(real, classifier, threshold, min_count), min_count


def digit_mode_count(classifier: torch.nn.Module) -> int:
    return int(classifier.head.out_features)


def score_digit_modes(images: torch.Tensor, classifier: torch.nn.Module, threshold: float, min_count: int) -> dict:
    """Plain digits (N, 1, S, S): modes covered over the classifier's classes, confident readings only."""
    probs = predict(classifier, images)[0]
    cov = coverage(confident_classes(probs, threshold), digit_mode_count(classifier), min_count)
    cov.pop("assigned_share")  # the confident share: SampleScorer reports it beside FD / KID
    return cov


def digits_ceiling(images: torch.Tensor, classifier: torch.nn.Module, n: int, seed: int, threshold: float,
                   fraction: float) -> tuple[dict, int]:
    """Real train digits at N (the images `SampleScorer.floor_images(n, seed=seed)` draws), read
    by `classifier`: their mode score and the min count they imply."""
    real = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]]
    classes = confident_classes(predict(classifier, real)[0], threshold)
    min_count = min_count_from_ceiling(classes, digit_mode_count(classifier), fraction)
    return score_digit_modes(real, classifier, threshold, min_count), min_count
