"""How a generator is read, per benchmark: the shared toolkit (evaluation/) applied to GAN samples.

- 2-D mixtures: a point has the mode of its nearest Gaussian when within 3 std, else none;
  `high_quality` is the share with a mode.
- Stacked digits: each channel is read by a classifier (the evaluator to score, the backbone to
  select); a channel counts only when the reading is confident, a sample has a mode only when
  all three channels do (`confident_share` is the share of confident channels: how digit-like
  the channels are).
- Plain digits: FD / KID / confident share against val + test (`evaluation.samples`).

Every count is reported beside the real-data ceiling (real samples at the same N) and the
untrained floor; a mode needs `min_count` samples, derived from the ceiling
(`evaluation.modes.min_count_from_ceiling`).
"""

from __future__ import annotations

import torch

from embedlab.evaluation.intervals import proportion
from embedlab.evaluation.modes import confident_classes, coverage, min_count_from_ceiling, triple_modes
from embedlab.evaluation.scores import predict


def toy_modes(points: torch.Tensor, centres: torch.Tensor, std: float) -> torch.Tensor:
    from embedlab.methods.gan.modes import assign_modes

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
    from embedlab.methods.gan.modes import sample_mixture

    points = sample_mixture(centres, std, n, torch.Generator().manual_seed(seed))
    min_count = min_count_from_ceiling(toy_modes(points, centres, std), len(centres), fraction)
    return score_toy(points, centres, std, min_count), min_count


def stacked_ceiling(images: torch.Tensor, labels: torch.Tensor, classifier: torch.nn.Module, n: int, seed: int,
                    threshold: float, fraction: float) -> tuple[dict, int]:
    """Real stacked triples (three train digits) at N, read by `classifier`: their score and the
    min count they imply."""
    from embedlab.methods.gan.modes import stack_digits

    real, _ = stack_digits(images, labels, n, torch.Generator().manual_seed(seed))
    _, modes = stacked_readings(real, classifier, threshold)
    min_count = min_count_from_ceiling(modes, stacked_mode_count(classifier), fraction)
    return score_stacked(real, classifier, threshold, min_count), min_count
