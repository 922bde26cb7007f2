"""A small epsilon-predicting UNet for 16x16 (or any size divisible by 2^(levels-1)) images.

Sinusoidal timestep embedding -> MLP; per resolution one residual block (GroupNorm, SiLU,
conv, + time embedding, conv); self-attention at the lowest resolution (optional); skip
connections by concatenation. `num_classes` > 0 adds a label embedding (index num_classes
is the null label): the conditional model classifier-free guidance needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(t_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads if channels % heads == 0 else 1, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (16, 32, 32), in_channels: int = 1, attention: bool = True,
                 num_classes: int = 0):
        super().__init__()
        self.channels, self.num_classes = tuple(channels), num_classes
        t_dim = 4 * channels[0]
        self.t_dim = t_dim
        self.time = nn.Sequential(nn.Linear(channels[0], t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.label = nn.Embedding(num_classes + 1, t_dim) if num_classes else None
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        c = channels[0]
        for i, ch in enumerate(channels):
            self.down.append(ResBlock(c, ch, t_dim))
            self.pool.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1) if i + 1 < len(channels) else nn.Identity())
            c = ch
        self.mid = ResBlock(c, c, t_dim)
        self.attn = Attention(c) if attention else nn.Identity()
        self.up = nn.ModuleList()
        for ch in reversed(channels):
            self.up.append(ResBlock(c + ch, ch, t_dim))
            c = ch
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        temb = self.time(timestep_embedding(t, self.channels[0]))
        if self.label is not None:
            if y is None:
                y = torch.full((len(x),), self.num_classes, device=x.device, dtype=torch.long)
            temb = temb + self.label(y)
        h = self.stem(x)
        skips = []
        for block, pool in zip(self.down, self.pool):
            h = block(h, temb)
            skips.append(h)
            h = pool(h)
        h = self.attn(self.mid(h, temb))
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], 1), temb)
        return self.out(h)
