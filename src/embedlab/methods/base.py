"""The interface every model in `MODELS` implements: the two classifiers (objects of
`classifier_stages.ClassifierModel`) and each method package's `method` module alike.

A method package has the same files for the same jobs:
  method.py    the interface below: `train` here; `evaluate`, `export`, `load_bundle` from scoring.py
  scoring.py   evaluate (metrics/<name>.json with intervals and claims), export, load_bundle
  plots.py     plots/<name>/ (written by evaluate)
  parts.py / runs.py / benchmarks.py   what both method.py and scoring.py need (no module of a
               package imports back up into one that imports it)
  nets, losses, ... the method's own pieces
Shared plumbing lives below the packages: `embedlab.training` (Trainer factory), `embedlab.jobs`
(worker pools), `embedlab.live` (DVCLive), `embedlab.io` (safetensors, atomic JSON),
`embedlab.evaluation` (every score and verdict), `embedlab.registry` (`ModelBundle`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from embedlab.params import Params
    from embedlab.paths import Paths
    from embedlab.registry import ModelBundle


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
