"""PPAP's multi-expert guidance: N experts, each owning one equal range of timesteps.

Expert i owns t in [i * T / N, (i + 1) * T / N). Each is trained data-free: images sampled
from the unconditional DDPM (no labels anywhere), noised to a t from its own range, and
distilled from the clean classifier on the clean image:
    KL( softmax(classifier(x0) / tau) || softmax(expert(x_t)) ),  tau = 0.25.
At sampling time the expert that owns t gives the guidance gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def expert_index(t: Tensor, timesteps: int, experts: int) -> Tensor:
    """The expert that owns each timestep: floor(t * N / T), clipped to N - 1."""
    return torch.clamp(t * experts // timesteps, max=experts - 1)


def expert_range(i: int, timesteps: int, experts: int) -> tuple[int, int]:
    """[lo, hi) of the timesteps expert i owns (consistent with `expert_index`)."""
    lo = -(-i * timesteps // experts)  # ceil
    hi = -(-(i + 1) * timesteps // experts)
    return lo, min(hi, timesteps)


def distillation_loss(teacher_logits: Tensor, student_logits: Tensor, tau: float = 0.25) -> Tensor:
    """KL(softmax(teacher / tau) || softmax(student)), averaged over the batch."""
    target = F.softmax(teacher_logits / tau, -1)
    return F.kl_div(F.log_softmax(student_logits, -1), target, reduction="batchmean")


class MultiExpert(nn.Module):
    """Routes each sample to the expert that owns its timestep."""

    def __init__(self, experts: list[nn.Module], timesteps: int):
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.timesteps = timesteps

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        idx = expert_index(t, self.timesteps, len(self.experts))
        out = None
        for i in idx.unique().tolist():
            rows = idx == i
            logits = self.experts[i](x[rows])
            if out is None:
                out = logits.new_empty(len(x), logits.shape[-1])
            out[rows] = logits
        return out
