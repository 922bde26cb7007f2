"""What a GAN job is: a benchmark, an arm, a seed and the arm's tuned hyperparameter; and
everything a benchmark fixes (networks, data, loop settings). Imported by training, scoring
and the stage functions alike; it imports none of them.

Benchmarks (each arm x seed is one job, iteration-matched within a benchmark):
  ring, grid      2-D mixtures, MLP nets                        (params gan.toy)
  stacked_weak    stacked digits, weakened D: where collapse shows (params gan.image)
  stacked_full    stacked digits, full-capacity D
  digits          plain digits, for sample quality
The stacked two run only with `gan.image.stacked` (the paper preset; docs/methods/gan.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from embedlab.io import load_weights
from embedlab.methods.gan.arms import LoopConfig
from embedlab.methods.gan.modes import grid_modes, ring_modes, sample_mixture, stack_digits
from embedlab.methods.gan.nets import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator
from embedlab.params import Params, ParamsError

NAME = "gan"
# The published MEE generator's confident modes covered: stacked_weak (1,000 modes) with
# gan.image.stacked, plain digits (10 modes) without; metrics["published"] names which.
PRIMARY_METRIC = "published.modes_covered"
TOY = ("ring", "grid")
IMAGE = ("stacked_weak", "stacked_full", "digits")
STACKED = ("stacked_weak", "stacked_full")
# Where each benchmark's hyperparameters are tuned (on the selection seed).
TUNED_ON = {"ring": "ring", "grid": "grid", "stacked_weak": "stacked_weak", "stacked_full": "stacked_weak",
            "digits": "stacked_weak"}
LR_KEYS = ("lr_scale",)  # tuning keys that scale the benchmark's lr rather than set a loss weight
NOT_RUN = "not run: gan.image.stacked is false (the paper preset runs it: make run-paper)"
TOY_NOT_RUN = ("not run: gan.toy.run is false (the paper preset runs it: make run-paper). At the CPU default's "
               "1,500 steps neither mixture tested the claim (ring: maf covered all 8 modes on the selection "
               "seed; grid: maf and mee under 1 of 25 modes, no better than the untrained generator; metrics at "
               "f98a41e)")
DIGITS_CLAIM_NOT_RUN = ("not run: plain digits train mee alone (gan.image.compare_arms); the paper preset "
                        "trains dcgan and mee over gan.image.seeds [0, 1, 2] (make run-paper). At the CPU "
                        "default's 2,000 steps neither arm's digits passed the claim's readability gate (the "
                        "backbone's confident share, lowest of 3 seeds: dcgan 0.439, mee 0.386 < 0.5; commit 07b2584)")


def toy_benches(params: Params) -> tuple[str, ...]:
    """The 2-D mixtures this run trains: both with `gan.toy.run`, else none."""
    return TOY if params.gan.toy.run else ()


def image_benches(params: Params) -> tuple[str, ...]:
    """The image benchmarks this run trains: stacked digits only with `gan.image.stacked`."""
    return IMAGE if params.gan.image.stacked else ("digits",)


def tuned_benches(params: Params) -> tuple[str, ...]:
    """Where tuning runs. Without stacked digits the images are not tuned: every digits run
    takes its arm's params default (each tuning grid holds it), the same for every arm."""
    return toy_benches(params) + (("stacked_weak",) if params.gan.image.stacked else ())


def curves_bench(run_keys) -> str:
    """Whose loss curves are shown (plots, dvclive): stacked_weak where it ran (where collapse
    shows), else digits."""
    return "stacked_weak" if any(k.startswith("stacked_weak/") for k in run_keys) else "digits"


def published_run(params: Params) -> tuple[str, str]:
    """(benchmark, arm) of the registry's program: MEE's generator where collapse shows
    (stacked_weak) when stacked digits run, else MEE's plain-digit generator."""
    return ("stacked_weak" if params.gan.image.stacked else "digits"), "mee"


@dataclass(frozen=True)
class Job:
    bench: str  # one of TOY + IMAGE
    arm: str
    seed: int
    value: float | None = None  # the arm's tuned hyperparameter (params gan.tuning.<arm>); None: default
    selection: bool = False  # a tuning run on the selection seed: scored for the choice, not reported

    @property
    def key(self) -> str:
        if self.selection:
            return f"select/{self.bench}/{self.arm}/{self.value:g}"
        return f"{self.bench}/{self.arm}/seed{self.seed}"

    @property
    def weights(self) -> str:
        # Flat, distinct file names: the registry bundle logs files side by side.
        return f"generators/{self.bench}-{self.arm.replace('+', '_')}-seed{self.seed}.safetensors"


def image_channels(bench: str, channels: int) -> int:
    """A benchmark's image channels: plain digits are the prepared images as they are (grey or
    colour, `channels`); stacked digits are three grey digits, one per channel."""
    return channels if bench == "digits" else 3


