"""Many GAN runs as one model: every layer carries a leading run axis K.

A stacked network is built from K ordinary networks (nets.py), each initialised alone under its
own seed, and trains them as one: linear layers as batched matmuls, convolutions as grouped
convolutions (run k owns channel group k), BatchNorm over the grouped channels (so every run
keeps its own batch statistics), spectral norm as a batched power iteration on each run's own
(u, v). No run sees another's numbers: a stacked step equals K steps alone, up to float
rounding (tests/unit/test_gan_stacked.py pins it).

Discriminator heads of different kinds stack too: a scalar head's one row is padded with zero
rows (and its bias masked) to the embedding head's 2m rows. Zero rows leave the spectral norm
unchanged and get zero gradients, so a padded run trains as it would alone.

Layouts: points and features (K, N, F); images (N, K * C, H, W) inside the conv stacks,
(K, N, C, H, W) outside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-12  # torch's spectral_norm default


def _spectral_parts(layer: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    """(weight before normalisation, u, v) of a layer under torch's spectral_norm parametrization."""
    para = layer.parametrizations.weight
    return para.original.detach(), para[0]._u.detach(), para[0]._v.detach()


def _weight(layer: nn.Module) -> Tensor:
    return _spectral_parts(layer)[0] if hasattr(layer, "parametrizations") else layer.weight.detach()


class _Stacked(nn.Module):
    """A weight (K, out, ...) with an optional bias (K, out) and optional spectral norm."""

    def __init__(self, weight: Tensor, bias: Tensor | None, u: Tensor | None = None, v: Tensor | None = None,
                 bias_mask: Tensor | None = None):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone()) if bias is not None else None
        self.spectral = u is not None
        if self.spectral:
            self.register_buffer("u", u.clone())
            self.register_buffer("v", v.clone())
        self.register_buffer("bias_mask", bias_mask.clone() if bias_mask is not None else None)

    def current_weight(self) -> Tensor:
        """The weight as the run uses it: divided by its largest singular value under spectral
        norm, after one power iteration in training (as torch's spectral_norm does per forward)."""
        if not self.spectral:
            return self.weight
        k = self.weight.shape[0]
        mat = self.weight.reshape(k, self.weight.shape[1], -1)
        if self.training:
            with torch.no_grad():
                self.u.copy_(F.normalize(torch.bmm(mat, self.v.unsqueeze(-1)).squeeze(-1), dim=-1, eps=EPS))
                self.v.copy_(F.normalize(torch.bmm(mat.transpose(1, 2), self.u.unsqueeze(-1)).squeeze(-1), dim=-1, eps=EPS))
        u, v = self.u.clone(), self.v.clone()
        sigma = (u * torch.bmm(mat, v.unsqueeze(-1)).squeeze(-1)).sum(-1)
        return self.weight / sigma.view(k, *[1] * (self.weight.dim() - 1))

    def current_bias(self) -> Tensor | None:
        if self.bias is None or self.bias_mask is None:
            return self.bias
        return self.bias * self.bias_mask

    def plain_state(self, k: int) -> dict[str, Tensor]:
        if self.spectral or self.bias_mask is not None:
            raise NotImplementedError("only generator layers (no spectral norm, no padding) unstack")
        state = {"weight": self.weight[k].detach().clone()}
        if self.bias is not None:
            state["bias"] = self.bias[k].detach().clone()
        return state


