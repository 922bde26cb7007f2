"""The `federated` section of params.yaml (`SCHEMA`): the Params model takes it from here, by the
MODELS entry (embedlab.params.method_schemas)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from embedlab.sections import Section


class FedTrainParams(Section):
    rounds: int = Field(30, ge=1, le=100_000)
    local_steps: int = Field(10, ge=1, le=100_000)  # every client, every round (equal steps)
    batch_size: int = Field(32, ge=1, le=65536)
    lr: float = Field(0.05, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)
    fedprox_mu: float = Field(0.01, ge=0.0, le=100.0)


class FRAugReleasedParams(Section):
    """FRAug as its released code runs digits (HaokunChen245/FRAug, users/user_FRAug.py)."""

    lr_g: float = Field(0.05, gt=0.0, le=10.0)  # generator, SGD
    lr_rtnet: float = Field(0.025, gt=0.0, le=10.0)  # RTNet (FTNet), SGD
    momentum: float = Field(0.5, ge=0.0, lt=1.0)  # both
    mean_momentum: float = Field(0.3, gt=0.0, le=1.0)  # EMA of the local class means
    ratio_max: float = Field(0.5, ge=0.0, le=1.0)  # L_ratio = min(ratio_max, exp(gamma (round - rounds)))
    ratio_gamma: float = Field(0.002, ge=0.0, le=10.0)


class FRAugDampedParams(Section):
    """The variant this repository ran before the released form (kept as an option)."""

    noise_dim: int = Field(16, ge=1, le=4096)
    hidden: int = Field(64, ge=1, le=4096)
    lr: float = Field(0.01, gt=0.0, le=10.0)  # generator and RTNet (Adam)
    rho: float = Field(0.1, ge=0.0, le=100.0)  # weight of the synthetic embeddings in the head's loss
    rtnet_init_scale: float = Field(0.1, ge=0.0, le=10.0)
    warmup_rounds: int = Field(5, ge=0, le=100_000)  # FedBN rounds before augmentation starts


class FRAugParams(Section):
    form: Literal["released", "damped"] = "released"
    lambda_g: float = Field(1.0, ge=0.0, le=100.0)  # generator: pushed away from the local class means
    lambda_r: float = Field(1.0, ge=0.0, le=100.0)  # RTNet (lambda_FT): MMD to the real local embeddings
    released: FRAugReleasedParams = FRAugReleasedParams()
    damped: FRAugDampedParams = FRAugDampedParams()


class GGEURParams(Section):
    scale: Literal["sqrt", "linear"] = "sqrt"  # sqrt: the pooled covariance (paper); linear: released code
    per_sample: int = Field(10, ge=1, le=10_000)  # new embeddings drawn around each real one
    target_size: int = Field(50, ge=1, le=1_000_000)  # per class and client after combining
    prototype_samples: int = Field(10, ge=1, le=10_000)  # multi-domain: drawn around each other domain's mean
    fill: Literal["target", "global"] = "target"  # global: each class up to its count over all clients (released code)


class EmbeddingParams(Section):
    """What the linear-head runs (label skew, and GGEUR's multi-domain runs) sit on."""

    source: Literal["vq", "backbone"] = "vq"  # vq: models/tokenizer's encoder, trained without labels


# The arms with a val budget (`federated.tuning`), in tuning order: each CNN arm tunes its own
# training configuration (feature_shift keys); FRAug its own (fraug keys) on top of FedBN's.
CNN_ARMS = ("local", "fedavg", "fedprox", "fedbn")
TUNED_ARMS = CNN_ARMS + ("fraug",)


def _lr_grid() -> list[dict[str, float]]:
    return [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.2}]


class TuningParams(Section):
    """Equal val budgets, chosen on selection seeds (never the seeds that are scored, never test):
    per arm, a list of configurations, each a {key: value} override of its section, the same
    number for every arm. Each CNN arm tunes its own training configuration (`feature_shift`
    keys); FRAug tunes its own (`fraug` keys) on top of FedBN's choice, the method it extends."""

    seeds: list[int] = Field(default_factory=lambda: [100], min_length=1)  # the paper preset: [100, 101, 102]
    local: list[dict[str, float]] = Field(default_factory=_lr_grid, min_length=1)
    fedavg: list[dict[str, float]] = Field(default_factory=_lr_grid, min_length=1)
    fedprox: list[dict[str, float]] = Field(default_factory=_lr_grid, min_length=1)
    fedbn: list[dict[str, float]] = Field(default_factory=_lr_grid, min_length=1)
    fraug: list[dict[str, float]] = Field(
        default_factory=lambda: [{"lambda_r": 1.0}, {"lambda_r": 10.0}, {"lambda_r": 100.0}], min_length=1)


class FedFeatureShiftParams(FedTrainParams):
    local_steps: int = Field(20, ge=1, le=100_000)  # the released FRAug's 20 iterations per round
    samples_per_client: int = Field(30, ge=1)
    sizes: list[int] = Field(default_factory=lambda: [30], min_length=1)  # the paper preset: [10, 30, 100]
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
    rounds: int = Field(10, ge=1, le=100_000)
    local_steps: int = Field(100, ge=1, le=100_000)
    algorithms: list[Literal["fedavg", "fedavg_ggeur", "fedprox", "fedprox_ggeur"]] = Field(
        default_factory=lambda: ["fedavg", "fedavg_ggeur"], min_length=1)
    lr: float = Field(0.1, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)


class FederatedParams(Section):
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)  # the paper preset: 5
    workers: int = Field(2, ge=1, le=64)  # CPU processes, one thread each
    feature_shift: FedFeatureShiftParams = FedFeatureShiftParams()
    label_skew: FedLabelSkewParams = FedLabelSkewParams()
    fraug: FRAugParams = FRAugParams()
    ggeur: GGEURParams = GGEURParams()
    embedding: EmbeddingParams = EmbeddingParams()
    tuning: TuningParams = TuningParams()

    @model_validator(mode="after")
    def _tuning_keys_exist(self):
        targets = {arm: self.fraug if arm == "fraug" else self.feature_shift for arm in TUNED_ARMS}
        for arm, target in targets.items():
            for config in getattr(self.tuning, arm):
                unknown = sorted(set(config) - set(type(target).model_fields))
                if unknown:
                    raise ValueError(f"tuning.{arm}: {unknown} are not keys of its section "
                                     f"({', '.join(type(target).model_fields)})")
        budgets = {arm: len(getattr(self.tuning, arm)) for arm in targets if arm in self.feature_shift.algorithms}
        if len(set(budgets.values())) > 1:
            raise ValueError(f"tuning: every arm gets the same number of configurations, got {budgets}")
        if set(self.tuning.seeds) & set(self.seeds):
            raise ValueError(f"tuning.seeds {self.tuning.seeds} overlap seeds {self.seeds}: "
                             "configurations are chosen on seeds that are not scored")
        return self


SCHEMA = FederatedParams
