"""The GAN's LightningModule: a stack of runs (arms x seeds x tuned values of one benchmark)
trained as one model, through the project's Trainer factory (`train_runs`).

Manual optimisation, per step: one discriminator update, then one generator update, for every
run at once (stacked.py). Each run keeps its own random streams, seeded as a run alone would be:
`torch.manual_seed(seed)` before its networks are built, the state after that for z and the
embedding head's noise, and a data generator seeded with `seed` for batches, augmentations and
mixing weights. A run draws only what its arm uses, so its numbers do not depend on what else
is in the stack.

Lightning is imported here: only train@gan (and the tests) import this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.methods.gan.arms import ARMS, LoopConfig
from embedlab.methods.gan.losses import apply_augment, augment_draws, sigma_at
from embedlab.methods.gan.stacked import StackedAdam, StackedDiscriminator, StackedGenerator
from embedlab.training import make_trainer

SLOTS = ("real", "fake", "aug_real", "aug_fake", "mix")  # D's inputs per step, in the order a run alone stacks them
# Settings every run of a stack shares (the per-run ones: lr, lambda_dlle, lambda_disomap, sigma).
SHARED = ("steps", "batch_size", "betas", "maf_form", "maf_scale", "disomap_distance", "sigma_ramp", "buffer_size",
          "aug_shift", "aug_degrees", "aug_noise")


@dataclass(frozen=True)
class Run:
    arm: str
    seed: int
    cfg: LoopConfig

    @property
    def slots(self) -> tuple[str, ...]:
        spec = ARMS[self.arm]
        return ("real", "fake") + (("aug_real", "aug_fake") if spec.dlle else ()) + (("mix",) if spec.disomap else ())


class GanStack(L.LightningModule):
    """K GAN runs of one benchmark as one LightningModule (see the module docstring)."""

    def __init__(self, runs: list[Run], make_gen: Callable[[], nn.Module], make_disc: Callable[[str], nn.Module],
                 real_batches: Callable[[int, torch.Generator], Tensor]):
        super().__init__()
        cfg = runs[0].cfg
        for name in SHARED:
            values = {getattr(r.cfg, name) for r in runs}
            if len(values) > 1:
                raise ValueError(f"runs stacked together must share {name}; got {sorted(values)}")
        self.automatic_optimization = False
        self.runs, self.cfg, self.real_batches = runs, cfg, real_batches
        gens, discs, self.rngs, self.data_rngs = [], [], [], []
        for run in runs:
            torch.manual_seed(run.seed)
            gens.append(make_gen())
            discs.append(make_disc(ARMS[run.arm].head))
            rng = torch.Generator()
            rng.set_state(torch.get_rng_state())  # z and head noise continue where init left off
            self.rngs.append(rng)
            self.data_rngs.append(torch.Generator().manual_seed(run.seed))
        self.gen, self.disc = StackedGenerator(gens), StackedDiscriminator(discs)
        self.slots = tuple(s for s in SLOTS if any(s in r.slots for r in runs))
        self.embedding = [ARMS[r.arm].head == "embedding" for r in runs]
        as_tensor = lambda values: torch.tensor(values, dtype=torch.float32)  # noqa: E731
        self.register_buffer("scalar", torch.tensor([not e for e in self.embedding]))
        self.register_buffer("lambda_dlle", as_tensor([r.cfg.lambda_dlle if ARMS[r.arm].dlle else 0.0 for r in runs]))
        self.register_buffer("lambda_disomap", as_tensor([r.cfg.lambda_disomap if ARMS[r.arm].disomap else 0.0 for r in runs]))
        self.register_buffer("sigma", as_tensor([r.cfg.sigma if ARMS[r.arm].entropy else 0.0 for r in runs]))
        self.lrs = as_tensor([r.cfg.lr for r in runs])
        dim = self.disc.dim
        self.entropy_runs = [k for k, r in enumerate(runs) if ARMS[r.arm].entropy]
        self.register_buffer("buffer_real", torch.zeros(len(self.entropy_runs), 0, dim))
        self.register_buffer("buffer_fake", torch.zeros(len(self.entropy_runs), 0, dim))
        self.curves: list[Tensor] = []

    def setup(self, stage: str) -> None:
        """Under DDP every rank draws its own batches: rank 0 keeps each run's streams (so one
        device and rank 0 draw alike), rank r > 0 reseeds them from (run seed, r)."""
        rank = self.global_rank if self.trainer.world_size > 1 else 0
        if rank > 0:
            for k, run in enumerate(self.runs):
                self.rngs[k] = torch.Generator().manual_seed(2_000_003 * rank + run.seed)
                self.data_rngs[k] = torch.Generator().manual_seed(1_000_003 * rank + run.seed)

    def configure_optimizers(self):
        betas = tuple(self.cfg.betas)
        return [StackedAdam(self.disc.parameters(), self.lrs, betas), StackedAdam(self.gen.parameters(), self.lrs, betas)]

    # --- the random numbers, per run --------------------------------------------------------

    def _per_run(self, draw: Callable[[int], Tensor]) -> Tensor:
        return torch.stack([draw(k) for k in range(len(self.runs))]).to(self.device)

    def _head_noise(self, slots: tuple[str, ...]) -> Tensor:
        """The reparameterisation noise of one D forward over `slots`: drawn by each embedding
        run for its own slots, in its own order; zero elsewhere (scalar heads draw none)."""
        b, dim = self.cfg.batch_size, self.disc.dim
        noise = torch.zeros(len(self.runs), len(slots), b, dim)
        for k, run in enumerate(self.runs):
            if self.embedding[k]:
                mine = [i for i, s in enumerate(slots) if s in run.slots]
                noise[k, mine] = torch.randn(len(mine), b, dim, generator=self.rngs[k])
        return noise.to(self.device)

    def _embed(self, x: Tensor, slots: tuple[str, ...]) -> Tensor:
        """D's outputs (K, len(slots), B, m): mu + exp(logvar / 2) * eps for embedding heads,
        the logit in column 0 for scalar heads (whose other columns stay zero)."""
        raw = self.disc(x)
        k, b = len(self.runs), self.cfg.batch_size
        if raw.shape[-1] == 1:
            return raw.view(k, len(slots), b, 1)
        mu, logvar = raw.chunk(2, dim=-1)
        out = mu + torch.exp(0.5 * logvar) * self._head_noise(slots).view_as(mu)
        return out.view(k, len(slots), b, -1)

    # --- losses, one value per run ----------------------------------------------------------

    def _adversarial(self, out: Tensor, real: bool) -> Tensor:
        """softplus(-/+ score).mean() per run: the scalar logit, or MaF's (scaled) embedding mean."""
        c = self.cfg
        sign = -1.0 if real else 1.0
        scalar = F.softplus(sign * out[..., 0]).mean(-1)
        score = out.mean(-1)
        if c.maf_form == "linear":
            maf = -score.mean(-1) if real else score.mean(-1)
        else:
            maf = F.softplus(sign * c.maf_scale * score).mean(-1)
        return torch.where(self.scalar, scalar, maf)

    def _entropy(self, batch: Tensor, side: str, sigma: Tensor) -> Tensor:
        """-sigma * log mean_i min_j ||V_i - R_j||^2 / m against each entropy run's FIFO, which then
        takes the batch; zero for the other runs (no buffer, no distances computed)."""
        loss = batch.new_zeros(len(self.runs))
        if not self.entropy_runs:
            return loss
        ent = self.entropy_runs if len(self.entropy_runs) < len(self.runs) else slice(None)
        batch, buffer = batch[ent], getattr(self, f"buffer_{side}")
        if buffer.shape[1] > 0:
            # The nearest buffer row of each embedding, found without a graph (||v||^2 does not
            # change the argmin); then the distance to it, with one: the same value and gradient
            # as a min over all distances, at a fraction of the memory traffic.
            with torch.no_grad():
                nearest = torch.baddbmm(buffer.pow(2).sum(-1).unsqueeze(1), batch, buffer.transpose(1, 2), alpha=-2).argmin(-1)
            picked = torch.gather(buffer, 1, nearest.unsqueeze(-1).expand(-1, -1, buffer.shape[-1]))
            d = (batch - picked).pow(2).sum(-1) / batch.shape[-1]
            loss = loss.index_put((torch.as_tensor(self.entropy_runs, device=loss.device),),
                                  -sigma[ent] * torch.log(d.mean(-1).clamp_min(1e-12)))
        setattr(self, f"buffer_{side}", torch.cat([buffer, batch.detach()], 1)[:, -self.cfg.buffer_size:])
        return loss

    def training_step(self, step: int, batch_idx: int):
        c, k = self.cfg, len(self.runs)
        opt_d, opt_g = self.optimizers()
        sigma = self.sigma * sigma_at(int(step), 1.0, c.sigma_ramp)
        real = self._per_run(lambda i: self.real_batches(c.batch_size, self.data_rngs[i]))
        fake_graph = self.gen(self._per_run(lambda i: torch.randn(c.batch_size, self.gen.z_dim, generator=self.rngs[i])))
        fake = fake_graph.detach()
        parts = {"real": real, "fake": fake}
        if "aug_real" in self.slots:
            for side, x in (("aug_real", real), ("aug_fake", fake)):
                draws = [augment_draws(x[i], c.aug_noise, self.data_rngs[i]) if ARMS[r.arm].dlle else None
                         for i, r in enumerate(self.runs)]
                u = None if x.dim() == 3 else torch.stack([d[0] if d else torch.zeros(c.batch_size, 3, device=x.device)
                                                           for d in draws])
                noise = torch.stack([d[1] if d else torch.zeros_like(x[i]) for i, d in enumerate(draws)])
                parts[side] = apply_augment(x, u, noise, c.aug_shift, c.aug_degrees)
        if "mix" in self.slots:
            shape = (c.batch_size,) + (1,) * (real.dim() - 2)
            a = self._per_run(lambda i: torch.rand(shape, generator=self.data_rngs[i]) if ARMS[self.runs[i].arm].disomap
                              else torch.zeros(shape))
            parts["mix"] = a * real + (1 - a) * fake
        outs = self._embed(torch.cat([parts[s] for s in self.slots], 1), self.slots)
        out = dict(zip(self.slots, outs.unbind(1)))
        d_loss = self._adversarial(out["real"], True) + self._adversarial(out["fake"], False)
        if "aug_real" in self.slots:
            dlle = ((out["real"] - out["aug_real"].detach()).pow(2).mean((1, 2))
                    + (out["fake"] - out["aug_fake"].detach()).pow(2).mean((1, 2)))
            d_loss = d_loss + self.lambda_dlle * dlle
        if "mix" in self.slots:
            a_emb = a.reshape(k, c.batch_size, 1)
            target = (a_emb * out["real"] + (1 - a_emb) * out["fake"]).detach()
            if c.disomap_distance == "mse":
                iso = (out["mix"] - target).pow(2).mean((1, 2))
            else:
                iso = (1 - F.cosine_similarity(out["mix"], target, dim=-1)).mean(-1)
            d_loss = d_loss + self.lambda_disomap * iso
        total = d_loss + self._entropy(out["real"], "real", sigma)  # the curve shows d_loss without it
        opt_d.zero_grad()
        self.manual_backward(total.sum())
        opt_d.step()

        ddp = self.trainer.world_size > 1
        if ddp:  # D's weights out of G's backward: under DDP a weight may be reduced once per step
            self.toggle_optimizer(opt_g)
        fake_out = self._embed(fake_graph, ("fake",))[:, 0]
        g_loss = self._adversarial(fake_out, True) + self._entropy(fake_out, "fake", sigma)
        opt_g.zero_grad()
        self.manual_backward(g_loss.sum())
        opt_g.step()
        if ddp:
            self.untoggle_optimizer(opt_g)
        self.curves.append(torch.stack([d_loss.detach(), g_loss.detach()], -1))  # (K, 2); one host sync, at the end

    def history(self) -> Tensor:
        """(K, steps, 2): d_loss (adversarial part) and g_loss (with entropy) per run and step."""
        return torch.stack(self.curves, 1).float().cpu() if self.curves else torch.zeros(len(self.runs), 0, 2)


