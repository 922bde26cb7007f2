"""PPAP's multi-expert guidance: N experts, each owning one equal range of timesteps.

Expert i owns t in [i * T / N, (i + 1) * T / N). Each is trained data-free: images sampled
from the given unconditional DDPM (no labels anywhere), noised to a t from its own range, and
distilled from the clean classifier on the clean image:
    KL( softmax(classifier(x0) / tau) || softmax(expert(x_t)) ),  tau = 0.25.
The classifier is frozen and the distillation set fixed, so it reads the set once
(`teacher_logits`) and each step takes its rows of that table: the same targets as reading the
batch every step, without 128 x steps forward passes per expert
(benchmarks/ppap_expert_step.py).
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

@torch.no_grad()
def teacher_logits(teacher: torch.nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """The frozen classifier (in eval mode: its BatchNorm statistics as trained) on every clean
    image of the distillation set, once: the targets the experts' steps read."""
    teacher = teacher.eval()
    return torch.cat([teacher(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def expert_module(expert: torch.nn.Module, schedule: Schedule, t_range: tuple[int, int], lr: float, tau: float):
    L = _lightning()

    class Expert(L.LightningModule):
        """Data-free distillation: unlabelled DDPM samples x0, noised to t in the expert's
        range; the frozen classifier's logits on x0 (`teacher_logits`, sharpened by tau) teach
        the expert on x_t. A batch is (x0, the teacher's logits on x0): no label anywhere."""

        def __init__(self):
            super().__init__()
            self.expert = expert

        def training_step(self, batch, _):
            x0, target = batch
            if not (target.is_floating_point() and target.ndim == 2 and len(target) == len(x0)):
                raise ValueError(f"an expert's batch is (images, the teacher's logits on them); got a second tensor "
                                 f"of dtype {target.dtype} and shape {tuple(target.shape)}: labels have no place here")
            lo, hi = t_range
            t = torch.randint(lo, hi, (len(x0),), device=x0.device)
            xt = schedule.q_sample(x0, t, torch.randn_like(x0))
            loss = distillation_loss(target, self.expert(xt), tau)
            self.log("kd_loss", loss, prog_bar=True)
            return loss

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
