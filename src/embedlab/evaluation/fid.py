"""Fréchet distance on evaluator features, through torchmetrics' FID with a custom extractor.

Inception features mean nothing on 16x16 digits; the project's evaluator CNN is
the feature space. Lower is better; two real splits give the floor to compare with.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class EvaluatorFeatures(nn.Module):
    """Adapter: images in [-1, 1] -> penultimate evaluator features (N, D)."""

    def __init__(self, evaluator: nn.Module):
        super().__init__()
        self.evaluator = evaluator.eval()
        self.num_features = int(evaluator.num_features)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.evaluator.features(images)


def frechet_distance(
    real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, evaluator: nn.Module, batch_size: int = 512
) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    device = next(evaluator.parameters()).device
    metric = FrechetInceptionDistance(feature=EvaluatorFeatures(evaluator), normalize=True).to(device)
    for images, is_real in ((real, True), (fake, False)):
        images = torch.as_tensor(images, dtype=torch.float32)
        if len(images) < 2:
            raise ValueError(f"Fréchet distance needs >= 2 {'real' if is_real else 'generated'} images, got {len(images)}")
        for start in range(0, len(images), batch_size):
            metric.update(images[start : start + batch_size].to(device), real=is_real)
    return float(metric.compute())