def check_stacked(params: Params, channels: int) -> None:
    """Stacked digits stack three grey images into three channels: defined for grey data only."""
    if params.gan.image.stacked and channels != 1:
        raise ParamsError(
            f"gan.image.stacked: true stacks three grey images into the three channels of one, but the "
            f"prepared images have {channels} channels. Set gan.image.stacked: false (plain images only) "
            "or data.channels: 1 (grey versions of the images)")


def gen_config(params: Params, bench: str, image_size: int, channels: int = 1) -> dict:
    """Constructor arguments of a benchmark's generator (stored with its weights); `channels`:
    the prepared images' (what plain digits generate)."""
    if bench in TOY:
        t = params.gan.toy
        return {"kind": "mlp", "z_dim": t.z_dim, "out_dim": 2, "hidden": t.hidden, "layers": t.layers}
    i = params.gan.image
    return {"kind": "conv", "z_dim": i.z_dim, "image_size": image_size,
            "channels": image_channels(bench, channels), "width": i.gen_width}


def build_generator(config: dict) -> torch.nn.Module:
    kwargs = {k: v for k, v in config.items() if k != "kind"}
    return MLPGenerator(**kwargs) if config["kind"] == "mlp" else ConvGenerator(**kwargs)


def restore_generator(params: Params, bench: str, image_size: int, state: dict, channels: int = 1) -> torch.nn.Module:
    """A generator of `bench` from the state dict a job returned, in eval mode."""
    gen = build_generator(gen_config(params, bench, image_size, channels))
    gen.load_state_dict(state)
    return gen.eval()


def untrained_generator(params: Params, bench: str, image_size: int, seed: int, channels: int = 1) -> torch.nn.Module:
    """The floor every benchmark reports: the generator as initialised, before any step."""
    torch.manual_seed(seed)
    return build_generator(gen_config(params, bench, image_size, channels)).eval()


def disc_factory(params: Params, bench: str, image_size: int, channels: int = 1):
    dim = params.gan.loss.embedding_dim
    if bench in TOY:
        t = params.gan.toy
        return lambda head: MLPDiscriminator(2, t.hidden, t.layers, head, dim, t.input_scale)
    i = params.gan.image
    width = i.weak_disc_width if bench == "stacked_weak" else i.disc_width
    return lambda head: ConvDiscriminator(image_size, image_channels(bench, channels), width, head, dim)


def loop_config(params: Params, bench: str, arm: str | None = None, value: float | None = None):
    """The training loop's settings for `bench`, with `arm`'s tuned hyperparameter set to `value`."""
    loss = params.gan.loss
    s = params.gan.toy if bench in TOY else params.gan.image
    image_aug = {} if bench in TOY else {"aug_shift": s.aug_shift, "aug_degrees": s.aug_degrees}
    cfg = LoopConfig(
        steps=s.steps, batch_size=s.batch_size, lr=s.lr, betas=tuple(s.betas), maf_form=loss.maf_form,
        maf_scale=loss.maf_scale, lambda_dlle=loss.lambda_dlle, lambda_disomap=loss.lambda_disomap,
        disomap_distance=loss.disomap_distance, sigma=loss.sigma, sigma_ramp=int(loss.sigma_ramp * s.steps),
        buffer_size=loss.buffer_size, aug_noise=s.aug_noise, **image_aug,
    )
    if arm is None or value is None:
        return cfg
    key = params.gan.tuning.key(arm)
    return replace(cfg, lr=cfg.lr * value) if key in LR_KEYS else replace(cfg, **{key: value})


def mixture(params: Params, bench: str) -> tuple[torch.Tensor, float]:
    """(centres, std) of a 2-D benchmark."""
    t = params.gan.toy
    if bench == "ring":
        return ring_modes(8, t.ring_radius), t.ring_std
    return grid_modes(5, t.grid_spacing), t.grid_std


def real_sampler(params: Params, bench: str, images: torch.Tensor, labels: torch.Tensor):
    """(n, torch.Generator) -> a batch of real data for `bench`, on the images' device."""
    if bench in TOY:
        centres, std = mixture(params, bench)
        return lambda n, g: sample_mixture(centres, std, n, g).to(images.device)
    if bench == "digits":
        return lambda n, g: images[torch.randint(len(images), (n,), generator=g).to(images.device)]
    return lambda n, g: stack_digits(images, labels, n, g)[0]


def load_generator(model_dir: Path, bench: str, arm: str, seed: int, device="cpu") -> torch.nn.Module:
    """A trained generator from models/gan/ (or a folder from `registry.download_bundle`),
    eval mode, grads off."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    gen = build_generator(config["generators"][bench])
    path = model_dir / Job(bench, arm, seed).weights
    if not path.exists() and (model_dir / path.name).exists():  # a registry bundle keeps files flat
        path = model_dir / path.name
    if not path.exists():
        raise FileNotFoundError(f"{path}: no generator for {bench}/{arm}/seed{seed}; run `dvc repro train@gan`")
    return load_weights(gen, path, device).requires_grad_(False).eval()
