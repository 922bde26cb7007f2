"""Image sizes a model can take, checked before any work (issue 31).

Each model's networks are built at the prepared images' size and channels and run once on a
zero batch, on the CPU: whatever an architecture cannot take (the conv GAN needs a power of two,
the federated CNN a multiple of 4, the tokenizer a multiple of its downsampling) fails here, as
a ParamsError that names `data.image_size`, instead of in a worker after the stage has started.
The rule lives with each network (its constructor or its forward); nothing is restated here.
Only refuses: no number a stage writes depends on this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from embedlab.params import Params, ParamsError


def _probe(name: str, params: Params, size: int, channels: int, num_classes: int) -> None:
    x = torch.zeros(2, channels, size, size)
    if name == "gan":
        from embedlab.methods.gan.parts import build_generator, disc_factory, gen_config

        gen = build_generator(gen_config(params, "digits", size, channels)).eval()
        disc_factory(params, "digits", size, channels)("scalar").eval()(gen(torch.zeros(2, gen.z_dim)))
    elif name == "federated":
        from embedlab.methods.federated.engine import build_model

        f = params.federated.feature_shift
        build_model({"kind": "cnn", "image_size": size, "num_classes": num_classes, "width": f.width,
                     "embedding_dim": f.embedding_dim, "channels": channels}, 1).eval()(x[None])
    elif name in ("vq", "tokenizer"):
        from embedlab.methods.vq.given import tokenizer_config
        from embedlab.methods.vq.tokenizer import RVQTokenizer

        RVQTokenizer(**tokenizer_config(params.vq.tokenizer, size, channels)).eval()(x)
    elif name in ("diffusion", "ddpm"):
        from embedlab.methods.diffusion.given import build_unet

        build_unet(params.diffusion.ddpm, 0, channels).eval()(x, torch.zeros(2, dtype=torch.long))


def check_image_size(name: str, params: Params, prepared: Path) -> None:
    """Refuse, before any work, a prepared image size that `name`'s networks cannot take."""
    meta_path = Path(prepared) / "meta.json"
    images = Path(prepared) / "images.npy"
    if not meta_path.exists() or not images.exists():
        return  # the stage itself says what is missing
    import numpy as np

    meta = json.loads(meta_path.read_text())
    size, channels = int(meta["image_size"]), int(np.load(images, mmap_mode="r").shape[1])
    try:
        with torch.no_grad():
            _probe(name, params, size, channels, int(meta.get("num_classes") or 10))
    except (ValueError, RuntimeError) as exc:
        raise ParamsError(f"data.image_size: {size}: {name}'s networks cannot take {size}x{size} images "
                          f"({str(exc).splitlines()[0][:200]}); choose another data.image_size "
                          "(8, 16, 32 and 64 run through every model)") from None
