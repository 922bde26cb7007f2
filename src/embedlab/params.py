"""Typed params: params.yaml is loaded once through these models.

Every section forbids unknown keys and bounds its numbers, so a typo or an
out-of-range value stops a stage before any work, naming the key and the range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ParamsError(ValueError):
    """params.yaml is unreadable or holds an unknown key or a bad value."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    source: str = "sklearn-digits"
    image_size: int = Field(16, ge=4, le=256)
    num_classes: int | None = Field(None, ge=2, le=1000)
    pixel_range: tuple[float, float] | None = None
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    seed: int = Field(0, ge=0)

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value == "sklearn-digits" or value.startswith(("npz:", "folder:")):
            if value.endswith(":"):
                raise ValueError(f"source {value!r} names no path after the colon")
            return value
        raise ValueError(
            f"unknown source {value!r}; allowed: 'sklearn-digits', 'npz:<path>', 'folder:<path>'"
        )

    @field_validator("pixel_range")
    @classmethod
    def _ordered_range(cls, value):
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"pixel_range {list(value)} must be [lo, hi] with lo < hi")
        return value


class ValidateParams(Section):
    min_rows: int = Field(100, ge=1)
    min_rows_per_split: int = Field(10, ge=1)
    class_balance_tolerance: float = Field(0.5, gt=0.0, le=1.0)
    split_fraction_tolerance: float = Field(0.05, gt=0.0, le=0.5)
    mean_intensity_range: tuple[float, float] = (-0.95, 0.5)
    std_intensity_range: tuple[float, float] = (0.05, 1.0)


class FeatureShiftParams(Section):
    domains: list[Literal["original", "inverted", "rotated", "blurred_noise", "contrast"]] = Field(
        default_factory=lambda: ["original", "inverted", "rotated", "blurred_noise", "contrast"],
        min_length=2,
    )

    @field_validator("domains")
    @classmethod
    def _unique(cls, value):
        if len(set(value)) != len(value):
            raise ValueError(f"domains {value} repeat a name")
        return value


def _all_positive(values: list[float]) -> list[float]:
    if any(v <= 0 for v in values):
        raise ValueError(f"{values} must all be > 0")
    return values


# A list of positive numbers (pydantic names the key in the error).
PositiveFloats = Annotated[list[float], AfterValidator(_all_positive)]


class LabelSkewParams(Section):
    num_clients: int = Field(5, ge=2, le=1000)
    alpha: float = Field(0.5, gt=0.0, le=1000.0)
    min_client_size: int = Field(10, ge=1)
    max_retries: int = Field(100, ge=1, le=100_000)
    # More Dirichlet concentrations, each its own split (label_skew_alpha<a>.npz), same clients.
    extra_alphas: PositiveFloats = Field(default_factory=list)



class PartitionParams(Section):
    seed: int = Field(0, ge=0)
    feature_shift: FeatureShiftParams = FeatureShiftParams()
    label_skew: LabelSkewParams = LabelSkewParams()


class TrainerParams(Section):
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = Field(1, ge=1)
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    deterministic: bool = True
    log_every_n_steps: int = Field(10, ge=1)
    progress_bar: bool = True


class ClassifierParams(Section):
    seed: int = Field(0, ge=0)
    width: int = Field(32, ge=4, le=512)
    feature_dim: int = Field(128, ge=8, le=4096)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    batch_size: int = Field(64, ge=1, le=65536)
    max_epochs: int = Field(40, ge=1, le=10_000)
    max_steps: int = Field(-1, ge=-1)
    patience: int = Field(8, ge=1)
    augment_shift: int = Field(1, ge=0, le=8)


class VQTokenizerParams(Section):
    hidden: int = Field(64, ge=8, le=1024)
    latent_dim: int = Field(32, ge=4, le=512)
    downsample: int = Field(4, ge=1, le=16)
    num_quantizers: int = Field(8, ge=1, le=32)
    codebook_size: int = Field(64, ge=2, le=65536)
    decay: float = Field(0.9, gt=0.0, lt=1.0)
    commitment_weight: float = Field(0.25, ge=0.0, le=10.0)
    dead_code_threshold: float = Field(2.0, ge=0.0)
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    batch_size: int = Field(64, ge=1, le=65536)
    max_epochs: int = Field(60, ge=1, le=10_000)
    patience: int = Field(10, ge=1)
    augment_shift: int = Field(1, ge=0, le=8)


class VQPriorParams(Section):
    width: int = Field(128, ge=8, le=4096)
    layers: int = Field(4, ge=1, le=64)
    heads: int = Field(4, ge=1, le=64)
    mixtures: int = Field(8, ge=1, le=256)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    class_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    batch_size: int = Field(128, ge=1, le=65536)
    max_epochs: int = Field(60, ge=1, le=10_000)  # the ResGen prior
    ar_max_epochs: int = Field(60, ge=1, le=10_000)  # the AR baseline (8x the tokens per image at D=8)
    patience: int = Field(8, ge=1)
    augment_copies: int = Field(4, ge=0, le=64)
    steps: int = Field(8, ge=1, le=1024)
    guidance: float = Field(2.0, ge=0.0, le=50.0)
    temperature: float = Field(1.0, gt=0.0, le=10.0)