class StackedLinear(_Stacked):
    """K linear layers: (K, N, in) -> (K, N, out)."""

    @classmethod
    def of(cls, layers: list[nn.Module], rows: int | None = None) -> StackedLinear:
        """Stack `layers` (nn.Linear, spectral-normed or not); `rows` pads every run's output to
        that many zero rows (heads of different kinds)."""
        spectral = hasattr(layers[0], "parametrizations")
        out = rows or max(_weight(m).shape[0] for m in layers)
        features = _weight(layers[0]).shape[1]
        weight = torch.zeros(len(layers), out, features)
        has_bias = any(m.bias is not None for m in layers)
        bias = torch.zeros(len(layers), out) if has_bias else None
        mask = torch.zeros(len(layers), out) if has_bias else None
        u = torch.zeros(len(layers), out) if spectral else None
        v = torch.zeros(len(layers), features) if spectral else None
        for k, m in enumerate(layers):
            w = _weight(m)
            weight[k, : w.shape[0]] = w
            if m.bias is not None:
                bias[k, : w.shape[0]] = m.bias.detach()
                mask[k, : w.shape[0]] = 1.0
            if spectral:
                _, u_k, v_k = _spectral_parts(m)
                u[k, : w.shape[0]], v[k] = u_k, v_k
        padded = any(_weight(m).shape[0] != out for m in layers) or (has_bias and not all(m.bias is not None for m in layers))
        return cls(weight, bias, u, v, mask if padded else None)

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.current_weight(), self.current_bias()
        if b is None:
            return torch.bmm(x, w.transpose(1, 2))
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


class StackedConv2d(_Stacked):
    """K Conv2d layers as one grouped convolution: (N, K * in, H, W) -> (N, K * out, H', W')."""

    def __init__(self, layers: list[nn.Conv2d]):
        spectral = hasattr(layers[0], "parametrizations")
        parts = [_spectral_parts(m) if spectral else (m.weight.detach(), None, None) for m in layers]
        weight = torch.stack([p[0] for p in parts])
        bias = torch.stack([m.bias.detach() for m in layers]) if layers[0].bias is not None else None
        u, v = (torch.stack([p[1] for p in parts]), torch.stack([p[2] for p in parts])) if spectral else (None, None)
        super().__init__(weight, bias, u, v)
        self.stride, self.padding = layers[0].stride, layers[0].padding

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.current_weight(), self.current_bias()
        k = w.shape[0]
        return F.conv2d(x, w.reshape(k * w.shape[1], *w.shape[2:]), None if b is None else b.reshape(-1),
                        self.stride, self.padding, groups=k)


class StackedConvTranspose2d(_Stacked):
    """K ConvTranspose2d layers as one grouped transposed convolution."""

    def __init__(self, layers: list[nn.ConvTranspose2d]):
        bias = torch.stack([m.bias.detach() for m in layers]) if layers[0].bias is not None else None
        super().__init__(torch.stack([m.weight.detach() for m in layers]), bias)
        self.stride, self.padding = layers[0].stride, layers[0].padding

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.weight, self.bias
        k = w.shape[0]
        return F.conv_transpose2d(x, w.reshape(k * w.shape[1], *w.shape[2:]), None if b is None else b.reshape(-1),
                                  self.stride, self.padding, groups=k)


class StackedBatchNorm(nn.Module):
    """K BatchNorm layers over grouped channels (N, K * C, ...): each run its own statistics."""

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]))
        self.register_buffer("running_mean", torch.stack([m.running_mean for m in layers]))
        self.register_buffer("running_var", torch.stack([m.running_var for m in layers]))
        self.register_buffer("num_batches_tracked", layers[0].num_batches_tracked.clone())
        self.momentum, self.eps = layers[0].momentum, layers[0].eps

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean.view(-1), self.running_var.view(-1), self.weight.view(-1),
                            self.bias.view(-1), self.training, self.momentum, self.eps)

    def plain_state(self, k: int) -> dict[str, Tensor]:
        return {"weight": self.weight[k].detach().clone(), "bias": self.bias[k].detach().clone(),
                "running_mean": self.running_mean[k].clone(), "running_var": self.running_var[k].clone(),
                "num_batches_tracked": self.num_batches_tracked.clone()}


def _stack_layer(layers: list[nn.Module]) -> nn.Module:
    first = layers[0]
    if isinstance(first, nn.Linear):
        return StackedLinear.of(layers)
    if isinstance(first, nn.ConvTranspose2d):
        return StackedConvTranspose2d(layers)
    if isinstance(first, nn.Conv2d):
        return StackedConv2d(layers)
    if isinstance(first, nn.modules.batchnorm._BatchNorm):
        return StackedBatchNorm(layers)
    if isinstance(first, nn.LeakyReLU):
        return nn.LeakyReLU(first.negative_slope)  # not in place: the input may be a view
    if isinstance(first, nn.ReLU | nn.Tanh | nn.Flatten):
        return type(first)()
    raise TypeError(f"no stacked twin for {type(first).__name__}")


