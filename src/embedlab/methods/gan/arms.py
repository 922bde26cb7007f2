"""The GAN arms and one iteration-matched training loop for any data sampler.

An arm is a discriminator head plus the regularisers it uses:
  dcgan             scalar D, non-saturating GAN loss (the standard baseline)
  maf               embedding D, MaF loss on the embedding mean, no regularisers
  maf+disomap       + DIsoMap
  maf+disomap+dlle  + DLLE
  mee               + the replay-buffer entropy term (D on real, G on fake embeddings)

Every arm runs the same number of generator updates (`steps`), one D update before each;
wall time is reported beside, since MEE's extra D passes cost more per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from embedlab.methods.gan import losses as L


@dataclass(frozen=True)
class Arm:
    head: str
    disomap: bool = False
    dlle: bool = False
    entropy: bool = False


ARMS: dict[str, Arm] = {
    "dcgan": Arm("scalar"),
    "maf": Arm("embedding"),
    "maf+disomap": Arm("embedding", disomap=True),
    "maf+disomap+dlle": Arm("embedding", disomap=True, dlle=True),
    "mee": Arm("embedding", disomap=True, dlle=True, entropy=True),
}


@dataclass(frozen=True)
class LoopConfig:
    steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    maf_form: str = "nonsaturating"  # or "linear", the paper's form
    maf_scale: float = 1.0
    lambda_dlle: float = 1.0
    lambda_disomap: float = 1.0
    disomap_distance: str = "mse"
    sigma: float = 0.1
    sigma_ramp: int = 500
    buffer_size: int = 1024
    aug_shift: float = 1.0
    aug_degrees: float = 10.0
    aug_noise: float = 0.05


def train_arm(arm: str, make_gen: Callable[[], nn.Module], make_disc: Callable[[str], nn.Module],
              real_batches: Callable[[int, torch.Generator], Tensor], cfg: LoopConfig, seed: int,
              progress: Callable[[int, dict], None] | None = None,
              device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Train one arm from scratch; returns (generator in eval mode, history). `real_batches`
    returns batches on `device`; the data generator (shifts, mixes, picks) stays on the CPU."""
    spec = ARMS[arm]
    torch.manual_seed(seed)
    data_gen = torch.Generator().manual_seed(seed)
    gen, disc = make_gen().to(device), make_disc(spec.head).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), cfg.lr, betas=cfg.betas)
    # One FIFO per side: D's entropy term spreads real embeddings, G's spreads fake ones, each
    # measured against that side's own recent past.
    dim = getattr(disc.head, "dim", 1)
    buffers = {side: L.ReplayBuffer(cfg.buffer_size, dim) for side in ("real", "fake")} if spec.entropy else None
    losses: list[Tensor] = []
    start = time.perf_counter()

    def adversarial_d(real_out, fake_out):
        if spec.head == "scalar":
            return L.gan_d_loss(real_out, fake_out)
        return L.maf_d_loss(real_out, fake_out, cfg.maf_form, cfg.maf_scale)

    def adversarial_g(fake_out):
        if spec.head == "scalar":
            return L.gan_g_loss(fake_out)
        return L.maf_g_loss(fake_out, cfg.maf_form, cfg.maf_scale)

    aug = dict(max_shift=cfg.aug_shift, max_degrees=cfg.aug_degrees, noise_std=cfg.aug_noise, generator=data_gen)
    for step in range(cfg.steps):
        sigma = L.sigma_at(step, cfg.sigma, cfg.sigma_ramp)
        real = real_batches(cfg.batch_size, data_gen)
        # One generator forward per step, as in the DCGAN reference loop: D trains on it
        # detached, then G backpropagates through the same batch into the updated D.
        fake_graph = gen(torch.randn(cfg.batch_size, gen.z_dim, device=device))
        fake = fake_graph.detach()
        # Every D input of this step goes through one forward pass (D has no batch statistics):
        # [real, fake] + [aug real, aug fake] for DLLE + [mix] for DIsoMap.
        parts = [real, fake]
        if spec.dlle:
            parts += [L.mild_augment(real, **aug), L.mild_augment(fake, **aug)]
        if spec.disomap:
            a = L.mix_weights(real, data_gen)
            parts.append(L.mix(real, fake, a))
        outs = disc(torch.cat(parts)).split(cfg.batch_size)
        real_out, fake_out = outs[0], outs[1]
        d_loss = adversarial_d(real_out, fake_out)
        if spec.dlle:
            d_loss = d_loss + cfg.lambda_dlle * (L.dlle_from_outputs(real_out, outs[2])
                                                 + L.dlle_from_outputs(fake_out, outs[3]))
        if spec.disomap:
            d_loss = d_loss + cfg.lambda_disomap * L.disomap_from_outputs(outs[-1], real_out, fake_out, a,
                                                                          cfg.disomap_distance)
        _update(opt_d, _with_entropy(d_loss, real_out, buffers and buffers["real"], sigma))

        fake_out = disc(fake_graph)
        g_loss = _with_entropy(adversarial_g(fake_out), fake_out, buffers and buffers["fake"], sigma)
        _update(opt_g, g_loss)
        losses.append(torch.stack([d_loss.detach(), g_loss.detach()]))
        if progress is not None:
            progress(step, {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())})
    curves = torch.stack(losses).cpu() if losses else torch.zeros(0, 2)  # one host sync, at the end
    history = {"d_loss": curves[:, 0].tolist(), "g_loss": curves[:, 1].tolist(),
               "seconds": time.perf_counter() - start}
    return gen.eval(), history


def _with_entropy(loss: Tensor, embeddings: Tensor, buffer: L.ReplayBuffer | None, sigma: float) -> Tensor:
    """loss + the entropy term against `buffer`, which then takes this batch (no-op without one)."""
    if buffer is None:
        return loss
    loss = loss + L.entropy_loss(embeddings, buffer, sigma)
    buffer.push(embeddings)
    return loss


def _update(opt: torch.optim.Optimizer, loss: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


@torch.no_grad()
def sample(gen: nn.Module, n: int, seed: int, batch_size: int = 2048) -> Tensor:
    """n samples from a generator in eval mode, the same for a seed (z drawn on the CPU)."""
    device = next(gen.parameters()).device
    z = torch.randn(n, gen.z_dim, generator=torch.Generator().manual_seed(seed))
    return torch.cat([gen(z[i : i + batch_size].to(device)).cpu() for i in range(0, n, batch_size)])
