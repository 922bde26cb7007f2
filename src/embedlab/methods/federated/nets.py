"""Client networks, stacked: K clients' copies of one network held as one module.

The in-process simulation trains every client at once. A `StackedConv` is K independent
convolutions as one grouped convolution, a `StackedLinear` is K independent matrices
applied with one batched matmul, and a BatchNorm over K*C channels is K independent
BatchNorms (each channel only ever sees its own client's batch). One forward and one
backward step every client; the arithmetic per client is unchanged, so the stacked run
equals K separate single-client runs (tested against `client_update`, which uses K = 1).

Every stacked tensor has its clients along dim 0, client-major, so client k's slice of a
state dict is `t.reshape(K, -1, ...)[k]`: exactly the state of the same network with K = 1.
That is what crosses the client boundary: `unstack` / `stack` convert.

Activations travel as (K, B, ...) between blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class StackedLinear(nn.Module):
    def __init__(self, clients: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(clients, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(clients, d_out))
        bound = 1.0 / d_in**0.5  # nn.Linear's default init, per client
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:  # (K, B, d_in) -> (K, B, d_out)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


class StackedConv(nn.Module):
    def __init__(self, clients: int, c_in: int, c_out: int, kernel: int = 3):
        super().__init__()
        self.clients, self.c_in = clients, c_in
        self.conv = nn.Conv2d(clients * c_in, clients * c_out, kernel, padding=kernel // 2, groups=clients)

    def forward(self, x: Tensor) -> Tensor:  # (B, K*c_in, H, W) -> (B, K*c_out, H, W)
        return self.conv(x)


class StackedBatchNorm(nn.Module):
    """K BatchNorm1d over (K, B, d): one BatchNorm1d of K*d channels."""

    def __init__(self, clients: int, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(clients * dim)

    def forward(self, x: Tensor) -> Tensor:
        k, b, d = x.shape
        return self.bn(x.transpose(0, 1).reshape(b, k * d)).reshape(b, k, d).transpose(0, 1)


class ClientCNN(nn.Module):
    """Per client: two conv-BN-ReLU-pool blocks, a linear embedding with BN, a linear head.
    `embed` gives the (K, B, emb) embeddings FRAug augments; `head` classifies them."""

    def __init__(self, clients: int, image_size: int, num_classes: int, width: int = 16, embedding_dim: int = 64,
                 channels: int = 1):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"federated CNN: image_size {image_size} must be divisible by 4")
        self.clients = clients
        self.conv1 = StackedConv(clients, channels, width)
        self.bn1 = nn.BatchNorm2d(clients * width)
        self.conv2 = StackedConv(clients, width, 2 * width)
        self.bn2 = nn.BatchNorm2d(clients * 2 * width)
        flat = 2 * width * (image_size // 4) ** 2
        self.fc = StackedLinear(clients, flat, embedding_dim)
        self.bn3 = StackedBatchNorm(clients, embedding_dim)
        self.head = StackedLinear(clients, embedding_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:  # (K, B, C, S, S) -> (K, B, emb)
        k, b = x.shape[:2]
        h = x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(h))), 2)
        h = F.max_pool2d(F.relu(self.bn2(self.conv2(h))), 2)
        h = h.reshape(b, k, -1).transpose(0, 1)
        return F.relu(self.bn3(self.fc(h)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


class LinearHead(nn.Module):
    """Per client: one linear classifier on frozen backbone embeddings (GGEUR's setting)."""

    def __init__(self, clients: int, embedding_dim: int, num_classes: int):
        super().__init__()
        self.clients = clients
        self.head = StackedLinear(clients, embedding_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)


class Generator(nn.Module):
    """FRAug's shared generator G(z, y) -> embedding, z ~ U(0, 1), one copy per client while
    training locally. Its output is L2-normalised and rescaled to `radius` (set to the typical
    norm of real embeddings): the bound that keeps "far from the class means" finite."""

    def __init__(self, clients: int, noise_dim: int, num_classes: int, embedding_dim: int, hidden: int = 64):
        super().__init__()
        self.noise_dim, self.num_classes = noise_dim, num_classes
        self.fc1 = StackedLinear(clients, noise_dim + num_classes, hidden)
        self.fc2 = StackedLinear(clients, hidden, embedding_dim)

    def forward(self, z: Tensor, y: Tensor, radius: Tensor) -> Tensor:  # (K,B,nz), (K,B), (K,1,1)
        h = torch.cat([z, F.one_hot(y, self.num_classes).to(z)], -1)
        out = self.fc2(F.relu(self.fc1(h)))
        return F.normalize(out, dim=-1) * radius


class RTNet(nn.Module):
    """FRAug's local representation transformation: R_k(g, f, y) = f + Dec(Enc([g, onehot y])).
    Dec ends in a LayerNorm whose scale starts at `init_scale` (small), so a fresh RTNet adds
    little noise in the first rounds. Never leaves its client."""

    def __init__(self, clients: int, embedding_dim: int, num_classes: int, hidden: int = 64, init_scale: float = 0.1):
        super().__init__()
        self.num_classes = num_classes
        self.enc = StackedLinear(clients, embedding_dim + num_classes, hidden)
        self.dec = StackedLinear(clients, hidden, embedding_dim)
        self.scale = nn.Parameter(torch.full((clients, 1, embedding_dim), float(init_scale)))
        self.shift = nn.Parameter(torch.zeros(clients, 1, embedding_dim))

    def forward(self, g: Tensor, f: Tensor, y: Tensor) -> Tensor:
        h = F.relu(self.enc(torch.cat([g, F.one_hot(y, self.num_classes).to(g)], -1)))
        d = self.dec(h)
        return f + F.layer_norm(d, d.shape[-1:]) * self.scale + self.shift


class ReleasedGenerator(nn.Module):
    """FRAug's generator as released (networks.py, digits): [z, onehot y] -> Linear-BN-ReLU ->
    Linear-BN-ReLU, z ~ U(0, 1) of half the embedding's size. Its output ends in BN + ReLU like
    the real embedding f it imitates. Shared: every entry, BatchNorm statistics included, is
    averaged at the server."""

    def __init__(self, clients: int, num_classes: int, embedding_dim: int):
        super().__init__()
        self.noise_dim, self.num_classes = embedding_dim // 2, num_classes
        self.fc0 = StackedLinear(clients, self.noise_dim + num_classes, embedding_dim)
        self.bn0 = StackedBatchNorm(clients, embedding_dim)
        self.fc1 = StackedLinear(clients, embedding_dim, embedding_dim)
        self.bn1 = StackedBatchNorm(clients, embedding_dim)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:  # (K, B, nz), (K, B) -> (K, B, d)
        h = torch.cat([z, F.one_hot(y, self.num_classes).to(z)], -1)
        return F.relu(self.bn1(self.fc1(F.relu(self.bn0(self.fc0(h))))))


class ReleasedRTNet(nn.Module):
    """FRAug's FTNet as released (FTNet_with_BN): base + BN(Linear(ReLU(BN(Linear([g, onehot y]))))),
    hidden = half the embedding's size, BatchNorms at PyTorch's defaults (gamma = 1), so its
    output has about unit scale per dimension. `base` is the local class mean (balanced labels)
    or the real embedding (the batch's labels). It also keeps the client's running class means
    (`class_means`, an EMA of its real embeddings). Never leaves its client."""

    def __init__(self, clients: int, embedding_dim: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.enc = StackedLinear(clients, embedding_dim + num_classes, embedding_dim // 2)
        self.bn_enc = StackedBatchNorm(clients, embedding_dim // 2)
        self.dec = StackedLinear(clients, embedding_dim // 2, embedding_dim)
        self.bn_dec = StackedBatchNorm(clients, embedding_dim)
        self.register_buffer("class_means", torch.zeros(clients, num_classes, embedding_dim))

    def forward(self, g: Tensor, base: Tensor, y: Tensor) -> Tensor:
        h = F.relu(self.bn_enc(self.enc(torch.cat([g, F.one_hot(y, self.num_classes).to(g)], -1))))
        return base + self.bn_dec(self.dec(h))

    @torch.no_grad()
    def update_means(self, f: Tensor, y: Tensor, momentum: float) -> None:
        """EMA of the class means over one batch, for the classes the batch holds (no bias
        correction: the means start at zero, as released)."""
        onehot = F.one_hot(y, self.num_classes).to(f)  # (K, B, C)
        count = onehot.sum(1)  # (K, C)
        batch_means = onehot.transpose(1, 2) @ f / count.clamp_min(1).unsqueeze(-1)
        m = ((count > 0).to(f) * momentum).unsqueeze(-1)
        self.class_means.mul_(1 - m).add_(batch_means * m)


# ---- crossing the client boundary --------------------------------------------------------

def client_slice(t: Tensor, clients: int, k: int) -> Tensor:
    if t.dim() == 0:  # shared scalar buffers (BatchNorm's num_batches_tracked)
        return t.clone()
    return t.reshape(clients, t.shape[0] // clients, *t.shape[1:])[k].clone()


def unstack(state: dict[str, Tensor], clients: int) -> list[dict[str, Tensor]]:
    """A stacked state dict -> one state dict per client (each the K = 1 network's state)."""
    return [{name: client_slice(t, clients, k) for name, t in state.items()} for k in range(clients)]


def stack(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Per-client state dicts -> the stacked state dict (inverse of `unstack`)."""
    out = {}
    for name, first in states[0].items():
        out[name] = first.clone() if first.dim() == 0 else torch.cat([s[name] for s in states], 0)
    return out
