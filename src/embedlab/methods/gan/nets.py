"""Generators and discriminators for the GAN arms (MEE, Liu et al., AAAI 2023).

- `ConvGenerator` / `ConvDiscriminator`: DCGAN-style at the prepared image size (a power of
  two >= 8), any number of channels (3 for stacked digits).
- `MLPGenerator` / `MLPDiscriminator`: the same roles for 2-D mixtures.

Every discriminator layer carries spectral norm. A discriminator ends in a `head`:
`ScalarHead` (a standard GAN: one logit) or `EmbeddingHead` (MaF / MEE: an m-dimensional
embedding through the reparameterisation mu + exp(logvar / 2) * eps, eps ~ N(0, I) in
training and 0 in eval; mu and logvar from one bias-free layer, as released).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class ScalarHead(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.out = spectral_norm(nn.Linear(features, 1))
        self.dim = 1

    def forward(self, h: Tensor) -> Tensor:
        return self.out(h)


class EmbeddingHead(nn.Module):
    """(mu, logvar) from one bias-free spectral-norm linear layer, as in MEE's released
    discriminator (`reparam`): with no bias, spectral norm bounds logvar too, so D cannot raise
    the entropy of its embeddings through its own noise."""

    def __init__(self, features: int, dim: int = 16):
        super().__init__()
        self.stats = spectral_norm(nn.Linear(features, 2 * dim, bias=False))
        self.dim = dim

    def forward(self, h: Tensor) -> Tensor:
        mu, logvar = self.stats(h).chunk(2, dim=-1)
        if not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def make_head(kind: str, features: int, dim: int) -> nn.Module:
    if kind == "scalar":
        return ScalarHead(features)
    if kind == "embedding":
        return EmbeddingHead(features, dim)
    raise ValueError(f"discriminator head {kind!r}: expected 'scalar' or 'embedding'")


class ConvGenerator(nn.Module):
    """z (B, z_dim) -> images (B, C, S, S) in [-1, 1]: a 4x4 seed upsampled by 2 per block."""

    def __init__(self, z_dim: int = 32, image_size: int = 16, channels: int = 1, width: int = 64):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size {image_size}: the conv GAN needs a power of two >= 8")
        blocks = int(math.log2(image_size // 4))
        widths = [width * 2 ** (blocks - i) for i in range(blocks + 1)]  # e.g. 256, 128, 64
        self.z_dim, self.width0 = z_dim, widths[0]
        # No bias before BatchNorm (as in DCGAN): its gradient is zero in exact arithmetic, so Adam
        # would turn rounding noise into lr-sized steps there, and sampling would depend on it.
        self.seed = nn.Sequential(nn.Linear(z_dim, widths[0] * 16, bias=False), nn.BatchNorm1d(widths[0] * 16), nn.ReLU(True))
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.Conv2d(widths[-1], channels, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        # -1, not len(z): a Python int would freeze the batch size into an exported graph.
        return self.body(self.seed(z).view(-1, self.width0, 4, 4))


class ConvDiscriminator(nn.Module):
    """images (B, C, S, S) -> head output (B, 1) or (B, m). `width` sets capacity: the
    weakened-discriminator benchmark (PacGAN / VEEGAN protocol) lowers it."""

    def __init__(self, image_size: int = 16, channels: int = 1, width: int = 64, head: str = "scalar", dim: int = 16):
        super().__init__()
        blocks = int(math.log2(image_size // 4))
        widths = [channels] + [width * 2**i for i in range(blocks)]
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = make_head(head, widths[-1] * 16, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int = 8, out_dim: int = 2, hidden: int = 128, layers: int = 3):
        super().__init__()
        dims = [z_dim] + [hidden] * layers
        body = []
        for a, b in zip(dims[:-1], dims[1:]):
            body += [nn.Linear(a, b), nn.ReLU(True)]
        self.z_dim = z_dim
        self.net = nn.Sequential(*body, nn.Linear(hidden, out_dim))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """Points (B, d) -> head output. Spectral norm makes every layer 1-Lipschitz, so D cannot
    tell apart points closer than its output range allows: `input_scale` multiplies the input
    first (a fixed Lipschitz budget), which the 2-D mixtures need (mode std 0.02-0.05 against
    a radius of 2)."""

    def __init__(self, in_dim: int = 2, hidden: int = 128, layers: int = 3, head: str = "scalar", dim: int = 16,
                 input_scale: float = 1.0):
        super().__init__()
        self.input_scale = input_scale
        dims = [in_dim] + [hidden] * layers
        body = []
        for a, b in zip(dims[:-1], dims[1:]):
            body += [spectral_norm(nn.Linear(a, b)), nn.LeakyReLU(0.2, True)]
        self.body = nn.Sequential(*body)
        self.head = make_head(head, hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x * self.input_scale))
