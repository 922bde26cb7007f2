"""Mode coverage that counts recognisable samples only.

- A reading is *confident* when the evaluator's top probability is >= `threshold`; anything
  else has no mode (-1). A stacked sample has a mode only when all its channels are confident.
- A mode is *covered* when it holds at least `min_count` confident samples. `min_count` comes
  from the real-data ceiling run at the same N: `fraction` x the ceiling's mean count per mode,
  so one stray sample never makes a mode and a real sample set still covers (nearly) every mode.
- Every count is reported beside a real-data ceiling and an untrained-generator floor.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from embedlab.evaluation.intervals import proportion
from embedlab.evaluation.scores import class_histogram_kl, mode_histogram


def confident_classes(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N,) argmax class where the top probability >= threshold, else -1."""
    top, cls = probs.max(dim=1)
    return torch.where(top >= threshold, cls, torch.full_like(cls, -1))


def triple_modes(channel_classes: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """(N, 3) per-channel classes -> (N,) mode c0 K^2 + c1 K + c2; -1 if any channel has none."""
    c = channel_classes.long()
    modes = c[:, 0] * num_classes**2 + c[:, 1] * num_classes + c[:, 2]
    return torch.where((c < 0).any(1), torch.full_like(modes, -1), modes)


def min_count_from_ceiling(ceiling_modes, num_modes: int, fraction: float) -> int:
    """ceil(fraction x the real ceiling's mean count per mode), at least 1."""
    assigned = int((np.asarray(ceiling_modes) >= 0).sum())
    return max(1, math.ceil(fraction * assigned / num_modes))


def coverage(modes, num_modes: int, min_count: int) -> dict:
    """Modes covered (>= min_count), the ungated count (>= 1, to show what the gate removes),
    the share of samples with a mode (with its interval) and the histogram's KL to uniform."""
    modes = np.asarray(modes)
    hist = mode_histogram(modes, num_modes)
    return {
        "modes_covered": int((hist >= min_count).sum()),
        "modes_any": int((hist >= 1).sum()),
        "assigned_share": proportion(modes >= 0),
        "mode_kl": round(class_histogram_kl(modes, num_modes), 4),
    }
