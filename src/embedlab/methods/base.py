"""The interface every model in `MODELS` implements: the two classifiers (objects of
`classifiers.method.ClassifierModel`) and each method package's `method` module alike.

A method package has the same files for the same jobs:
  method.py    the interface below: `train` here; `evaluate`, `export`, `load_bundle` from scoring.py
  scoring.py   evaluate (metrics/<name>.json with intervals and claims), export, load_bundle
  plots.py     plots/<name>/ (written by evaluate)
  parts.py     what both method.py and scoring.py need (no module of a
               package imports back up into one that imports it)
  nets, losses, ... the method's own pieces
Shared plumbing lives below the packages: `embedlab.training` (Trainer factory), `embedlab.jobs`
(worker pools), `embedlab.live` (DVCLive), `embedlab.io` (safetensors, atomic JSON),
`embedlab.evaluation` (every score and verdict), `embedlab.registry` (publishing what
`Method.export` returns: a `ModelBundle`, defined here beside the interface).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch

    from embedlab.params import Params
    from embedlab.paths import Paths


@dataclass
class ModelBundle:
    """What `Method.export` hands the registry (registry.publish)."""

    module: torch.nn.Module
    input_example: np.ndarray
    primary_metric: str
    metrics: dict
    higher_is_better: bool = True
    params: dict = field(default_factory=dict)
    # Files beside the exported module (weights + config of parts torch.export cannot hold,
    # such as a sampler's prior), logged under the run's "bundle/" artifact folder.
    artifacts: list[Path] = field(default_factory=list)
    # Files made for the bundle alone, by name: a dict for "<name>.json", a tree of tensors for
    # "<name>.safetensors" (io.save_tensors). Written in a scratch folder while publishing,
    # so a stage's own outputs never change.
    files: dict[str, Any] = field(default_factory=dict)
    # Which variant this is (e.g. the algorithm and seed chosen on val) and why: the first line
    # of the version's model card.
    description: str = ""
    # The model card's last two sections: what the model is for, and where it stops.
    intended_use: str = ""
    limits: str = ""
    # A floor on what a user gets (e.g. the evaluator's confident share of a generator's samples
    # well above an untrained generator's): {"description", "value", "threshold", "met"}. A
    # version below it is registered, with the reason, but never becomes champion.
    quality: dict | None = None


@runtime_checkable
class Method(Protocol):
    """What `embedlab train|evaluate|publish <name>` calls (dvc.yaml's stages)."""

    name: str  # the MODELS key, the params section, models/<name>/, metrics/<name>.json
    primary_metric: str  # dotted key into metrics/<name>.json that the registry gates on
    needs_evaluator: bool  # whether `evaluate` is handed the fixed evaluator

    def train(self, params: Params, paths: Paths) -> None:
        """Fit from data/ (and models/backbone where used) into models/<name>/."""

    def evaluate(self, params: Params, paths: Paths, evaluator: torch.nn.Module | None) -> dict:
        """Score models/<name>/: write metrics/<name>.json and plots/<name>/, return the metrics."""

    def export(self, params: Params, paths: Paths) -> ModelBundle:
        """The evaluated model for the registry: a torch.export-able program plus bundle files."""

    def load_bundle(self, bundle_dir: Path, device: Any = "cpu") -> Any:
        """What a downloaded bundle (`registry.download_bundle`) rebuilds: the method's parts."""
