"""The `diffusion` section of params.yaml (`SCHEMA`): the Params model takes it from here, by the
MODELS entry (embedlab.params.method_schemas)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from embedlab.sections import Section


class DiffusionPPAPParams(Section):
    experts: int = Field(5, ge=1, le=1000)
    rank: int = Field(4, ge=1, le=1024)
    alpha: float = Field(8.0, gt=0.0, le=1e4)
    lr: float = Field(5e-3, gt=0.0, le=10.0)  # the reference: 1e-3 left experts for t >= 400 untrained
    steps: int = Field(600, ge=1, le=10_000_000)  # per expert
    batch_size: int = Field(64, ge=1, le=65536)  # the paper preset: 128
    kd_samples: int = Field(1024, ge=1, le=10_000_000)  # unlabelled DDPM samples, shared by the experts
    tau: float = Field(0.25, gt=0.0, le=100.0)


class DiffusionDDPMParams(Section):
    """The given unconditional DDPM PPAP guides (given.py, `embedlab pretrain ddpm`): trained once
    per data set, not per training seed. pretrain@ddpm reads this subsection alone (data aside);
    the cfg reference arm's conditional DDPM borrows its architecture and fit."""

    seed: int = Field(0, ge=0)
    timesteps: int = Field(1000, ge=2, le=100_000)
    schedule: Literal["linear", "cosine"] = "linear"
    channels: list[int] = Field(default_factory=lambda: [16, 32, 32], min_length=1)
    attention: bool = True
    lr: float = Field(2e-3, gt=0.0, le=10.0)
    batch_size: int = Field(128, ge=1, le=65536)
    steps: int = Field(6000, ge=1, le=10_000_000)
    ema_decay: float = Field(0.995, ge=0.0, lt=1.0)
    lr_decay: bool = False  # cosine decay of the DDPM's lr to 5% (else flat after warm-up)
    min_snr_gamma: float = Field(0.0, ge=0.0, le=1000.0)  # Min-SNR loss weighting; 0: plain eps MSE


class DiffusionParams(Section):
    # Training seeds: each retrains every part the PPAP claim compares (experts, baselines); the
    # DDPM (`ddpm`) is given, trained once.
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    cfg_seeds: list[int] = Field(default_factory=list)  # the cfg reference arm's conditional DDPM
    ddpm: DiffusionDDPMParams = DiffusionDDPMParams()
    label_dropout: float = Field(0.1, ge=0.0, lt=1.0)  # the conditional (cfg) DDPM
    ddim_steps: int = Field(20, ge=1, le=100_000)
    ddim_clip: bool = True  # clamp DDIM's x0 prediction each step (eps recomputed from it)
    ppap: DiffusionPPAPParams = DiffusionPPAPParams()
    supervised_lr: float = Field(1e-3, gt=0.0, le=10.0)  # the supervised multi-experts (ppap.steps each)
    scales: list[float] = Field(default_factory=lambda: [1.0, 3.0, 10.0, 20.0, 30.0, 100.0], min_length=1)  # classifier guidance
    cfg_scales: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0], min_length=1)  # cfg's w
    sweep_per_class: int = Field(10, ge=1, le=100_000)  # samples per class per scale when choosing it
    fd_guard: float = Field(2.0, gt=1.0, le=1000.0)  # a chosen scale keeps backbone-FD to val <= this x unguided's
    samples_per_class: int = Field(50, ge=1, le=100_000)  # per training seed and arm
    workers: int = Field(2, ge=1, le=64)

    @model_validator(mode="after")
    def _cfg_seeds_are_training_seeds(self):
        stray = [s for s in self.cfg_seeds if s not in self.seeds]
        if stray:
            raise ValueError(f"cfg_seeds {stray} are not among the training seeds {self.seeds}")
        return self


SCHEMA = DiffusionParams
