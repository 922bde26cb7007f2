"""Losses of the GAN arms: a standard GAN, MaF (embedding discriminator) and MEE's regularisers.

Notation: D(x) is (B, m) for an embedding discriminator, (B, 1) for a scalar one.

- MaF adversarial loss on the embedding mean: D minimises mean_k D_k(G(z)) - mean_k D_k(x),
  G minimises -mean_k D_k(G(z)) (`maf_d_loss`, `maf_g_loss`, form="linear"). The
  form="nonsaturating" variant applies the standard GAN's softplus to `scale` x the mean.
- DLLE: an image's embedding agrees with its mild augmentation's (held fixed).
- DIsoMap: the embedding of a convex mix of a real and a fake image matches the same mix of
  their embeddings (held fixed).
- Entropy (RB-MaEM): the log of the mean nearest-neighbour distance from a batch of
  embeddings to a FIFO replay buffer of past ones, scaled by sigma (which ramps up).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# --- adversarial ---------------------------------------------------------------------------


def gan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Non-saturating GAN, discriminator side: softplus(-D(x)) + softplus(D(G(z)))."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def gan_g_loss(fake: Tensor) -> Tensor:
    return F.softplus(-fake).mean()


def maf_d_loss(real: Tensor, fake: Tensor, form: str = "linear", scale: float = 1.0) -> Tensor:
    """real, fake (B, m) embeddings; the score is their mean over the m dimensions."""
    real_score, fake_score = real.mean(-1), fake.mean(-1)
    if form == "linear":
        return fake_score.mean() - real_score.mean()
    if form == "nonsaturating":
        return gan_d_loss(scale * real_score, scale * fake_score)
    raise ValueError(f"maf loss form {form!r}: expected 'linear' or 'nonsaturating'")


def maf_g_loss(fake: Tensor, form: str = "linear", scale: float = 1.0) -> Tensor:
    fake_score = fake.mean(-1)
    if form == "linear":
        return -fake_score.mean()
    if form == "nonsaturating":
        return gan_g_loss(scale * fake_score)
    raise ValueError(f"maf loss form {form!r}: expected 'linear' or 'nonsaturating'")


# --- MEE's embedding regularisers ----------------------------------------------------------


def mild_augment(x: Tensor, max_shift: float = 1.0, max_degrees: float = 10.0, noise_std: float = 0.05,
                 generator: torch.Generator | None = None) -> Tensor:
    """Class-keeping augmentation. Images (B, C, H, W): a random shift of up to `max_shift`
    pixels and a rotation of up to `max_degrees` (bilinear, background -1 fills in), plus
    Gaussian noise. Points (B, d): Gaussian noise only. No flips: a flipped digit can change class."""
    return apply_augment(x, *augment_draws(x, noise_std, generator), max_shift, max_degrees)


def augment_draws(x: Tensor, noise_std: float, generator: torch.Generator | None = None) -> tuple[Tensor | None, Tensor]:
    """The random numbers of one `mild_augment` of x, in its order: (uniforms (B, 3) for an image
    batch, None for points; the scaled noise), on x's device. Stacked runs draw them per run."""
    u = (torch.rand(x.shape[0], 3, generator=generator) * 2 - 1).to(x.device, x.dtype) if x.dim() > 2 else None
    return u, torch.randn(x.shape, generator=generator).to(x.device, x.dtype) * noise_std


