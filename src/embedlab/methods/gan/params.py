"""The `gan` section of params.yaml (`SCHEMA`): the Params model takes it from here, by the
MODELS entry (embedlab.params.method_schemas)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from embedlab.sections import PositiveFloats, Section

GANArm = Literal["dcgan", "maf", "maf+disomap", "maf+disomap+dlle", "mee"]
ALL_GAN_ARMS = ["dcgan", "maf", "maf+disomap", "maf+disomap+dlle", "mee"]


class GANLossParams(Section):
    """MaF / MEE terms, shared by every benchmark."""

    embedding_dim: int = Field(16, ge=1, le=1024)  # m, the embedding discriminator's output
    maf_form: Literal["linear", "nonsaturating"] = "nonsaturating"
    maf_scale: float = Field(16.0, gt=0.0, le=1000.0)  # nonsaturating form: softplus(scale * mean_k D_k)
    lambda_dlle: float = Field(0.1, ge=0.0, le=1000.0)
    lambda_disomap: float = Field(1.0, ge=0.0, le=1000.0)
    disomap_distance: Literal["mse", "cosine"] = "mse"
    sigma: float = Field(1.0, ge=0.0, le=100.0)  # the entropy weight (MEE's released default); mee tunes it
    sigma_ramp: float = Field(0.25, ge=0.0, le=1.0)  # share of the steps over which sigma ramps up
    buffer_size: int = Field(1024, ge=1, le=1_000_000)


TUNABLE = Literal["lr_scale", "sigma", "lambda_dlle", "lambda_disomap"]


class GANTune(Section):
    """One arm's tuning: `key` takes each of `values` on the selection seed; the benchmark's
    mode count (the backbone's, for images) picks one. `lr_scale` multiplies the benchmark's lr."""

    key: TUNABLE
    values: PositiveFloats = Field(min_length=1)



class GANTuningParams(Section):
    """The same budget for every arm: one hyperparameter each, the same number of values."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    dcgan: GANTune = GANTune(key="lr_scale", values=[0.5, 1.0, 2.0])
    maf: GANTune = GANTune(key="lr_scale", values=[0.5, 1.0, 2.0])
    maf_disomap: GANTune = Field(GANTune(key="lambda_disomap", values=[0.3, 1.0, 3.0]), alias="maf+disomap")
    maf_disomap_dlle: GANTune = Field(GANTune(key="lambda_dlle", values=[0.01, 0.1, 1.0]), alias="maf+disomap+dlle")
    mee: GANTune = GANTune(key="sigma", values=[0.1, 0.3, 1.0])

    def of(self, arm: str) -> GANTune:
        return getattr(self, arm.replace("+", "_"))

    def key(self, arm: str) -> str:
        return self.of(arm).key

    @model_validator(mode="after")
    def _same_budget(self):
        sizes = {arm: len(self.of(arm).values) for arm in ALL_GAN_ARMS}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"every arm needs the same number of tuning values (the same budget), got {sizes}")
        return self


class GANToyParams(Section):
    """The 2-D mixtures: a ring of 8 and a 5 x 5 grid of Gaussians, MLP nets."""

    # Off in the CPU default: at its 1,500 steps neither mixture tested MEE's claim (ring: MaF
    # covered all 8 modes on the selection seed, no room; grid: MaF and MEE under 1 of 25, no
    # better than the untrained generator; metrics at f98a41e), for ~176 of train@gan's 317 s
    # on 2 cores (AVX2 host). The paper preset runs them (params/paper.yaml, `make run-paper`).
    run: bool = False
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)  # the paper preset: 5
    arms: list[GANArm] = Field(default_factory=lambda: list(ALL_GAN_ARMS), min_length=1)
    steps: int = Field(1500, ge=1, le=10_000_000)
    batch_size: int = Field(128, ge=2, le=65536)
    hidden: int = Field(64, ge=4, le=4096)
    layers: int = Field(3, ge=1, le=16)
    z_dim: int = Field(8, ge=1, le=1024)
    input_scale: float = Field(1.0, gt=0.0, le=1000.0)
    lr: float = Field(5e-4, gt=0.0, le=1.0)
    betas: tuple[float, float] = (0.5, 0.999)
    ring_radius: float = Field(2.0, gt=0.0)
    ring_std: float = Field(0.1, gt=0.0)
    grid_spacing: float = Field(2.0, gt=0.0)
    grid_std: float = Field(0.1, gt=0.0)
    aug_noise: float = Field(0.01, ge=0.0)  # DLLE's "mild augmentation" of a point
    eval_samples: int = Field(2500, ge=1, le=10_000_000)
    selection_seed: int = Field(100, ge=0)  # the sigma sweep's runs: not one of the reported seeds


class GANImageParams(Section):
    """Plain digits and, with `stacked`, stacked digits (weakened and full-capacity D), conv nets."""

    # Stacked digits (tuning on stacked_weak, the stacked_weak and stacked_full runs) cost ~20 of
    # the ~28 train@gan minutes on a 2-core CPU and give noise-like samples at this budget: the
    # paper preset runs them (params/paper.yaml, `make run-paper`). False: plain digits alone,
    # every arm at its params default, and the published generator is MEE's plain-digit one.
    stacked: bool = False
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # the paper preset: [0, 1, 2]
    arms: list[GANArm] = Field(default_factory=lambda: list(ALL_GAN_ARMS), min_length=1)  # weakened-D stacked
    compare_arms: list[GANArm] = Field(default_factory=lambda: ["mee"], min_length=1)  # full D, digits (paper: dcgan, maf, mee)
    full_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # full-capacity stacked (a reference)
    selection_seed: int = Field(100, ge=0)  # the sigma sweep's run: not one of the reported seeds
    steps: int = Field(2000, ge=1, le=10_000_000)
    batch_size: int = Field(64, ge=2, le=65536)
    z_dim: int = Field(32, ge=1, le=1024)
    gen_width: int = Field(16, ge=1, le=1024)
    disc_width: int = Field(16, ge=1, le=1024)  # full capacity
    weak_disc_width: int = Field(8, ge=1, le=1024)  # the weakened D (PacGAN / VEEGAN protocol)
    lr: float = Field(2e-4, gt=0.0, le=1.0)
    betas: tuple[float, float] = (0.5, 0.999)
    aug_shift: float = Field(1.0, ge=0.0, le=8.0)
    aug_degrees: float = Field(10.0, ge=0.0, le=45.0)
    aug_noise: float = Field(0.05, ge=0.0, le=1.0)
    eval_samples: int = Field(10_000, ge=10, le=10_000_000)  # stacked samples per generator (1,000 modes)
    fd_samples: int = Field(2000, ge=2, le=10_000_000)  # plain-digit samples per generator for the FD


class GANParams(Section):
    loss: GANLossParams = GANLossParams()
    tuning: GANTuningParams = GANTuningParams()
    toy: GANToyParams = GANToyParams()
    image: GANImageParams = GANImageParams()
    workers: int = Field(2, ge=1, le=64)  # CPU processes, one thread each (small nets: faster than threads)


SCHEMA = GANParams
