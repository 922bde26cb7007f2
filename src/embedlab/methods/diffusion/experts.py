"""PPAP's multi-expert guidance: N experts, each owning one equal range of timesteps.

Expert i owns t in [i * T / N, (i + 1) * T / N). Each is trained data-free: images sampled
from the given unconditional DDPM (no labels anywhere), noised to a t from its own range, and
distilled from the clean classifier on the clean image:
    KL( softmax(classifier(x0) / tau) || softmax(expert(x_t)) ),  tau = 0.25.
At sampling time the expert that owns t gives the guidance gradient. The supervised
multi-experts PPAP compares with route the same way; both Lightning modules are here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.methods.diffusion.models import _lightning
from embedlab.methods.diffusion.schedule import Schedule


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


# ---- training (Lightning modules) ----------------------------------------------------------

def expert_module(expert: torch.nn.Module, teacher: torch.nn.Module, schedule: Schedule, t_range: tuple[int, int],
                  lr: float, tau: float):
    L = _lightning()

    class Expert(L.LightningModule):
        """Data-free distillation: unlabelled DDPM samples x0, noised to t in the expert's
        range; the frozen classifier on x0 (sharpened by tau) teaches the expert on x_t."""

        def __init__(self):
            super().__init__()
            self.expert = expert
            self.teacher = teacher.eval().requires_grad_(False)

        def training_step(self, batch, _):
            (x0,) = batch  # images only: the KD set holds no labels
            lo, hi = t_range
            t = torch.randint(lo, hi, (len(x0),), device=x0.device)
            xt = schedule.q_sample(x0, t, torch.randn_like(x0))
            with torch.no_grad():
                target = self.teacher(x0)
            loss = distillation_loss(target, self.expert(xt), tau)
            self.log("kd_loss", loss, prog_bar=True)
            return loss

        def train(self, mode: bool = True):
            super().train(mode)
            self.teacher.eval()  # the teacher's BatchNorm statistics stay as trained
            return self

        def configure_optimizers(self):
            return torch.optim.Adam([p for p in self.expert.parameters() if p.requires_grad], lr=lr)

    return Expert()


def supervised_module(classifier: torch.nn.Module, schedule: Schedule, lr: float, t_range: tuple[int, int]):
    L = _lightning()

    class Supervised(L.LightningModule):
        """One supervised expert: the whole classifier fine-tuned on labelled x_t, t uniform in
        its range (the multi-expert baseline PPAP compares with)."""

        def __init__(self):
            super().__init__()
            self.net = classifier

        def training_step(self, batch, _):
            x0, y = batch
            lo, hi = t_range
            t = torch.randint(lo, hi, (len(x0),), device=x0.device)
            xt = schedule.q_sample(x0, t, torch.randn_like(x0))
            loss = F.cross_entropy(self.net(xt), y)
            self.log("train_loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.net.parameters(), lr=lr)

    return Supervised()