class VQParams(Section):
    # Training seeds: each retrains the tokenizer and both priors (what ResGen vs AR compares).
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    workers: int = Field(2, ge=1, le=64)  # CPU processes, one thread each (in-process on a GPU)
    tokenizer: VQTokenizerParams = VQTokenizerParams()
    prior: VQPriorParams = VQPriorParams()
    eval_depths: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1)
    samples_per_class: int = Field(100, ge=2, le=100_000)
    timing_depths: list[int] = Field(default_factory=lambda: [2, 8], min_length=1)
    timing_samples: int = Field(1000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _depths_within_rvq(self):
        too_deep = [d for d in self.eval_depths if not 1 <= d <= self.tokenizer.num_quantizers]
        if too_deep:
            raise ValueError(
                f"eval_depths {too_deep} outside 1..tokenizer.num_quantizers={self.tokenizer.num_quantizers}"
            )
        return self


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

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
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
    """Stacked digits (weakened and full-capacity D) and plain digits, conv nets."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    arms: list[GANArm] = Field(default_factory=lambda: list(ALL_GAN_ARMS), min_length=1)  # weakened-D stacked
    compare_arms: list[GANArm] = Field(default_factory=lambda: ["dcgan", "maf", "mee"], min_length=1)  # full D, digits
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


class FedTrainParams(Section):
    rounds: int = Field(30, ge=1, le=100_000)
    local_steps: int = Field(10, ge=1, le=100_000)  # every client, every round (equal steps)
    batch_size: int = Field(32, ge=1, le=65536)
    lr: float = Field(0.05, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)
    fedprox_mu: float = Field(0.01, ge=0.0, le=100.0)


class FRAugParams(Section):
    noise_dim: int = Field(16, ge=1, le=4096)
    hidden: int = Field(64, ge=1, le=4096)
    lr: float = Field(0.01, gt=0.0, le=10.0)  # generator and RTNet (Adam)
    rho: float = Field(0.1, ge=0.0, le=100.0)  # weight of the synthetic embeddings in the head's loss
    lambda_g: float = Field(1.0, ge=0.0, le=100.0)  # generator: distance to the local class means
    lambda_r: float = Field(1.0, ge=0.0, le=100.0)  # RTNet: MMD to the real local embeddings
    rtnet_init_scale: float = Field(0.1, ge=0.0, le=10.0)
    warmup_rounds: int = Field(5, ge=0, le=100_000)  # FedBN rounds before augmentation starts


class GGEURParams(Section):
    scale: Literal["sqrt", "linear"] = "sqrt"  # sqrt: the pooled covariance (paper); linear: released code
    per_sample: int = Field(10, ge=1, le=10_000)  # new embeddings drawn around each real one
    target_size: int = Field(50, ge=1, le=1_000_000)  # per class and client after combining
    prototype_samples: int = Field(10, ge=1, le=10_000)  # multi-domain: drawn around each other domain's mean


class FedFeatureShiftParams(FedTrainParams):
    samples_per_client: int = Field(30, ge=1)
    sizes: list[int] = Field(default_factory=lambda: [30, 100, 250], min_length=1)
    width: int = Field(8, ge=1, le=1024)
    embedding_dim: int = Field(64, ge=2, le=4096)
    algorithms: list[Literal["local", "fedavg", "fedprox", "fedbn", "fraug"]] = Field(
        default_factory=lambda: ["local", "fedavg", "fedprox", "fedbn", "fraug"], min_length=1)
    ggeur_rounds: int = Field(30, ge=1, le=100_000)  # the linear-head runs on backbone embeddings

    @model_validator(mode="after")
    def _default_size_is_swept(self):
        if self.samples_per_client not in self.sizes:
            raise ValueError(f"samples_per_client {self.samples_per_client} must be one of sizes {self.sizes}")
        return self


class FedLabelSkewParams(FedTrainParams):
    rounds: int = Field(50, ge=1, le=100_000)
    local_steps: int = Field(20, ge=1, le=100_000)
    lr: float = Field(0.1, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)


class FederatedParams(Section):
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    workers: int = Field(2, ge=1, le=64)  # CPU processes, one thread each
    feature_shift: FedFeatureShiftParams = FedFeatureShiftParams()
    label_skew: FedLabelSkewParams = FedLabelSkewParams()
    fraug: FRAugParams = FRAugParams()
    ggeur: GGEURParams = GGEURParams()


class DiffusionPPAPParams(Section):
    experts: int = Field(5, ge=1, le=1000)
    rank: int = Field(4, ge=1, le=1024)
    alpha: float = Field(8.0, gt=0.0, le=1e4)
    lr: float = Field(5e-3, gt=0.0, le=10.0)  # the reference: 1e-3 left experts for t >= 400 untrained
    steps: int = Field(600, ge=1, le=10_000_000)  # per expert
    batch_size: int = Field(128, ge=1, le=65536)
    kd_samples: int = Field(1024, ge=1, le=10_000_000)  # unlabelled DDPM samples, shared by the experts
    tau: float = Field(0.25, gt=0.0, le=100.0)


class DiffusionParams(Section):
    # Training seeds: each retrains every part the PPAP claim compares (DDPM, experts, baselines).
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    cfg_seeds: list[int] = Field(default_factory=list)  # the cfg reference arm's conditional DDPM
    timesteps: int = Field(1000, ge=2, le=100_000)
    schedule: Literal["linear", "cosine"] = "linear"
    channels: list[int] = Field(default_factory=lambda: [16, 32, 32], min_length=1)
    attention: bool = True
    lr: float = Field(2e-3, gt=0.0, le=10.0)
    batch_size: int = Field(128, ge=1, le=65536)
    steps: int = Field(6000, ge=1, le=10_000_000)
    ema_decay: float = Field(0.995, ge=0.0, lt=1.0)
    label_dropout: float = Field(0.1, ge=0.0, lt=1.0)  # the conditional (cfg) DDPM
    lr_decay: bool = False  # cosine decay of the DDPM's lr to 5% (else flat after warm-up)
    min_snr_gamma: float = Field(0.0, ge=0.0, le=1000.0)  # Min-SNR loss weighting; 0: plain eps MSE
    ddim_steps: int = Field(20, ge=1, le=100_000)
    ddim_clip: bool = True  # clamp DDIM's x0 prediction each step (eps recomputed from it)
    ppap: DiffusionPPAPParams = DiffusionPPAPParams()
    supervised_lr: float = Field(1e-3, gt=0.0, le=10.0)  # the supervised multi-experts (ppap.steps each)
    scales: list[float] = Field(default_factory=lambda: [1.0, 3.0, 10.0, 20.0, 30.0, 100.0], min_length=1)  # classifier guidance
    cfg_scales: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0], min_length=1)  # cfg's w
    sweep_per_class: int = Field(20, ge=1, le=100_000)  # samples per class per scale when choosing it
    fd_guard: float = Field(2.0, gt=1.0, le=1000.0)  # a chosen scale keeps backbone-FD to val <= this x unguided's
    samples_per_class: int = Field(100, ge=1, le=100_000)  # per training seed and arm
    workers: int = Field(2, ge=1, le=64)

    @model_validator(mode="after")
    def _cfg_seeds_are_training_seeds(self):
        stray = [s for s in self.cfg_seeds if s not in self.seeds]
        if stray:
            raise ValueError(f"cfg_seeds {stray} are not among the training seeds {self.seeds}")
        return self


class EvaluationParams(Section):
    """How generated samples are scored (evaluation/): shared by every method's evaluate stage."""

    samples: int = Field(1000, ge=10, le=1_000_000)  # N per arm (and per training seed) for FD / KID
    bootstrap: int = Field(500, ge=0, le=100_000)  # resamples behind each FD / KID interval
    confidence: float = Field(0.9, gt=0.0, le=1.0)  # a reading counts when the top probability >= this
    mode_min_fraction: float = Field(0.25, gt=0.0, le=1.0)  # a mode needs this share of the real ceiling's count
    seed: int = Field(0, ge=0)  # bootstrap draws and the real floor's images


class RegistryParams(Section):
    min_delta: float = Field(0.0, ge=0.0)
    gate_on_interval: bool = True  # a newcomer must beat the champion beyond its own 95% interval
    experiment: str = Field("embedlab", min_length=1)


class Params(Section):
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    partition: PartitionParams = PartitionParams()
    trainer: TrainerParams = TrainerParams()
    evaluator: ClassifierParams = ClassifierParams(seed=1)
    backbone: ClassifierParams = ClassifierParams(seed=2, width=16, feature_dim=64, dropout=0.0)
    vq: VQParams = VQParams()
    gan: GANParams = GANParams()
    federated: FederatedParams = FederatedParams()
    diffusion: DiffusionParams = DiffusionParams()
    evaluation: EvaluationParams = EvaluationParams()
    registry: RegistryParams = RegistryParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self):
        if self.data.val_fraction + self.data.test_fraction >= 0.8:
            raise ValueError(
                "data.val_fraction + data.test_fraction must stay below 0.8 "
                f"(got {self.data.val_fraction} + {self.data.test_fraction})"
            )
        return self

    def model_section(self, name: str) -> BaseModel:
        """The params section of a trainable model (evaluator, backbone, a method)."""
        section = getattr(self, name, None)
        if not isinstance(section, BaseModel):
            raise ParamsError(f"params.yaml has no section for model {name!r}")
        return section


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]).replace("validate_", "validate")
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    ctx = error.get("ctx") or {}
    bounds = [f"{op} {ctx[name]}" for name, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if name in ctx]
    if bounds:
        message = f"must be {' and '.join(bounds)}"
    got = error.get("input")
    shown = "" if isinstance(got, dict) or error["type"] == "missing" else f" (got {got!r})"
    return f"{key or '<root>'}: {message}{shown}"


def parse_params(raw: dict, origin: str = "params.yaml") -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise ParamsError(f"{origin}: " + "; ".join(lines)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, origin=str(path))