def train_runs(runs: list[Run], make_gen: Callable[[], nn.Module], make_disc: Callable[[str], nn.Module],
               real_batches: Callable[[int, torch.Generator], Tensor], trainer_params) -> list[tuple[dict, dict]]:
    """Train `runs` as one stack through the project's Trainer factory; returns per run (its
    generator's state dict for nets.py, on the CPU; history: d_loss, g_loss per step, and
    `seconds`, the run's share of the stack's wall time)."""
    import logging

    # One fit per stack, up to ~20 per stage: Lightning's start-up notes once would be plenty.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    start = time.perf_counter()
    module = GanStack(runs, make_gen, make_disc, real_batches)
    # Under DDP (trainer.devices > 1): G's parameters sit out D's backward, and each rank keeps its
    # own replay buffers and BatchNorm statistics (not broadcast from rank 0).
    trainer, _ = make_trainer(trainer_params, name="gan", max_epochs=1, seed=runs[0].seed, monitor=None,
                              ddp_options={"find_unused_parameters": True, "broadcast_buffers": False})
    # One batch per step: the step index. Real data is drawn inside the step, per run.
    trainer.fit(module, train_dataloaders=range(runs[0].cfg.steps))
    if trainer.world_size > 1:
        check_replicas_agree(module)
    curves = module.history()
    module.gen.eval()
    seconds = (time.perf_counter() - start) / len(runs)
    return [({n: t.cpu() for n, t in module.gen.plain_state(k).items()},
             {"d_loss": curves[k, :, 0].tolist(), "g_loss": curves[k, :, 1].tolist(), "seconds": seconds})
            for k in range(len(runs))]


def check_replicas_agree(module: nn.Module) -> None:
    """After a DDP fit: every rank holds the same weights (each drew its own batches, and the
    reduced gradients and the stacked optimiser kept the replicas together), or the stage stops."""
    import torch.distributed as dist

    total = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1)
    low, high = total.clone(), total.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f"GAN stack under DDP: the ranks' weights differ after the fit (sums {low.item()} .. "
                           f"{high.item()}); run with trainer.devices: 1 and report this")
