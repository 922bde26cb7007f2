"""Autoregressive baseline over residual-VQ tokens: one categorical per token, L * D of them in
sequence (position-major, depth-minor), so sampling costs L * D network calls and grows with D.

Same transformer as `ResGenPrior` (prior.Transformer), causal here, for a like-for-like cost.
Input slot i holds the class token (i = 0) or token i - 1, plus the position and depth
embeddings of token i, the one that slot predicts: the network always knows what it is asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from embedlab.methods.vq.prior import KVCache, Transformer
from embedlab.methods.vq.tokenizer import evaluating


class ARPrior(nn.Module):
    def __init__(
        self,
        num_positions: int = 16,
        depth: int = 8,
        codebook_size: int = 64,
        num_classes: int = 10,
        width: int = 128,
        layers: int = 4,
        heads: int = 4,
        dropout: float = 0.1,
        class_dropout: float = 0.1,
    ):
        super().__init__()
        self.num_positions, self.depth, self.codebook_size = num_positions, depth, codebook_size
        self.num_classes, self.class_dropout = num_classes, class_dropout
        self.num_layers = layers

        self.class_emb = nn.Embedding(num_classes + 1, width)  # index num_classes = null class
        self.token_emb = nn.Embedding(depth * codebook_size, width)  # each depth has its own codebook
        self.pos_emb = nn.Embedding(num_positions, width)
        self.depth_emb = nn.Embedding(depth, width)
        self.transformer = Transformer(width, layers, heads, dropout)
        self.to_logits = nn.Linear(width, codebook_size)
        self.calls = 0

    @property
    def seq_len(self) -> int:
        return self.num_positions * self.depth

    def forward(self, labels: Tensor, prefix: Tensor, cache: KVCache | None = None) -> Tensor:
        """labels (B,), prefix (B, n) flat tokens already chosen (n < L * D) -> logits (B, s, K)
        for slots `start..n`, i.e. for tokens start..n; start = 0, or what `cache` already holds."""
        self.calls += 1
        start, n = (cache.length if cache is not None else 0), prefix.shape[1]
        fed = torch.arange(max(start, 1), n + 1, device=prefix.device) - 1  # token fed into each slot
        x = self.token_emb(prefix[:, fed] + (fed % self.depth) * self.codebook_size)
        if start == 0:
            x = torch.cat([self.class_emb(labels).unsqueeze(1), x], dim=1)
        slots = torch.arange(start, n + 1, device=prefix.device)
        x = x + self.pos_emb(slots // self.depth) + self.depth_emb(slots % self.depth)
        return self.to_logits(self.transformer(x, causal=True, cache=cache, max_len=self.seq_len)).float()

    def loss(self, indices: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy over all L * D tokens, nats per token."""
        if self.training and self.class_dropout > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.class_dropout
            labels = labels.masked_fill(drop, self.num_classes)
        tokens = rearrange(indices, "b l d -> b (l d)")
        logits = self(labels, tokens[:, :-1])
        return F.cross_entropy(rearrange(logits, "b n k -> (b n) k"), rearrange(tokens, "b n -> (b n)"))

    @torch.no_grad()
    def sample(self, labels: Tensor, guidance: float = 2.0, temperature: float = 1.0) -> Tensor:
        """labels (B,) -> indices (B, L, D) in L * D calls, one new token each, with a KV cache.
        Guidance: logits u + g * (c - u) from one doubled-batch call (g = 1: plain conditional)."""
        with evaluating(self):
            return self._sample(labels, guidance, temperature)

    def _sample(self, labels: Tensor, guidance: float, temperature: float) -> Tensor:
        device = self.class_emb.weight.device
        labels = labels.to(device)
        batch = labels.shape[0]
        both = torch.cat([labels, torch.full_like(labels, self.num_classes)])
        cache = KVCache(self.num_layers)
        tokens = torch.zeros(2 * batch, self.seq_len, dtype=torch.long, device=device)
        for i in range(self.seq_len):
            cond, uncond = self(both, tokens[:, :i], cache)[:, -1].chunk(2)
            logits = uncond + guidance * (cond - uncond)
            if temperature > 0:
                token = torch.multinomial((logits / temperature).softmax(-1), 1).squeeze(-1)
            else:
                token = logits.argmax(-1)
            tokens[:, i] = token.repeat(2)
        return rearrange(tokens[:batch], "b (l d) -> b l d", d=self.depth)
