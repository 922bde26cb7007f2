"""The default engine's pieces: the clients' data, a run's configuration, the stacked networks
each algorithm trains, and the losses FRAug adds. The run itself (`FederatedSimulation`, a
LightningModule, and `simulate` / `client_update`) is simulation.py, so that this module, which
scoring and the Flower apps read, loads no Lightning.

Algorithms:
  local    no communication
  fedavg   sample-weighted mean of every parameter and buffer
  fedprox  fedavg, and the local loss adds (mu / 2) ||w - w_global||^2
  fedbn    fedavg except normalisation layers, which stay local
  fraug    fedbn, and a shared generator G (aggregated like the network) plus a local RTNet
           make synthetic embeddings the head also trains on. `fraug.form`: "released" follows
           the released code (users/user_FRAug.py: BN-ended RTNet added to the class mean or the
           real embedding, EMA class means, balanced and batch labels, loss ratio up to 0.5);
           "damped" is this repository's earlier variant (small RTNet output, weight rho,
           warm-up rounds)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from embedlab.methods.federated.nets import (
    ClientCNN,
    Generator,
    LinearHead,
    ReleasedGenerator,
    ReleasedRTNet,
    RTNet,
    stack,
)

ALGORITHMS = ("local", "fedavg", "fedprox", "fedbn", "fraug")
LOCAL_NORMS = ("fedbn", "fraug")  # algorithms whose normalisation layers never leave the client


@dataclass
class ClientData:
    """One client's local arrays. `x_train` may hold augmented rows (GGEUR); `num_samples` is
    the count of real ones, which weights the client in FedAvg."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_eval: Tensor
    y_eval: Tensor
    num_samples: int | None = None

    def __post_init__(self):
        if self.num_samples is None:
            self.num_samples = len(self.y_train)
        if len(self.y_train) == 0:
            raise ValueError(f"federated client {self.name!r} holds no training samples")


@dataclass(frozen=True)
class RunConfig:
    algorithm: str
    seed: int
    rounds: int
    local_steps: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    mu: float = 0.0
    model: dict = field(default_factory=dict)  # {"kind": "cnn"|"head", ...kwargs}
    fraug: dict | None = None  # FRAugParams as a dict when algorithm == "fraug"

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"federated algorithm {self.algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
        if self.algorithm == "fraug" and (self.fraug is None or self.model.get("kind") != "cnn"):
            raise ValueError("fraug needs fraug params and the cnn model (it augments the learned embedding)")


def build_model(model: dict, clients: int) -> torch.nn.Module:
    kwargs = {k: v for k, v in model.items() if k != "kind"}
    if model.get("kind") == "cnn":
        return ClientCNN(clients, **kwargs)
    if model.get("kind") == "head":
        return LinearHead(clients, **kwargs)
    raise ValueError(f"federated model kind {model.get('kind')!r}: expected 'cnn' or 'head'")


def fraug_parts(fr: dict, clients: int, embedding_dim: int, num_classes: int) -> dict[str, torch.nn.Module]:
    """FRAug's generator and RTNet for `clients` slots, in the form `fr["form"]` names."""
    if fr["form"] == "released":
        return {"gen": ReleasedGenerator(clients, num_classes, embedding_dim),
                "rtnet": ReleasedRTNet(clients, embedding_dim, num_classes)}
    d = fr["damped"]
    return {"gen": Generator(clients, d["noise_dim"], num_classes, embedding_dim, d["hidden"]),
            "rtnet": RTNet(clients, embedding_dim, num_classes, d["hidden"], d["rtnet_init_scale"])}


def init_parts(cfg: RunConfig, clients: int) -> dict[str, torch.nn.Module]:
    """One server initialisation, broadcast: the K = 1 networks drawn from the seed, copied to
    every client slot (so a lone `client_update` starts from the very same weights)."""
    # Every K = 1 part is drawn before any stacked one, so the draws never depend on K.
    torch.manual_seed(cfg.seed)
    single = {"net": build_model(cfg.model, 1)}
    fr = cfg.fraug if cfg.algorithm == "fraug" else None
    if fr:
        single |= fraug_parts(fr, 1, cfg.model["embedding_dim"], cfg.model["num_classes"])
    parts = {"net": build_model(cfg.model, clients)}
    if fr:
        parts |= fraug_parts(fr, clients, cfg.model["embedding_dim"], cfg.model["num_classes"])
    for name, part in parts.items():
        part.load_state_dict(stack([single[name].state_dict()] * clients))
    return parts


