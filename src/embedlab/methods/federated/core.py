"""The engine-agnostic federated core: plain state dicts and statistics in, state dicts out.

Nothing here knows about processes, Flower or Lightning; an engine (the in-process
simulation, a Flower ServerApp) moves `Update`s between clients and the server. Only
parameters and statistics cross the client boundary, never samples.

- `server_aggregate(updates, algorithm, local_keys)`: the sample-weighted mean of the
  clients' states (FedAvg, also the server side of FedProx); FedBN leaves `local_keys`
  (normalisation layers) out of the mean, so each client keeps its own.
- `norm_keys(model)`: the state-dict names that belong to normalisation layers.
- `proximal_term(model, global_state, mu)`: FedProx's (mu / 2) ||w - w_global||^2, added to
  the client's loss.
- `merge_global(local_state, global_state, local_keys)`: what a client starts a round from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

ALGORITHMS = ("fedavg", "fedprox", "fedbn")
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class Update:
    """What one client sends after a round: its state and statistics (at least num_samples)."""

    state: dict[str, Tensor]
    num_samples: int
    stats: dict = field(default_factory=dict)


def norm_keys(model: nn.Module) -> set[str]:
    """State-dict keys (weights, biases, running statistics) of every normalisation layer."""
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, _NORM_TYPES):
            prefix = f"{name}." if name else ""
            keys |= {prefix + k for k in module.state_dict()}
    return keys


def server_aggregate(updates: list[Update], algorithm: str = "fedavg", local_keys: set[str] | None = None) -> dict:
    """Sample-weighted average of the clients' states. For `fedbn`, `local_keys` stay out of
    the result (every client keeps its own). Integer buffers (e.g. BatchNorm's
    num_batches_tracked) take the largest client value rather than a mean."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"federated algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    if not updates:
        raise ValueError("server_aggregate needs at least one client update")
    total = sum(u.num_samples for u in updates)
    if total <= 0:
        raise ValueError(f"server_aggregate: clients reported {total} samples in all; need > 0")
    skip = (local_keys or set()) if algorithm == "fedbn" else set()
    keys = [k for k in updates[0].state if k not in skip]
    for u in updates[1:]:
        if set(u.state) - skip != set(keys):
            raise ValueError("server_aggregate: clients sent states with different keys")
    merged = {}
    for key in keys:
        first = updates[0].state[key]
        if not torch.is_floating_point(first):
            merged[key] = torch.stack([u.state[key] for u in updates]).max(dim=0).values
            continue
        merged[key] = sum(u.state[key].double() * (u.num_samples / total) for u in updates).to(first.dtype)
    return merged


def merge_global(local_state: dict[str, Tensor], global_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A client's starting state for a round: the global entries, and its own for every key
    the server did not send (FedBN's normalisation layers)."""
    return {k: (global_state[k] if k in global_state else v).clone() for k, v in local_state.items()}


def proximal_term(model: nn.Module, global_state: dict[str, Tensor], mu: float) -> Tensor:
    """FedProx: (mu / 2) * sum over trainable parameters of ||w - w_global||^2."""
    terms = [(p - global_state[name].to(p)).pow(2).sum() for name, p in model.named_parameters()
             if p.requires_grad and name in global_state]
    if not terms or mu == 0:
        return torch.zeros((), device=next(model.parameters()).device)
    return 0.5 * mu * torch.stack(terms).sum()


def state_bytes(state: dict[str, Tensor]) -> int:
    """Bytes on the wire for one state dict (tensor payloads only)."""
    return sum(t.numel() * t.element_size() for t in state.values())
