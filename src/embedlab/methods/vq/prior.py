"""ResGen-style masked prior over residual-VQ tokens (Kim et al., ICML 2025).

Tokens are (L positions x D depths). Instead of one categorical per token, the network predicts,
per position, a mixture of Gaussians over R^C for the SUM of the code vectors of all masked depths
there; a greedy residual quantiser turns a sample of that sum back into codes. One network call
fills every masked depth at once, so sampling takes S calls whatever D is.

Masking order (training and sampling share one rule, `unmask`): within a position, masked depths
are always a suffix (finer depths are masked first, unmasked last); across positions, a whole
depth is unmasked everywhere before the next finer one starts, ordered by a per-position score
(random priority in training, MoG confidence in sampling). So masked counts at any moment differ
by at most one between positions, in training exactly as in sampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from embedlab.methods.vq.tokenizer import evaluating, greedy_codes

# Hard bounds on predicted log-scales, in units of the target's expected RMS (`target_scale`):
# the lower one keeps the density finite when a target is predicted exactly; the upper one
# keeps early samples sane.
LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 3.0


# --- transformer (shared with the AR baseline in ar.py, so the comparison is like for like) ---


class KVCache:
    """Keys and values of every layer for incremental decoding; allocated on first write."""

    def __init__(self, layers: int):
        self.kv: list[Tensor | None] = [None] * layers
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
        if self.kv[layer] is None:
            self.kv[layer] = k.new_empty(2, *k.shape[:2], max_len, k.shape[-1])
        end = self.length + k.shape[-2]
        buf = self.kv[layer]
        buf[0, :, :, self.length : end], buf[1, :, :, self.length : end] = k, v
        return buf[0, :, :, :end], buf[1, :, :, :end]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x, causal=False, cache: KVCache | None = None, layer=0, max_len=0):
        q, k, v = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if cache is not None:
            # SDPA aligns its causal mask top-left, which is only right for a fresh cache
            # or a single new query (that may see every cached key anyway).
            assert cache.length == 0 or q.shape[-2] == 1, "extend a non-empty cache one token at a time"
            k, v = cache.update(layer, k, v, max_len)
        # No dropout on attention weights: on CPU it pushes SDPA off its fused kernel onto the
        # math path, which doubled the AR prior's step time (measured); dropout stays in the MLPs.
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal and q.shape[-2] > 1)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class Transformer(nn.Module):
    """Pre-norm transformer; bidirectional by default, causal with an optional KV cache."""

    def __init__(self, dim: int, layers: int = 4, heads: int = 4, dropout: float = 0.1, ff_mult: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([
                nn.LayerNorm(dim),
                Attention(dim, heads),
                nn.LayerNorm(dim),
                nn.Sequential(nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Linear(dim * ff_mult, dim)),
            ])
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        # Dropout on each residual branch's output (GPT-2's resid_pdrop), not on the 4x wider
        # MLP hidden: drawing that mask cost 0.8 s of a 1.9 s AR training step on CPU (measured).
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, causal: bool = False, cache: KVCache | None = None, max_len: int = 0) -> Tensor:
        for i, (norm_attn, attn, norm_ff, ff) in enumerate(self.layers):
            x = x + self.drop(attn(norm_attn(x), causal=causal, cache=cache, layer=i, max_len=max_len))
            x = x + self.drop(ff(norm_ff(x)))
        if cache is not None:
            cache.length += x.shape[1]
        return self.norm(x)


# --- mixture of Gaussians, masking order, residual quantiser ---


def mog_nll(logits: Tensor, means: Tensor, log_scales: Tensor, target: Tensor) -> Tensor:
    """-log p(target) in nats under a diagonal Gaussian mixture.
    logits (..., M), means / log_scales (..., M, C), target (..., C) -> (...)."""
    z = (target.unsqueeze(-2) - means) * torch.exp(-log_scales)
    component = -0.5 * z.pow(2).sum(-1) - log_scales.sum(-1) - 0.5 * target.shape[-1] * math.log(2 * math.pi)
    return -torch.logsumexp(component + logits.log_softmax(-1), dim=-1)


def masked_depths(counts: Tensor, depth: int) -> Tensor:
    """(B, L) counts -> (B, L, D) bool, True where a depth is masked."""
    return torch.arange(depth, device=counts.device) >= (depth - counts).unsqueeze(-1)


def unmask(counts: Tensor, scores: Tensor, num_unmasked: Tensor | int, depth: int) -> Tensor:
    """New masked counts (B, L) after unmasking `num_unmasked` tokens in total (already
    unmasked ones included): coarsest masked depth first, higher `scores` (B, L) first within
    a depth. Already-unmasked tokens stay unmasked, and each position's masked depths stay a
    suffix. counts (B, L) in 0..D: depths D-m..D-1 are masked."""
    length = counts.shape[1]
    depths = torch.arange(depth, device=counts.device)
    masked = masked_depths(counts, depth)
    position_rank = scores.argsort(dim=-1, descending=True).argsort(dim=-1)  # 0 = highest score
    key = torch.where(masked, depths * length + position_rank.unsqueeze(-1), -1)
    order = rearrange(key, "b l d -> b (l d)").argsort(dim=-1, stable=True).argsort(dim=-1)
    num_unmasked = torch.as_tensor(num_unmasked, device=counts.device).reshape(-1, 1)
    still_masked = rearrange(order >= num_unmasked, "b (l d) -> b l d", l=length)
    return still_masked.sum(-1)


def mask_counts(ratio: Tensor, num_positions: int, depth: int, priority: Tensor | None = None) -> Tensor:
    """Masked counts (B, L) for mask ratios (B,): round(ratio * L * D) tokens masked per sample,
    finest depth first across positions, lowest `priority` (B, L) (random if None) first within a
    depth. For a fixed priority a higher ratio masks a superset of a lower one's tokens."""
    batch = ratio.shape[0]
    total = num_positions * depth
    if priority is None:
        priority = torch.rand(batch, num_positions, device=ratio.device)
    num_masked = (ratio * total).round().long().clamp(0, total)
    full = torch.full((batch, num_positions), depth, device=ratio.device, dtype=torch.long)
    return unmask(full, priority, total - num_masked, depth)


