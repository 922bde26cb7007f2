"""The default engine's run: `FederatedSimulation`, a LightningModule holding every client's
network stacked (nets.py), and the two ways it trains: `simulate` (every client, every round, one
Lightning fit per run) and `client_update` (one client's round alone, K = 1: what a Flower
ClientApp calls, and what the simulation is tested against). What the algorithms are, and the
pieces this module builds from, are in engine.py (which imports no Lightning).

One training step is one local step on every client at once; after `local_steps` steps the
round ends: each client's state is cut out (`unstack`), its public part becomes an `Update`,
`core.server_aggregate` merges the updates and `core.merge_global` gives every client its
start state for the next round. Private parts never enter an update: FedBN's normalisation
layers, FRAug's RTNets, and with `local` everything. Batches and noise come from
per-(seed, client, round) generators, so the stacked run and the one-client runs draw the same
numbers and a run is deterministic for its seed.
"""

from __future__ import annotations

import logging
import time
import warnings

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.methods.federated import core
from embedlab.methods.federated.engine import (
    LOCAL_NORMS,
    ClientData,
    RunConfig,
    accuracies,
    balanced_labels,
    init_parts,
    loss_ratio,
    multi_kernel_mmd,
    rbf_mmd2,
    shared_parts,
)
from embedlab.methods.federated.nets import stack, unstack


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    """Per-client mean cross-entropy, summed over clients (each client's gradient is its own)."""
    k, b, c = logits.shape
    return F.cross_entropy(logits.reshape(k * b, c), y.reshape(-1), reduction="none").reshape(k, b).mean(1).sum()


def _entropy(logits: Tensor) -> Tensor:
    """Per-client mean prediction entropy, (K,)."""
    logp = F.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1).mean(1)


def _generator(seed: int, client: int, rnd: int, purpose: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + client) * 10_007 + rnd) * 11 + purpose)