class _StackedSequential(nn.Module):
    """A stacked twin of an nn.Sequential; remembers the plain names, so runs unstack."""

    def __init__(self, seqs: list[nn.Sequential], prefix: str):
        super().__init__()
        self.layers = nn.ModuleList(_stack_layer([s[i] for s in seqs]) for i in range(len(seqs[0])))
        self.prefix = prefix

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def plain_state(self, k: int) -> dict[str, Tensor]:
        return {f"{self.prefix}.{i}.{name}": t for i, layer in enumerate(self.layers) if hasattr(layer, "plain_state")
                for name, t in layer.plain_state(k).items()}


# --- networks -----------------------------------------------------------------------------------


class StackedGenerator(nn.Module):
    """K generators (all MLPGenerator or all ConvGenerator of one shape): z (K, N, z_dim) ->
    samples (K, N, d) or (K, N, C, S, S). `plain_state(k)` is run k's state dict for nets.py."""

    def __init__(self, gens: list[nn.Module]):
        super().__init__()
        self.runs, self.z_dim = len(gens), gens[0].z_dim
        self.conv = hasattr(gens[0], "body")
        if self.conv:
            self.width0 = gens[0].width0
            self.seed = _StackedSequential([g.seed for g in gens], "seed")
            self.body = _StackedSequential([g.body for g in gens], "body")
        else:
            self.net = _StackedSequential([g.net for g in gens], "net")

    def forward(self, z: Tensor) -> Tensor:
        if not self.conv:
            return self.net(z)
        k, n = z.shape[:2]
        h = self.seed.layers[0](z).transpose(0, 1).reshape(n, -1)  # linear per run, then (N, K * F)
        for layer in self.seed.layers[1:]:
            h = layer(h)
        h = self.body(h.view(n, k * self.width0, 4, 4))
        return h.view(n, k, -1, *h.shape[-2:]).transpose(0, 1)

    def plain_state(self, k: int) -> dict[str, Tensor]:
        if self.conv:
            return {**self.seed.plain_state(k), **self.body.plain_state(k)}
        return self.net.plain_state(k)


class StackedDiscriminator(nn.Module):
    """K discriminators of one body shape, heads scalar or embedding: x (K, N, ...) ->
    head outputs (K, N, rows), rows = 2m if any run has an embedding head (mu, logvar), else 1."""

    def __init__(self, discs: list[nn.Module]):
        super().__init__()
        self.runs = len(discs)
        self.conv = not hasattr(discs[0], "input_scale")
        self.input_scale = 1.0 if self.conv else discs[0].input_scale
        self.body = _StackedSequential([d.body for d in discs], "body")
        heads = [getattr(d.head, "stats", getattr(d.head, "out", None)) for d in discs]
        self.dim = max(d.head.dim for d in discs)
        rows = max(_weight(h).shape[0] for h in heads)
        self.head = StackedLinear.of(heads, rows)

    def forward(self, x: Tensor) -> Tensor:
        if not self.conv:
            return self.head(self.body(x * self.input_scale))
        k, n = x.shape[:2]
        h = self.body(x.transpose(0, 1).reshape(n, -1, *x.shape[-2:]))  # (N, K * C, S, S) -> (N, K * F)
        return self.head(h.view(n, k, -1).transpose(0, 1))


# --- optimiser ----------------------------------------------------------------------------------


class StackedAdam(torch.optim.Optimizer):
    """Adam (torch's single-tensor update, step for step) with one learning rate per run:
    `lrs` (K,) scales the update of slice k of every parameter (runs of one stack may be tuned to
    different learning rates)."""

    def __init__(self, params, lrs: Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"betas": betas, "eps": eps})
        self.lrs = lrs.detach().clone()

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avg, exp_avg_sq, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                exp_avg.lerp_(p.grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / (1 - beta2**t) ** 0.5).add_(group["eps"])
                lr = self.lrs.to(p.device).view(-1, *[1] * (p.dim() - 1)) / (1 - beta1**t)
                p.sub_(lr * exp_avg / denom)
        return loss