def greedy_residual_quantize(target: Tensor, masked: Tensor, codebooks: Tensor) -> Tensor:
    """Quantise target (..., C) into the masked depths (..., D) of codebooks (D, K, C): coarsest
    masked depth first, nearest code, subtract, go finer (the tokenizer's `greedy_codes`).
    Unmasked depths get index 0."""
    with torch.autocast(target.device.type, enabled=False):  # bf16 distances pick wrong codes
        return greedy_codes(target, codebooks, masked)[0]


def unmasked_schedule(total: int, steps: int) -> list[int]:
    """Tokens unmasked after each step: total * (1 - cos(pi/2 * s/S)), at least one more per
    step, all at the last."""
    counts, prev = [], 0
    for s in range(1, steps + 1):
        n = total if s == steps else min(total, max(prev + 1, int(total * (1 - math.cos(math.pi / 2 * s / steps)))))
        counts.append(prev := n)
    return counts


# --- the prior ---


class ResGenPrior(nn.Module):
    def __init__(
        self,
        codebooks: Tensor,
        num_positions: int = 16,
        num_classes: int = 10,
        width: int = 128,
        layers: int = 4,
        heads: int = 4,
        mixtures: int = 8,
        dropout: float = 0.1,
        class_dropout: float = 0.1,
    ):
        super().__init__()
        self.register_buffer("codebooks", codebooks.detach().float().clone())  # frozen: the tokenizer owns them
        self.depth, self.codebook_size, self.code_dim = codebooks.shape
        self.num_positions, self.num_classes, self.mixtures = num_positions, num_classes, mixtures
        self.class_dropout = class_dropout

        self.class_emb = nn.Embedding(num_classes + 1, width)  # index num_classes = null class
        self.known_proj = nn.Linear(self.code_dim, width)
        self.mask_emb = nn.Embedding(self.depth + 1, width)  # how many depths are masked: 0..D
        # +1 for the class token. N(0, 1) like the embeddings it is added to: at 0.02 the positions
        # start nearly identical, which visibly slowed learning a synthetic (class, position) lookup.
        self.pos_emb = nn.Parameter(torch.randn(num_positions + 1, width))
        self.transformer = Transformer(width, layers, heads, dropout)
        self.to_mog = nn.Linear(width, mixtures * (1 + 2 * self.code_dim))
        self.calls = 0

    @property
    def scale(self) -> Tensor:
        # Sums are seen and predicted in units of the coarsest codebook's RMS, so one init and
        # one log-scale clamp suit any tokenizer's latent scale.
        return self.codebooks[0].pow(2).mean().sqrt().clamp_min(1e-6)

    def target_scale(self, counts: Tensor) -> Tensor:
        """(B, L) masked counts -> (B, L, 1): the expected RMS (per dimension) of the sum of the
        last `count` depths' codes, from the codebooks alone (codes used uniformly, depths
        independent). Targets are predicted in these units: with one shared unit, a position
        missing only its finest depth has a target ~100x smaller than one missing all of them,
        its NLL gradients (~1/sigma) swamp the rest, and the prior learned to ignore the class
        (measured: class accuracy 0.09, chance 0.10). ResGen's density is unchanged by this
        per-count change of units; only the optimisation is."""
        power = self.codebooks.pow(2).mean(dim=(1, 2))  # (D,) mean square per dimension, per depth
        tail = power.flip(0).cumsum(0)  # tail[m - 1]: the last m depths together
        table = torch.cat([power.new_ones(1), tail.clamp_min(1e-12).sqrt()])
        return table[counts].unsqueeze(-1)

    def code_vectors(self, indices: Tensor) -> Tensor:
        """(B, L, D) indices -> (B, L, D, C) code vectors."""
        return self.codebooks[torch.arange(self.depth, device=indices.device), indices]

    def forward(self, known: Tensor, counts: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """known (B, L, C): normalised sum of unmasked codes; counts (B, L) masked depths;
        labels (B,) with num_classes = null -> MoG logits (B, L, M), means and log-scales (B, L, M, C)."""
        self.calls += 1
        tokens = self.known_proj(known) + self.mask_emb(counts)
        x = torch.cat([self.class_emb(labels).unsqueeze(1), tokens], dim=1) + self.pos_emb
        h = self.to_mog(self.transformer(x)[:, 1:]).float()  # the NLL wants fp32 even under autocast
        logits, params = h[..., : self.mixtures], h[..., self.mixtures :]
        means, log_scales = rearrange(params, "b l (two m c) -> two b l m c", two=2, m=self.mixtures)
        return logits, means, log_scales.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)

    def loss(self, indices: Tensor, labels: Tensor) -> Tensor:
        """Mean MoG NLL of the masked sum, in nats per latent dimension (total / C), over
        positions with at least one masked depth; targets in units of `target_scale`."""
        batch = indices.shape[0]
        if self.training and self.class_dropout > 0:
            drop = torch.rand(batch, device=labels.device) < self.class_dropout
            labels = labels.masked_fill(drop, self.num_classes)
        ratio = torch.cos(math.pi / 2 * torch.rand(batch, device=indices.device))
        total = self.num_positions * self.depth
        ratio = ratio.clamp_min(1 / total)  # at least one masked token, else nothing to learn
        counts = mask_counts(ratio, self.num_positions, self.depth)
        masked = masked_depths(counts, self.depth).unsqueeze(-1)
        codes = self.code_vectors(indices)
        known = (codes * ~masked).sum(2) / self.scale
        target = (codes * masked).sum(2) / self.target_scale(counts)
        nll = mog_nll(*self(known, counts, labels), target)
        weight = (counts > 0).float()
        return (nll * weight).sum() / weight.sum() / self.code_dim

    @torch.no_grad()
    def sample(self, labels: Tensor, steps: int = 8, guidance: float = 2.0, temperature: float = 1.0,
               residual_quantize: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
        """labels (B,) -> indices (B, L, D), in exactly `steps` network calls.

        Guidance mixes conditional (c) and null-class (u) outputs of one doubled-batch call as
        u + g * (c - u) on both the component means and the mixture logits (g = 1: plain
        conditional); the log-scales are the conditional ones, times `temperature`.
        `residual_quantize(target (B, L, C), masked (B, L, D)) -> (B, L, D)` defaults to
        `greedy_residual_quantize` with this prior's codebooks (target in raw latent units)."""
        with evaluating(self):
            return self._sample(labels, steps, guidance, temperature, residual_quantize)

    def _sample(self, labels: Tensor, steps: int, guidance: float, temperature: float, residual_quantize) -> Tensor:
        quantize = residual_quantize or (lambda t, m: greedy_residual_quantize(t, m, self.codebooks))
        batch, length, depth, device = labels.shape[0], self.num_positions, self.depth, self.codebooks.device
        labels = labels.to(device)
        both = torch.cat([labels, torch.full_like(labels, self.num_classes)])
        counts = torch.full((batch, length), depth, dtype=torch.long, device=device)
        indices = torch.zeros(batch, length, depth, dtype=torch.long, device=device)
        known = torch.zeros(batch, length, self.code_dim, device=device)
        for num_unmasked in unmasked_schedule(length * depth, steps):
            out = self(repeat(known, "b l c -> (two b) l c", two=2), counts.repeat(2, 1), both)
            (logit_c, logit_u), (mean_c, mean_u), (log_scale, _) = (t.chunk(2) for t in out)
            logits = logit_u + guidance * (logit_c - logit_u)
            means = mean_u + guidance * (mean_c - mean_u)
            log_scale = log_scale + math.log(max(temperature, 1e-6))

            gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp_min(1e-20)))
            component = (logits + gumbel).argmax(-1)  # a draw from the mixture weights, no host sync
            pick = component[..., None, None].expand(-1, -1, 1, self.code_dim)
            mean, scale = means.gather(2, pick).squeeze(2), log_scale.gather(2, pick).squeeze(2).exp()
            sample = mean + scale * torch.randn_like(mean)
            confidence = -mog_nll(logits, means, log_scale, sample)

            masked = masked_depths(counts, depth)
            proposal = quantize(sample * self.target_scale(counts), masked)
            indices = torch.where(masked, proposal, indices)
            counts = unmask(counts, confidence, num_unmasked, depth)
            known = (self.code_vectors(indices) * ~masked_depths(counts, depth).unsqueeze(-1)).sum(2) / self.scale
        return indices