class FederatedSimulation(L.LightningModule):
    """Every client, stacked; see the module docstring."""

    def __init__(self, clients: list[ClientData], cfg: RunConfig, client_ids: list[int] | None = None,
                 first_round: int = 0):
        super().__init__()
        self.automatic_optimization = False
        self.cfg, self.data = cfg, clients
        self.client_ids = client_ids or list(range(len(clients)))
        self.first_round = first_round
        k = len(clients)
        parts = init_parts(cfg, k)
        self.net, self.gen, self.rtnet = parts["net"], parts.get("gen"), parts.get("rtnet")
        self.local_keys = core.norm_keys(self.net) if cfg.algorithm in LOCAL_NORMS else set()
        self.released = self.gen is not None and cfg.fraug["form"] == "released"
        self.history: dict[str, list] = {"eval_acc": [], "upload_bytes": [], "download_bytes": []}
        self.on_round = None

    # -- parts and what crosses the boundary --------------------------------------
    def parts(self) -> dict[str, torch.nn.Module]:
        parts = {"net": self.net}
        if self.gen is not None:
            parts |= {"gen": self.gen, "rtnet": self.rtnet}
        return parts

    def shared_parts(self) -> list[str]:
        return shared_parts(self.cfg.algorithm, self.parts())

    def public(self, name: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """What a client may send of a shared part: all but its private (norm) keys."""
        private = self.local_keys if name == "net" else set()
        return {k: v for k, v in state.items() if k not in private}

    def opts(self) -> list:
        opts = self.optimizers()
        return opts if isinstance(opts, list) else [opts]

    def configure_optimizers(self):
        c = self.cfg
        opts = [torch.optim.SGD(self.net.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)]
        if self.gen is not None and c.fraug["form"] == "released":
            r = c.fraug["released"]
            opts += [torch.optim.SGD(self.gen.parameters(), lr=r["lr_g"], momentum=r["momentum"]),
                     torch.optim.SGD(self.rtnet.parameters(), lr=r["lr_rtnet"], momentum=r["momentum"])]
        elif self.gen is not None:
            opts += [torch.optim.Adam(self.gen.parameters(), lr=c.fraug["damped"]["lr"]),
                     torch.optim.Adam(self.rtnet.parameters(), lr=c.fraug["damped"]["lr"])]
        return opts

    # -- one local step on every client ----------------------------------------------
    def draw_round(self, rnd: int) -> None:
        """Each client's batch indices (and FRAug noise) for the whole round, from its own
        (seed, client, round) stream: a client alone draws exactly what it draws stacked."""
        c = self.cfg
        idx, noise = [], []
        for data, cid in zip(self.data, self.client_ids):
            gen = _generator(c.seed, cid, rnd, 0)
            idx.append(torch.randint(len(data.y_train), (c.local_steps, c.batch_size), generator=gen))
            if self.gen is not None and self.released:  # five draws per step (see released_step)
                noise.append(torch.rand(c.local_steps, 5, c.batch_size, self.gen.noise_dim, generator=gen))
            elif self.gen is not None:
                noise.append(torch.rand(c.local_steps, c.batch_size, self.gen.noise_dim, generator=gen))
        self.round_idx = idx
        # (steps, K, B, nz); released: (steps, 5, K, B, nz)
        self.round_noise = torch.stack(noise, 2 if self.released else 1) if noise else None

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        xs = [c.x_train[i[step]] for c, i in zip(self.data, self.round_idx)]
        ys = [c.y_train[i[step]] for c, i in zip(self.data, self.round_idx)]
        return torch.stack(xs).to(self.device), torch.stack(ys).to(self.device)

    def training_step(self, step_index, _batch_idx=None):
        cfg = self.cfg
        rnd = self.first_round + int(step_index) // cfg.local_steps
        step = int(step_index) % cfg.local_steps
        if step == 0:
            self.start_round(rnd)
        x, y = self.batch(step)
        opts = self.opts()
        if self.released:
            self.released_step(x, y, rnd, step, opts)
            if step == cfg.local_steps - 1:
                self.end_round(rnd)
            return
        f = self.net.embed(x)
        loss = _ce(self.net.head(f), y)
        if cfg.algorithm == "fedprox" and cfg.mu > 0:
            # Each client's term on its own slice of the stack: their sum is the stack's term.
            loss = loss + core.proximal_term(self.net, self.round_start, cfg.mu)
        augment = self.gen is not None and rnd >= cfg.fraug["damped"]["warmup_rounds"]
        if augment:
            g, r = self.synthetic(f.detach(), y, step)
            loss = loss + cfg.fraug["damped"]["rho"] * _ce(self.net.head(r.detach()), y)
        opts[0].zero_grad()
        self.manual_backward(loss)
        opts[0].step()
        if augment:
            self.fraug_steps(f.detach(), y, step, opts[1], opts[2])
        self.log("train_loss", loss.detach() / len(self.data), prog_bar=True)
        if step == cfg.local_steps - 1:
            self.end_round(rnd)

    def released_step(self, x: Tensor, y: Tensor, rnd: int, step: int, opts: list) -> None:
        """One local iteration of the released FRAug (users/user_FRAug.py), in its order:
        the classifier on 0.5 real + 0.25 balanced-label + 0.25 batch-label synthetic CE (the
        synthetic rows made by G and RTNet in eval mode, no gradient: they train the head
        only), then one generator step, then one RTNet step."""
        cfg, fr = self.cfg, self.cfg.fraug
        rel = fr["released"]
        k, b = y.shape
        classes = cfg.model["num_classes"]
        noise = self.round_noise[step].to(x.device)  # (5, K, B, nz)
        y_bal = balanced_labels(rnd, cfg.local_steps, step, b, classes).to(y.device).expand(k, b)
        ratio = loss_ratio(rnd, cfg.rounds, rel["ratio_max"], rel["ratio_gamma"])

        def class_means(labels):
            return torch.gather(self.rtnet.class_means, 1,
                                labels.unsqueeze(-1).expand(-1, -1, self.rtnet.class_means.shape[-1]))

        # 1. classifier
        f = self.net.embed(x)
        self.rtnet.update_means(f.detach(), y, rel["mean_momentum"])
        with torch.no_grad():
            self.gen.eval()
            self.rtnet.eval()
            s_bal = self.rtnet(self.gen(noise[0], y_bal), class_means(y_bal), y_bal)
            s_batch = self.rtnet(self.gen(noise[1], y), f.detach(), y)
            self.gen.train()
            self.rtnet.train()
        synthetic = 0.5 * (_ce(self.net.head(s_bal), y_bal) + _ce(self.net.head(s_batch), y))
        loss = (1 - ratio) * _ce(self.net.head(f), y) + ratio * synthetic
        opts[0].zero_grad()
        self.manual_backward(loss)
        opts[0].step()
        # 2. generator: classified as its label, pushed away from the class means (L2)
        g = self.gen(noise[2], y_bal)
        spread = (g - class_means(y_bal)).pow(2).mean((1, 2)).sum()
        loss_g = _ce(self.net.head(g), y_bal) - fr["lambda_g"] * spread
        opts[1].zero_grad()
        self.manual_backward(loss_g)
        opts[1].step()
        # 3. RTNet: high head entropy, close (multi-kernel MMD) to its base
        with torch.no_grad():
            self.gen.eval()
            self.net.eval()
            g_bal, g_batch = self.gen(noise[3], y_bal), self.gen(noise[4], y)
            f_eval = self.net.embed(x)
            self.gen.train()
            self.net.train()
        base = class_means(y_bal)
        o_bal, o_batch = self.rtnet(g_bal, base, y_bal), self.rtnet(g_batch, f_eval, y)
        loss_r = 0.5 * ((-_entropy(self.net.head(o_bal)) + fr["lambda_r"] * multi_kernel_mmd(o_bal, base))
                        + (-_entropy(self.net.head(o_batch)) + fr["lambda_r"] * multi_kernel_mmd(o_batch, f_eval)))
        opts[2].zero_grad()
        self.manual_backward(loss_r.sum())
        opts[2].step()
        self.net.zero_grad(set_to_none=True)
        self.log("train_loss", loss.detach() / k, prog_bar=True)

    def synthetic(self, f: Tensor, y: Tensor, step: int) -> tuple[Tensor, Tensor]:
        z = self.round_noise[step].to(f)
        radius = f.norm(dim=-1).mean(1).view(-1, 1, 1)
        g = self.gen(z, y, radius)
        return g, self.rtnet(g, f, y)

    def fraug_steps(self, f: Tensor, y: Tensor, step: int, opt_g, opt_r) -> None:
        fr = {**self.cfg.fraug, **self.cfg.fraug["damped"]}
        classes = self.cfg.model["num_classes"]
        onehot = F.one_hot(y, classes).to(f)  # (K, B, C)
        means = onehot.transpose(1, 2) @ f / onehot.sum(1).clamp_min(1).unsqueeze(-1)  # (K, C, d)
        # Generator: classify as y, and stay away from the local class means (bounded: its
        # output lies on the sphere of the real embeddings' typical norm).
        g, _ = self.synthetic(f, y, step)
        spread = (g - torch.gather(means, 1, y.unsqueeze(-1).expand_as(g))).norm(dim=-1).mean(1).sum()
        loss_g = _ce(self.net.head(g), y) - fr["lambda_g"] * spread
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        # RTNet: hard for the head (high prediction entropy), close to the real local embeddings.
        r = self.rtnet(g.detach(), f, y)
        logp = F.log_softmax(self.net.head(r), -1)
        entropy = -(logp.exp() * logp).sum(-1).mean(1)
        loss_r = (-entropy + fr["lambda_r"] * rbf_mmd2(r, f)).sum()
        opt_r.zero_grad()
        self.manual_backward(loss_r)
        opt_r.step()
        self.net.zero_grad(set_to_none=True)

    # -- rounds ---------------------------------------------------------------------
    def start_round(self, rnd: int) -> None:
        self.draw_round(rnd)
        for opt in self.opts():
            opt.optimizer.state.clear()  # a client's optimiser starts each round afresh
        if self.cfg.algorithm == "fedprox":
            self.round_start = {k: v.detach().clone() for k, v in self.net.named_parameters()}

    def end_round(self, rnd: int) -> None:
        k = len(self.data)
        up = down = 0
        for name in self.shared_parts():
            part = self.parts()[name]
            states = unstack(part.state_dict(), k)
            updates = [core.Update(self.public(name, s), c.num_samples) for s, c in zip(states, self.data)]
            glob = core.server_aggregate(updates, "fedavg")
            up += sum(core.state_bytes(u.state) for u in updates)
            down += k * core.state_bytes(glob)
            part.load_state_dict(stack([core.merge_global(s, glob) for s in states]))
        self.history["eval_acc"].append(self.accuracies())
        self.history["upload_bytes"].append(up)
        self.history["download_bytes"].append(down)
        if self.on_round is not None:
            self.on_round(rnd, self.history["eval_acc"][-1])

    @torch.no_grad()
    def accuracies(self) -> list[float]:
        return accuracies(self.net, self.data, self.device)


def _fit(module, steps: int, seed: int, progress: bool, accelerator: str = "cpu") -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)  # thousands of tiny fits: no banners
    warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|LitLogger|litlogger|LeafSpec).*")

    L.seed_everything(seed, verbose=False)
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=progress, deterministic=True,
                        num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=range(steps))