def apply_augment(x: Tensor, u: Tensor | None, noise: Tensor, max_shift: float, max_degrees: float) -> Tensor:
    """`mild_augment` with its random numbers given (`augment_draws`); any leading batch shape."""
    if u is None:
        return x + noise
    shape = x.shape
    x, u = x.reshape(-1, *shape[-3:]), u.reshape(-1, 3)
    h, w = shape[-2:]
    angle = u[:, 0] * math.radians(max_degrees)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([
        torch.stack([cos, -sin, u[:, 1] * 2 * max_shift / w], -1),
        torch.stack([sin, cos, u[:, 2] * 2 * max_shift / h], -1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = F.grid_sample(x + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0
    return moved.reshape(shape) + noise


def dlle_loss(embed, x: Tensor, augmented: Tensor) -> Tensor:
    """mse(D(x), stopgrad D(aug x)): zero when the augmentation is the identity (and D is
    deterministic, e.g. in eval mode or with the reparameterisation noise off)."""
    with torch.no_grad():
        target = embed(augmented)
    return dlle_from_outputs(embed(x), target)


def dlle_from_outputs(out: Tensor, augmented_out: Tensor) -> Tensor:
    """DLLE on embeddings already computed (the training loop batches every D input into one
    forward pass); the augmented side is held fixed."""
    return F.mse_loss(out, augmented_out.detach())


def disomap_loss(embed, real: Tensor, fake: Tensor, distance: str = "mse",
                 generator: torch.Generator | None = None) -> Tensor:
    """x_hat = a x_r + (1 - a) x_f, a ~ U(0, 1) per sample; D(x_hat) should equal
    a D(x_r) + (1 - a) D(x_f). Zero for a linear (affine) D."""
    a = mix_weights(real, generator)
    return disomap_from_outputs(embed(mix(real, fake, a)), embed(real), embed(fake), a, distance)


def mix_weights(real: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """a ~ U(0, 1), one per sample, shaped to broadcast over `real`."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    return torch.rand(shape, generator=generator).to(real.device, real.dtype)


def mix(real: Tensor, fake: Tensor, a: Tensor) -> Tensor:
    return a * real + (1 - a) * fake


def disomap_from_outputs(mixed: Tensor, real_out: Tensor, fake_out: Tensor, a: Tensor,
                         distance: str = "mse") -> Tensor:
    """DIsoMap on embeddings already computed: D(mix) against the same mix of D(x_r), D(x_f)."""
    a_emb = a.reshape(real_out.shape[0], 1)
    # Held fixed, as in MEE's released code (`mse_loss(cls(mix_input), mix_z.detach())`): D
    # learns to map the mix onto the mix of embeddings, not to move the embeddings of the ends.
    target = (a_emb * real_out + (1 - a_emb) * fake_out).detach()
    if distance == "mse":
        return F.mse_loss(mixed, target)
    if distance == "cosine":
        return (1 - F.cosine_similarity(mixed, target, dim=-1)).mean()
    raise ValueError(f"disomap distance {distance!r}: expected 'mse' or 'cosine'")


class ReplayBuffer:
    """A true FIFO of the last `size` embeddings (m dims). `push` drops the oldest first and
    keeps exactly `size` rows once full. (MEE's released code lets its buffer shrink to one
    batch within ~17 updates; this one does not.) Starts empty; `full` says when it is full."""

    def __init__(self, size: int, dim: int):
        if size < 1:
            raise ValueError(f"replay buffer size must be >= 1, got {size}")
        self.size, self.dim = size, dim
        self.data = torch.empty(0, dim)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def full(self) -> bool:
        return len(self.data) == self.size

    def push(self, batch: Tensor) -> None:
        batch = batch.detach()
        if batch.dim() != 2 or batch.shape[1] != self.dim:
            raise ValueError(f"replay buffer holds (N, {self.dim}) embeddings, got {tuple(batch.shape)}")
        self.data = torch.cat([self.data.to(batch), batch])[-self.size:]


def entropy_estimate(batch: Tensor, reference: Tensor) -> Tensor:
    """log mean_i d_i with d_i = min_j ||V_i - R_j||^2 / m: larger when the batch's embeddings
    are spread out (far from what the buffer already holds)."""
    reference = reference.to(batch)
    # ||v||^2 + ||r||^2 - 2 v.r: the same distances as cdist(...)^2, with a far cheaper backward.
    sq = batch.pow(2).sum(1, keepdim=True) + reference.pow(2).sum(1) - 2 * batch @ reference.T
    d = sq.clamp_min(0).min(dim=1).values / batch.shape[1]
    return torch.log(d.mean().clamp_min(1e-12))


def entropy_loss(batch: Tensor, buffer: ReplayBuffer, sigma: float) -> Tensor:
    """L_ent = -sigma * log(mean_i d_i); zero (no gradient) while the buffer is empty."""
    if len(buffer) == 0 or sigma == 0:
        return batch.sum() * 0.0
    return -sigma * entropy_estimate(batch, buffer.data)


def sigma_at(step: int, sigma: float, ramp_steps: int) -> float:
    """Linear ramp from 0 to sigma over ramp_steps generator updates, then flat."""
    if ramp_steps <= 0:
        return sigma
    return sigma * min(1.0, step / ramp_steps)
