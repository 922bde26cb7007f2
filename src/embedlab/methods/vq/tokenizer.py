"""Residual-VQ image tokenizer: conv encoder -> ResidualVQ over a latent grid -> conv decoder.

An image (B, C, S, S) in [-1, 1] (C = 1 grey, 3 colour) becomes L = (S / downsample)^2 positions, each a stack of
D code indices; the sum of the first d codes is a coarse-to-fine approximation of the latent,
so the decoder can work from any depth d <= D (quantize dropout trains it to).

vector_quantize_pytorch.ResidualVQ does the quantisation, k-means init, EMA codebook updates
and dead-code replacement; everything here that reads codes (embed, residual_quantize,
decode_indices) works from its codebooks directly, batched over all positions at once.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from einops import rearrange
from torch import nn
from vector_quantize_pytorch import ResidualVQ


@contextmanager
def evaluating(module: nn.Module):
    """Eval mode (no dropout, no codebook updates) for the block, then the caller's mode
    back, even on error."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x):
        return x + self.block(x)


def _halvings(downsample: int) -> int:
    steps = int(round(math.log2(downsample)))
    if 2**steps != downsample:
        raise ValueError(f"downsample must be a power of two, got {downsample}")
    return steps


class Encoder(nn.Module):
    """Stem at full resolution, then (strided conv, res block) per halving.

    Res blocks only below full resolution: at 16x16 they cost most of the FLOPs and, on a
    2-core CPU, most of the training time, for little gain on 16x16 digits."""

    def __init__(self, hidden: int = 64, latent_dim: int = 32, downsample: int = 4, channels: int = 1):
        super().__init__()
        layers = [nn.Conv2d(channels, hidden, 3, padding=1)]
        for _ in range(_halvings(downsample)):
            layers += [nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), ResBlock(hidden)]
        layers += [_norm(hidden), nn.SiLU(), nn.Conv2d(hidden, latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """Mirror of the encoder: (res block, transposed conv) per doubling, linear output head.

    Not tanh: most digit pixels are background at exactly -1, where tanh would need its
    pre-activation to run off to -inf and its gradient vanishes; a linear head hits -1
    directly and trains faster under MSE. Images leave through `decode_latent`, clamped."""

    def __init__(self, hidden: int = 64, latent_dim: int = 32, downsample: int = 4, channels: int = 1):
        super().__init__()
        layers = [nn.Conv2d(latent_dim, hidden, 1)]
        for _ in range(_halvings(downsample)):
            layers += [ResBlock(hidden), nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1)]
        layers += [_norm(hidden), nn.SiLU(), nn.Conv2d(hidden, channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


def greedy_codes(residual: torch.Tensor, codebooks: torch.Tensor,
                 masked: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual quantisation against codebooks (D', K, C): (indices (B, L, D'), summed codes).

    Each depth takes the code nearest the current residual and subtracts it, which is what
    ResidualVQ does in eval; the distance is computed the same way (float32,
    |x|^2 + |y|^2 - 2 x.y) so near-ties resolve alike. Plain tensor ops, so torch.export
    can trace it where the library's own forward (it branches on its init state) cannot.
    `masked` (..., D') bool: only those depths quantise (the others get index 0 and add
    nothing), as the ResGen prior's sampler needs."""
    residual = residual.float()
    quantized = torch.zeros_like(residual)
    chosen = []
    for d, codes in enumerate(codebooks.float()):
        dist = residual.pow(2).sum(-1, keepdim=True) + codes.pow(2).sum(-1) - 2 * residual @ codes.t()
        idx = dist.clamp_min(1e-8).argmin(-1)
        step = codes[idx]
        if masked is not None:
            idx = torch.where(masked[..., d], idx, 0)
            step = step * masked[..., d, None]
        quantized, residual = quantized + step, residual - step
        chosen.append(idx)
    if not chosen:
        return residual.new_zeros(*residual.shape[:-1], 0, dtype=torch.long), quantized
    return torch.stack(chosen, dim=-1), quantized


class RVQTokenizer(nn.Module):
    def __init__(
        self,
        image_size: int = 16,
        hidden: int = 64,
        latent_dim: int = 32,
        downsample: int = 4,
        num_quantizers: int = 8,
        codebook_size: int = 64,
        decay: float = 0.9,
        commitment_weight: float = 0.25,
        threshold_ema_dead_code: float = 2,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        channels: int = 1,
    ):
        super().__init__()
        if image_size % downsample:
            raise ValueError(f"image_size {image_size} is not a multiple of downsample {downsample}")
        self.image_size = image_size
        self.grid = image_size // downsample
        self.num_positions = self.grid**2
        self.depth = num_quantizers
        self.codebook_size = codebook_size
        self.latent_dim = latent_dim
        self.encoder = Encoder(hidden, latent_dim, downsample, channels)
        self.decoder = Decoder(hidden, latent_dim, downsample, channels)
        # (B, L, C) input rather than accept_image_fmap, so indices come out as (B, L, D),
        # the layout a prior over positions wants.
        self.rvq = ResidualVQ(
            dim=latent_dim,
            num_quantizers=num_quantizers,
            codebook_size=codebook_size,
            decay=decay,
            commitment_weight=commitment_weight,
            threshold_ema_dead_code=threshold_ema_dead_code,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            quantize_dropout=num_quantizers > 1,
        )

    # ---- encode / quantise -------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.encoder(x), "b c h w -> b (h w) c")

    def quantize(self, z: torch.Tensor, depth: int | None = None):
        """(z_q, indices (B, L, D), commit_loss).

        Training: ResidualVQ picks a random depth per batch (quantize dropout) and marks the
        depths it skipped with index -1; codebooks update by EMA. Eval: all D depths are
        found, then those past `depth` are set to -1 and left out of z_q."""
        if depth is not None and self.rvq.training:
            raise ValueError("depth is chosen by quantize dropout in training; call .eval() to fix it")
        z_q, indices, losses = self.rvq(z)
        if depth is not None and depth < self.depth:
            indices = indices.masked_fill(torch.arange(self.depth, device=z.device) >= depth, -1)
            z_q = self.embed(indices)
        return z_q, indices, losses.sum()

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Indices (B, L, D) at full depth; leaves the codebooks untouched."""
        with evaluating(self.rvq):
            return self.rvq(self.encode(x))[1]

    # ---- codes -------------------------------------------------------------------------

    @property
    def codebooks(self) -> torch.Tensor:
        """(D, K, C) current code vectors (EMA buffers: they move in training forwards)."""
        return self.rvq.codebooks

    def embed_per_depth(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, L, D', C) code vectors for indices (B, L, D'), D' <= D; index -1 gives zeros."""
        codebooks = self.codebooks
        d = indices.shape[-1]
        codes = codebooks[torch.arange(d, device=indices.device), indices.clamp_min(0)]
        return codes.masked_fill(rearrange(indices < 0, "... -> ... 1"), 0.0)

    def embed(self, indices: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """(B, L, C): sum of the code vectors of the first `depth` depths."""
        depth = indices.shape[-1] if depth is None else depth
        return self.embed_per_depth(indices[..., :depth]).sum(-2)

    @torch.no_grad()
    def residual_quantize(self, residual: torch.Tensor, start_depth: int = 0) -> torch.Tensor:
        """Greedy nearest-code indices (B, L, D - start_depth) for depths start_depth..D-1,
        what ResidualVQ does in eval (see `greedy_codes`)."""
        return greedy_codes(residual, self.codebooks[start_depth:])[0]

    # ---- decode ------------------------------------------------------------------------

    def decode_latent(self, z_q: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """(B, L, latent) -> (B, C, S, S); clamped to [-1, 1] unless a loss needs the raw output."""
        out = self.decoder(rearrange(z_q, "b (h w) c -> b c h w", h=self.grid, w=self.grid))
        return out.clamp(-1.0, 1.0) if clamp else out

    def decode_indices(self, indices: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        return self.decode_latent(self.embed(indices, depth))

    def forward(self, x: torch.Tensor):
        """(recon unclamped, commit_loss, indices): the raw output keeps gradients where a
        clamp would cut them."""
        z_q, indices, commit_loss = self.quantize(self.encode(x))
        return self.decode_latent(z_q, clamp=False), commit_loss, indices

    # ---- summaries ---------------------------------------------------------------------

    @torch.no_grad()
    def codebook_usage(self, indices: torch.Tensor) -> torch.Tensor:
        """(D,) share of each depth's K codes that occur in indices (B, L, D)."""
        flat = rearrange(indices, "b l d -> d (b l)")
        offsets = torch.arange(flat.shape[0], device=flat.device)[:, None] * self.codebook_size
        seen = torch.zeros(flat.shape[0] * self.codebook_size, dtype=torch.bool, device=flat.device)
        seen[(flat + offsets)[flat >= 0]] = True
        return rearrange(seen, "(d k) -> d k", k=self.codebook_size).float().mean(-1)