def shared_parts(algorithm: str, parts) -> list[str]:
    """The parts whose (public) state goes to the server: none for `local`; never the RTNet."""
    return [] if algorithm == "local" else [p for p in parts if p != "rtnet"]


def initial_state(cfg: RunConfig) -> dict[str, dict[str, Tensor]]:
    """The server's first global state, per shared part."""
    parts = init_parts(cfg, 1)
    return {name: parts[name].state_dict() for name in shared_parts(cfg.algorithm, parts)}




def rbf_mmd2(x: Tensor, y: Tensor) -> Tensor:
    """Per client, a biased kernel MMD^2 between (K, B, d) sets, RBF at the median distance."""
    xy = torch.cat([x, y], 1)
    d2 = torch.cdist(xy, xy).pow(2)
    bandwidth = d2.detach().flatten(1).median(1).values.clamp_min(1e-6).view(-1, 1, 1)
    k = torch.exp(-d2 / bandwidth)
    n = x.shape[1]
    return k[:, :n, :n].mean((1, 2)) + k[:, n:, n:].mean((1, 2)) - 2 * k[:, :n, n:].mean((1, 2))


def multi_kernel_mmd(x: Tensor, y: Tensor, kernel_mul: float = 2.0, kernel_num: int = 5) -> Tensor:
    """Per client, the released code's MMD (utils/loss_utils.py, MMD_loss 'gaussian'): the sum of
    `kernel_num` RBF kernels at bandwidths b * kernel_mul^(i - kernel_num // 2), b the mean
    off-diagonal squared distance of the pooled set (not differentiated); biased, equal sizes."""
    n = x.shape[1]
    xy = torch.cat([x, y], 1)
    d2 = torch.cdist(xy, xy).pow(2)
    total = xy.shape[1]
    base = (d2.detach().sum((1, 2)) / (total * total - total)).clamp_min(1e-12) / kernel_mul ** (kernel_num // 2)
    k = sum(torch.exp(-d2 / (base * kernel_mul**i).view(-1, 1, 1)) for i in range(kernel_num))
    return (k[:, :n, :n] + k[:, n:, n:] - k[:, :n, n:] - k[:, n:, :n]).mean((1, 2))




def loss_ratio(rnd: int, rounds: int, ratio_max: float, gamma: float) -> float:
    """The released synthetic-loss weight: min(ratio_max, exp(gamma (round - rounds)))."""
    return min(ratio_max, math.exp(gamma * (rnd - rounds)))


def balanced_labels(rnd: int, local_steps: int, step: int, batch: int, classes: int) -> Tensor:
    """The released code's class-balanced synthetic labels: the class list rotated by
    ((round * local_steps + step) * batch) mod classes, tiled over the batch."""
    split = ((rnd * local_steps + step) * batch) % classes
    return (split + torch.arange(batch)) % classes



@torch.no_grad()
def accuracies(net: torch.nn.Module, clients: list[ClientData], device="cpu") -> list[float]:
    """Each client's accuracy on its own eval split, with its own slice of the stacked net
    (NaN for a client with no eval samples)."""
    was = net.training
    net.eval()
    out = []
    for k, c in enumerate(clients):
        if len(c.y_eval) == 0:  # a Dirichlet split can leave a client without eval samples
            out.append(float("nan"))
            continue
        x = c.x_eval.to(device)
        # Run client k's slice: feed its data in slot k, zeros elsewhere (slots are independent).
        full = torch.zeros((len(clients), *x.shape), dtype=x.dtype, device=device)
        full[k] = x
        pred = net(full)[k].argmax(-1).cpu()
        out.append(float((pred == c.y_eval).float().mean()))
    net.train(was)
    return out


def split_payload(state: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """The flat `part.key` names of an Update's state -> {part: state}."""
    out: dict[str, dict] = {}
    for key, value in state.items():
        part, _, name = key.partition(".")
        out.setdefault(part, {})[name] = value
    return out

