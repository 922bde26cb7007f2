"""Client datasets from the partition stage, and GGEUR's augmented client sets.

Feature shift: each domain's shard of the train split, subsampled to `size` (stratified, per
seed); evaluation on the same domain's shard of the val or test split. The CNN learns from
pixels. Label skew and GGEUR: the frozen backbone's embeddings of the clients' images (the
backbone trained on the prepared train split only, so it never saw a val or test image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from embedlab.methods.federated import ggeur
from embedlab.methods.federated.engine import ClientData


class FederatedDataError(ValueError):
    """A client set the params cannot be cut from (names the file, client and size)."""


def stratified_subset(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` indices spread over the classes as evenly as the labels allow (sorted)."""
    ranks = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        ranks[rng.permutation(idx)] = np.arange(len(idx))
    order = np.lexsort((rng.random(len(labels)), ranks))
    return np.sort(order[:size])


def feature_shift_subsets(arrays: dict, size: int, seed: int, source: Path) -> list[np.ndarray]:
    """Per client, the `size` training rows (indices within its own shard) a run keeps:
    stratified, drawn per seed. Raises, naming client and file, where a shard is too small."""
    rng = np.random.default_rng(seed)
    subsets = []
    for k, name in enumerate(arrays["client_names"]):
        labels = arrays["train_labels"][arrays["train_client"] == k]
        if size > len(labels):
            raise FederatedDataError(
                f"federated.feature_shift.sizes: {size} samples per client, but client {str(name)!r} holds "
                f"{len(labels)} training samples in {source}; use sizes <= {len(labels)}"
            )
        subsets.append(stratified_subset(labels, size, rng))
    return subsets


def feature_shift_clients(arrays: dict, size: int, seed: int, eval_split: str, source: Path) -> list[ClientData]:
    clients = []
    for k, (name, keep) in enumerate(zip(arrays["client_names"], feature_shift_subsets(arrays, size, seed, source))):
        mask = arrays["train_client"] == k
        images, labels = arrays["train_images"][mask], arrays["train_labels"][mask]
        emask = arrays[f"{eval_split}_client"] == k
        clients.append(ClientData(
            str(name), torch.from_numpy(images[keep]), torch.from_numpy(labels[keep]),
            torch.from_numpy(arrays[f"{eval_split}_images"][emask]), torch.from_numpy(arrays[f"{eval_split}_labels"][emask]),
        ))
    return clients


class Embedder:
    """A frozen network's embedding of images, in batches: `fn` maps (B, C, S, S) to (B, d)."""

    def __init__(self, fn, module: torch.nn.Module, batch: int = 512):
        self.fn, self.module, self.batch = fn, module.eval(), batch

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images)
        if not len(x):
            return self.fn(torch.zeros(1, *x.shape[1:], dtype=x.dtype))[:0]
        return torch.cat([self.fn(x[i:i + self.batch]) for i in range(0, len(x), self.batch)]).float()


def pooled(clients: list[ClientData]) -> ClientData:
    """Every client's rows held by one (the centralised ceiling); evaluated on all eval rows."""
    return ClientData("pooled", torch.cat([c.x_train for c in clients]), torch.cat([c.y_train for c in clients]),
                      torch.cat([c.x_eval for c in clients]), torch.cat([c.y_eval for c in clients]))


def embedding_clients(arrays: dict, features: dict[str, torch.Tensor], eval_split: str) -> list[ClientData]:
    """Clients over precomputed backbone embeddings (`features[split]`, row-aligned with arrays)."""
    clients = []
    for k, name in enumerate(arrays["client_names"]):
        mask = torch.from_numpy(arrays["train_client"] == k)
        emask = torch.from_numpy(arrays[f"{eval_split}_client"] == k)
        clients.append(ClientData(
            str(name), features["train"][mask], torch.from_numpy(arrays["train_labels"])[mask],
            features[eval_split][emask], torch.from_numpy(arrays[f"{eval_split}_labels"])[emask],
        ))
    return clients


# ---- GGEUR --------------------------------------------------------------------------------

def client_class_stats(client: ClientData, num_classes: int) -> dict[int, ggeur.ClassStats]:
    """What a GGEUR client sends: per class it holds, (count, mean, covariance). No samples."""
    return {c: ggeur.class_stats(client.x_train[client.y_train == c]) for c in range(num_classes)
            if int((client.y_train == c).sum()) > 0}


def server_geometry(sent: list[dict[int, ggeur.ClassStats]], num_classes: int) -> dict[int, tuple]:
    """Per class, the eigen-pairs of the exactly pooled covariance (the global geometric shape)."""
    shapes = {}
    for c in range(num_classes):
        held = [s[c] for s in sent if c in s]
        if held:
            shapes[c] = ggeur.eigen_directions(ggeur.pool(held).cov)
    return shapes


def combine(real: torch.Tensor, generated: torch.Tensor, target: int, gen: torch.Generator) -> torch.Tensor:
    """All real rows, filled up to `target` with generated ones. (The released code also cuts a
    class with more than `target` real rows down to `target`; we keep every real row.)"""
    if len(generated) == 0:
        return real
    if len(real) >= target:
        return real
    pick = torch.randperm(len(generated), generator=gen)[: target - len(real)]
    return torch.cat([real, generated[pick]])


def ggeur_augment(clients: list[ClientData], num_classes: int, cfg, seed: int,
                  prototypes: bool = False) -> tuple[list[ClientData], int]:
    """Every client's train set rebuilt as real + generated embeddings per class (GGEUR).
    Single domain: new rows around the client's own samples. Multi-domain (`prototypes`): also
    around the other clients' class means, which the server relays. `cfg.fill`: "target" fills
    each class a client holds up to `cfg.target_size`; "global" up to the class's count over all
    clients (the server knows it from the counts sent). Returns the new clients (their FedAvg
    weight stays the real sample count) and the bytes the statistics cost."""
    sent = [client_class_stats(c, num_classes) for c in clients]
    shapes = server_geometry(sent, num_classes)
    nbytes = sum(8 * (1 + s.mean.numel() + s.cov.numel()) for stats in sent for s in stats.values())
    nbytes += len(clients) * sum(8 * (v.numel() + w.numel()) for v, w in shapes.values())
    out = []
    for k, c in enumerate(clients):
        gen = torch.Generator().manual_seed(seed * 7919 + k)
        xs, ys = [], []
        for label, (values, vectors) in shapes.items():
            real = c.x_train[c.y_train == label]
            target = sum(s[label].count for s in sent if label in s) if cfg.fill == "global" else cfg.target_size
            pieces = []
            if len(real):  # enough copies per real row to reach the target
                copies = max(cfg.per_sample, -(-(target - len(real)) // len(real)))
                pieces.append(ggeur.augment(real, values, vectors, copies, cfg.scale, gen))
            if prototypes:
                others = torch.stack([s[label].mean for j, s in enumerate(sent) if j != k and label in s]) \
                    if any(label in s for j, s in enumerate(sent) if j != k) else None
                if others is not None:
                    pieces.append(ggeur.augment(others.to(real.dtype), values, vectors, cfg.prototype_samples, cfg.scale, gen))
            if not pieces:
                continue
            rows = combine(real, torch.cat(pieces), target, gen)
            xs.append(rows)
            ys.append(torch.full((len(rows),), label, dtype=c.y_train.dtype))
        out.append(ClientData(c.name, torch.cat(xs), torch.cat(ys), c.x_eval, c.y_eval, num_samples=c.num_samples))
    return out, nbytes
