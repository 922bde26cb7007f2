"""Typed params: params.yaml is loaded once through these models.

Every section forbids unknown keys and bounds its numbers, so a typo or an
out-of-range value stops a stage before any work, naming the key and the range.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from embedlab.catalogue import MODELS, params_module
from embedlab.sections import PositiveFloats, Section


class ParamsError(ValueError):
    """params.yaml is unreadable or holds an unknown key or a bad value."""


class DataParams(Section):
    source: str = "sklearn-digits"
    image_size: int = Field(16, ge=4, le=256)
    channels: Literal[1, 3] | None = None  # None: what the source has (the bundled digits: 1)
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


DomainName = Literal["original", "inverted", "rotated", "blurred_noise", "contrast", "mnistm", "svhn", "usps", "synth",
                     "hue_rotated", "channel_swap", "greyscale"]


class FeatureShiftParams(Section):
    """One client per domain (embedlab.data.domains). The source images are pooled over the
    prepared splits and dealt out, one shard per source-derived domain (no image serves two);
    `synth` renders its own. Each domain keeps train_per_class + val_per_class images per class
    for train and val, and tests on the rest (synth: synth_test_per_class)."""

    # auto: the digit look-alikes for grey digits 0-9, else transforms of the source's own images
    # (embedlab.data.domains.auto_domains); or a list of at least two names.
    domains: Literal["auto"] | list[DomainName] = "auto"
    train_per_class: int = Field(10, ge=1, le=100_000)
    val_per_class: int = Field(5, ge=1, le=100_000)
    synth_test_per_class: int = Field(100, ge=1, le=100_000)

    @field_validator("domains", mode="before")
    @classmethod
    def _names(cls, value):
        """Name the bad entry plainly (a union's own message lists both of its forms)."""
        if isinstance(value, str) and value != "auto":
            raise ValueError(f"{value!r}: expected auto or a list of domain names")
        if isinstance(value, list | tuple):
            allowed = get_args(DomainName)
            for i, name in enumerate(value):
                if name not in allowed:
                    raise ValueError(f"entry {i}: {name!r} is not a domain; allowed: {', '.join(allowed)}, or auto alone")
        return value

    @field_validator("domains")
    @classmethod
    def _unique(cls, value):
        if value == "auto":
            return value
        if len(value) < 2:
            raise ValueError(f"domains {value}: at least two (one client each), or auto")
        if len(set(value)) != len(value):
            raise ValueError(f"domains {value} repeat a name")
        return value


class LabelSkewParams(Section):
    num_clients: int = Field(20, ge=2, le=1000)
    alpha: float = Field(0.05, gt=0.0, le=1000.0)
    min_client_size: int = Field(5, ge=1)
    max_retries: int = Field(1000, ge=1, le=100_000)
    # More Dirichlet concentrations, each its own split (label_skew_alpha<a>.npz), same clients.
    extra_alphas: PositiveFloats = Field(default_factory=lambda: [0.1])



class PartitionParams(Section):
    seed: int = Field(0, ge=0)
    feature_shift: FeatureShiftParams = FeatureShiftParams()
    label_skew: LabelSkewParams = LabelSkewParams()


class TrainerParams(Section):
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    # Processes per node (GPUs, or CPU processes), and nodes: above 1 in all, Lightning's DDP. Which
    # models can use it, and what the others say instead: embedlab.training.check_devices.
    devices: int = Field(1, ge=1, le=1024)
    num_nodes: int = Field(1, ge=1, le=1024)
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


def with_defaults(schema: type[Section], name: str, **defaults) -> type[Section]:
    """`schema` under another name with some defaults changed, every bound kept: one field
    definition serves two params sections whose defaults differ (evaluator and backbone)."""
    from pydantic.fields import FieldInfo

    fields = {key: (schema.model_fields[key].annotation,
                    FieldInfo.merge_field_infos(schema.model_fields[key], default=value))
              for key, value in defaults.items()}
    return create_model(name, __base__=schema, **fields)


# The defaults are params.yaml's values (tests/unit/test_params.py compares every key).
EvaluatorParams = with_defaults(ClassifierParams, "EvaluatorParams", seed=1)
BackboneParams = with_defaults(ClassifierParams, "BackboneParams", seed=2, width=16, feature_dim=64, dropout=0.0,
                               max_epochs=30)


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


class CoreParams(Section):
    """The sections every pipeline has; each method's section comes from its package (`Params`)."""

    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    partition: PartitionParams = PartitionParams()
    trainer: TrainerParams = TrainerParams()
    evaluator: EvaluatorParams = EvaluatorParams()
    backbone: BackboneParams = BackboneParams()
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


def method_schemas() -> dict[str, type[Section]]:
    """{name: section schema} of every method in the catalogue: `SCHEMA` of the package's params.py
    (methods/<name>/params.py). The classifiers' sections are core ones."""
    return {name: importlib.import_module(module).SCHEMA for name in MODELS
            if (module := params_module(name)) is not None}


# params.yaml's model: the core sections, then one per method (a method's section defaults to its
# schema's defaults when params.yaml leaves it out).
Params = create_model("Params", __base__=CoreParams,
                      **{name: (schema, schema()) for name, schema in method_schemas().items()})


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
