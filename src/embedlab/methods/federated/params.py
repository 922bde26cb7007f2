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
    sizes: list[int] = Field(default_factory=lambda: [10, 30, 100], min_length=1)
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


SCHEMA = FederatedParams