def simulate(clients: list[ClientData], cfg: RunConfig, progress: bool = False, accelerator: str = "cpu") -> dict:
    """Run `cfg.rounds` rounds over `clients`; returns per-round eval accuracies, bytes and the
    final stacked states (every client's network, generator and RTNet). `progress`: a bar
    over rounds showing the mean eval accuracy."""
    module = FederatedSimulation(clients, cfg)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.rounds, desc=f"{cfg.algorithm} seed {cfg.seed}", unit="round")
        module.on_round = lambda r, acc: (bar.update(1), bar.set_postfix(eval_acc=f"{np.mean(acc):.3f}"))
    start = time.perf_counter()
    try:
        _fit(module, cfg.rounds * cfg.local_steps, cfg.seed, progress=False, accelerator=accelerator)
    finally:
        if bar is not None:
            bar.close()
    return {
        "history": module.history,
        "final_eval_acc": module.history["eval_acc"][-1],
        "states": {name: {k: v.detach().cpu() for k, v in part.state_dict().items()} for name, part in module.parts().items()},
        "local_keys": sorted(module.local_keys),
        "seconds": round(time.perf_counter() - start, 2),
    }


def client_update(global_state: dict[str, dict], client: ClientData, cfg: RunConfig, *, client_id: int,
                  rnd: int, private: dict[str, dict] | None = None) -> tuple[core.Update, dict[str, dict]]:
    """One client's round alone: start from `global_state` (per part) merged over its `private`
    state, train `cfg.local_steps` steps, return (the Update it sends, its new private state).
    The Update holds only shared parts' public tensors; never samples, never an RTNet."""
    module = FederatedSimulation(clients=[client], cfg=cfg, client_ids=[client_id], first_round=rnd)
    for name, part in module.parts().items():
        state = part.state_dict()
        if private and name in private:
            state = {**state, **private[name]}
        if name in global_state:
            state = core.merge_global(state, global_state[name])
        part.load_state_dict(state)
    module.history = {key: [] for key in module.history}
    module.end_round = lambda r: None  # the server, not the client, ends the round
    _fit(module, cfg.local_steps, cfg.seed + rnd, progress=False)
    payload, keep = {}, {}
    for name, part in module.parts().items():
        state = {k: v.detach().clone() for k, v in part.state_dict().items()}
        if name in module.shared_parts():
            payload[name] = module.public(name, state)
        keep[name] = state
    flat = {f"{name}.{k}": v for name, s in payload.items() for k, v in s.items()}
    return core.Update(flat, client.num_samples, {"client": client.name}), keep
