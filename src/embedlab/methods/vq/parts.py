"""The trained parts of one vq training seed and how they are rebuilt: shared by the train stage
(method.py) and the scoring (scoring.py), which import it and never each other."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from embedlab.io import load_weights
from embedlab.paths import Paths

NAME = "vq"
PRIMARY_METRIC = "published.psnr"  # the published seed's tokenizer, test PSNR at full depth


def build_parts(config: dict, codebooks: torch.Tensor | None = None):
    from embedlab.methods.vq.ar import ARPrior
    from embedlab.methods.vq.prior import ResGenPrior
    from embedlab.methods.vq.tokenizer import RVQTokenizer

    tokenizer = RVQTokenizer(**config["tokenizer"])
    t = config["tokenizer"]
    if codebooks is None:
        codebooks = torch.zeros(t["num_quantizers"], t["codebook_size"], t["latent_dim"])
    return tokenizer, ResGenPrior(codebooks, **config["resgen"]), ARPrior(**config["ar"])


def load_parts(model_dir: Path, device="cpu"):
    """(tokenizer, resgen, ar, config) from models/vq/, eval mode."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    tokenizer, resgen, ar = build_parts(config)
    parts = [load_weights(m, Path(model_dir) / f"{n}.safetensors", device).requires_grad_(False) for n, m in
             (("tokenizer", tokenizer), ("resgen", resgen), ("ar", ar))]
    return (*parts, config)


@torch.no_grad()
def tokenize_all(tokenizer, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    tokenizer.eval()
    return torch.cat([tokenizer.tokenize(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def seed_dir(paths: Paths, seed: int) -> Path:
    return paths.model_dir(NAME) / f"seed{seed}"
