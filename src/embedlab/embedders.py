"""Frozen embedders: a given network that maps images (B, C, S, S) to vectors (B, d), shared by
whatever classifies or augments in an embedding space (federated's linear heads and GGEUR).

Two sources (`federated.embedding.source`):
  vq        the given tokenizer's encoder, its latent grid flattened (continuous, before
            quantisation): trained on images alone, so no label shaped it (models/tokenizer)
  backbone  the supervised classifier's penultimate features (models/backbone)

A method package reads an embedder through this module, never through another method's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from embedlab.classifiers.nets import build_classifier
from embedlab.io import load_weights
from embedlab.methods.vq.given import build_tokenizer


@dataclass(frozen=True)
class Source:
    model: str  # models/<model>/ holds it
    weights: str  # its weights file there, beside config.json
    hint: str  # how to make it when it is missing


SOURCES = {
    "vq": Source("tokenizer", "tokenizer.safetensors", "train it once: embedlab pretrain tokenizer"),
    "backbone": Source("backbone", "model.safetensors", "dvc repro reference@backbone"),
}


class FrozenEmbedding(torch.nn.Module):
    """images (B, C, S, S) -> embeddings (B, d): the vq tokenizer's encoder with its latent grid
    flattened (continuous, before quantisation), or the backbone classifier's features."""

    def __init__(self, source: str, net: torch.nn.Module):
        super().__init__()
        self.source, self.net = source, net.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(x).flatten(1) if self.source == "vq" else self.net.features(x)


def build_embedding(source: str, config: dict, weights: Path, device="cpu") -> FrozenEmbedding:
    """The frozen embedder of `source` from its config.json (as a dict) and weights file."""
    if source not in SOURCES:
        raise ValueError(f"unknown embedding source {source!r}; known: {', '.join(SOURCES)}")
    if source == "backbone":
        return FrozenEmbedding(source, load_weights(build_classifier(config["arch"], **config["kwargs"]), weights, device))
    # Bundles published before the tokenizer had its own stage carry a vq seed's whole config.
    return FrozenEmbedding(source, build_tokenizer(config.get("tokenizer", config), weights, device))
