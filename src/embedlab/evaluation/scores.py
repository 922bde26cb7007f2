"""Label-level scores of a batch of images under a (frozen) classifier."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def predict(net: torch.nn.Module, images: torch.Tensor | np.ndarray, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (N, K), features (N, D)) for images in [-1, 1]."""
    device = next(net.parameters()).device
    images = torch.as_tensor(images, dtype=torch.float32)
    probs, feats = [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        f = net.features(x)
        probs.append(torch.softmax(net.head(f), dim=1).cpu())
        feats.append(f.cpu())
    if not probs:
        return torch.zeros(0, net.head.out_features), torch.zeros(0, net.num_features)
    return torch.cat(probs), torch.cat(feats)


def class_accuracy(probs: torch.Tensor, requested: torch.Tensor | np.ndarray) -> float:
    """Share of samples whose predicted class is the requested (or true) one."""
    requested = torch.as_tensor(requested)
    if len(requested) == 0:
        raise ValueError("class_accuracy of zero samples")
    return float((probs.argmax(dim=1) == requested).float().mean())


def mode_histogram(predicted: torch.Tensor | np.ndarray, num_modes: int) -> np.ndarray:
    """(K,) counts per mode (class). Negative entries mean "no mode" (e.g. a 2-D sample
    farther than 3 std from every Gaussian) and are left out."""
    predicted = np.asarray(predicted)
    return np.bincount(predicted[predicted >= 0], minlength=num_modes)[:num_modes]


def class_histogram_kl(predicted: torch.Tensor | np.ndarray, num_classes: int) -> float:
    """KL(histogram of predicted classes || uniform): 0 when every class is equally frequent,
    log(K) when all samples fall in one class, and log(K) too when none has a mode."""
    counts = mode_histogram(predicted, num_classes).astype(np.float64)
    if counts.sum() == 0:
        return float(np.log(num_classes))
    p = counts / counts.sum()
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] * num_classes)))


def count_modes(predicted: torch.Tensor | np.ndarray, num_modes: int, min_count: int = 1) -> int:
    """Modes (classes) that receive at least `min_count` samples."""
    return int((mode_histogram(predicted, num_modes) >= min_count).sum())


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = actual class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(actual), np.asarray(predicted)), 1)
    return matrix


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-10))
