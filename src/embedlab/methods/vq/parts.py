"""The trained parts of one vq training seed and how they are rebuilt: shared by the train stage
(method.py) and the scoring (scoring.py), which import it and never each other.

The tokenizer is given (models/tokenizer, methods/vq/given.py); a seed folder holds the two
priors and a config.json with every part's constructor arguments, the tokenizer's included, and
the id of the tokenizer weights the priors were trained on (`tokenizer_sha256`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from embedlab.evaluation.samples import weights_id
from embedlab.io import load_weights
from embedlab.methods.vq.ar import ARPrior
from embedlab.methods.vq.prior import ResGenPrior
from embedlab.methods.vq.tokenizer import RVQTokenizer
from embedlab.paths import Paths

NAME = "vq"
PRIMARY_METRIC = "published.psnr"  # the one tokenizer's test PSNR at full depth (every seed shares it)


def build_priors(config: dict, codebooks: torch.Tensor | None = None):
    """(resgen, ar) from a seed's config; ResGen predicts in the tokenizer's codebook space."""
    t = config["tokenizer"]
    if codebooks is None:
        codebooks = torch.zeros(t["num_quantizers"], t["codebook_size"], t["latent_dim"])
    return ResGenPrior(codebooks, **config["resgen"]), ARPrior(**config["ar"])


def load_priors(model_dir: Path, tokenizer, device="cpu"):
    """(resgen, ar, config) of a seed folder (or a bundle), eval mode (ar None where the AR baseline
    was not trained: `vq.ar_baseline`); refuses priors trained on other tokenizer weights than
    `tokenizer`'s."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("tokenizer_sha256") not in (None, weights_id(tokenizer)):
        raise ValueError(f"{model_dir}: its priors were trained on other tokenizer weights; rerun train@vq")
    resgen, ar = (load_weights(m, model_dir / f"{n}.safetensors", device).requires_grad_(False)
                  if n == "resgen" or (model_dir / f"{n}.safetensors").exists() else None
                  for n, m in zip(("resgen", "ar"), build_priors(config)))
    return resgen, ar, config


def prior_kinds(ar_baseline: bool) -> tuple[str, ...]:
    """The priors a run trains: ResGen always, the AR baseline with `vq.ar_baseline`."""
    return ("resgen", "ar") if ar_baseline else ("resgen",)


def load_parts(model_dir: Path, device="cpu", tokenizer_dir: Path | None = None):
    """(tokenizer, resgen, ar, config), eval mode, from a bundle that holds all three, or from a
    seed folder of models/vq with the given tokenizer's folder (`tokenizer_dir`, models/tokenizer)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    weights = Path(tokenizer_dir or model_dir) / "tokenizer.safetensors"
    tokenizer = load_weights(RVQTokenizer(**config["tokenizer"]), weights, device).requires_grad_(False)
    return (tokenizer, *load_priors(model_dir, tokenizer, device))


@torch.no_grad()
def tokenize_all(tokenizer, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    tokenizer.eval()
    return torch.cat([tokenizer.tokenize(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def seed_dir(paths: Paths, seed: int) -> Path:
    return paths.model_dir(NAME) / f"seed{seed}"


def tokenizer_dir(paths: Paths) -> Path:
    """The given tokenizer every seed's priors read (methods/vq/given.py writes it)."""
    return paths.model_dir("tokenizer")
