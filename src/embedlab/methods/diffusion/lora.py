"""LoRA for PPAP's guidance experts: W' = W + (alpha / r) B A, B initialised to zero.

Each layer runs one conv / linear of the merged weight W + (alpha / r) B A (gradients reach A
and B through the merge): by linearity the same function as the base layer plus the rank-r
branch, 1.3x faster per expert step on this CPU than the two-branch form
(benchmarks/ppap_expert_step.py).

`add_lora(model, rank, alpha)` wraps every Conv2d and Linear of a copy of the classifier
(except the ones named in `skip`, PPAP's frozen head), freezes the original weights, and
leaves trainable only the LoRA factors, the normalisation layers and the biases. A fresh
expert computes exactly what the classifier computes (B = 0; tested).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class LoRAConv2d(nn.Module):
    def __init__(self, base: nn.Conv2d, rank: int, alpha: float):
        super().__init__()
        if base.groups != 1 or base.padding_mode != "zeros":
            raise ValueError(f"LoRA on a conv with groups={base.groups}, padding_mode={base.padding_mode!r}: "
                             "only plain convolutions (groups 1, zero padding) are supported")
        self.base = base
        self.scale = alpha / rank
        k = base.kernel_size
        # A: a rank-r conv with the base's kernel and stride; B: a 1x1 back to the outputs.
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_channels // base.groups, *k))
        self.lora_b = nn.Parameter(torch.zeros(base.out_channels, rank, 1, 1))
        nn.init.kaiming_uniform_(self.lora_a, a=5**0.5)

    def forward(self, x: Tensor) -> Tensor:
        b = self.base
        r = self.lora_a.shape[0]
        delta = (self.lora_b.view(b.out_channels, r) @ self.lora_a.view(r, -1)).view_as(b.weight)
        return F.conv2d(x, b.weight + self.scale * delta, b.bias, b.stride, b.padding, b.dilation)


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=5**0.5)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.base.weight + self.scale * (self.lora_b @ self.lora_a), self.base.bias)


def add_lora(model: nn.Module, rank: int, alpha: float, skip: tuple[str, ...] = ("head",)) -> nn.Module:
    """A copy of `model` with LoRA on every conv and linear layer outside `skip`; only LoRA
    factors, normalisation layers and biases outside `skip` train."""
    if rank < 1:
        raise ValueError(f"lora rank {rank}: need >= 1")
    expert = copy.deepcopy(model)
    for p in expert.parameters():
        p.requires_grad_(False)

    def skipped(name: str) -> bool:
        return any(name == s or name.startswith(s + ".") for s in skip)

    for name, module in list(expert.named_modules()):
        if skipped(name):
            continue
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if skipped(full):
                continue
            if isinstance(child, nn.Conv2d):
                setattr(module, child_name, LoRAConv2d(child, rank, alpha))
            elif isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, rank, alpha))
    for name, module in expert.named_modules():
        if skipped(name):
            continue
        if isinstance(module, _NORMS):
            for p in module.parameters():
                p.requires_grad_(True)
        if isinstance(module, (LoRAConv2d, LoRALinear)):
            module.lora_a.requires_grad_(True)
            module.lora_b.requires_grad_(True)
            if module.base.bias is not None:
                module.base.bias.requires_grad_(True)
    return expert


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
