"""The catalogue of models: every trainable model and every given network, by the name dvc.yaml,
params.yaml and the CLI use, mapped to the module that implements it, and looked up here
(`get_model`, `get_given`: the module is imported when it is asked for).

A leaf module: it imports nothing of the project, so the params schema (embedlab.params, which
adds one section per method) and the method interface (embedlab.methods.base) both read it
without importing each other. Adding a method: one line in MODELS (docs/add-a-method.md).
"""

from __future__ import annotations

import importlib
from typing import Any

# Each entry resolves to an object or module implementing `methods.base.Method` (name,
# primary_metric, needs_evaluator, train, evaluate, export, load_bundle; tests/unit/
# test_interface.py checks every entry). A method package's `params.py` holds its section's
# schema (`SCHEMA`); the classifiers' sections are core ones.
MODELS: dict[str, str] = {
    "evaluator": "embedlab.classifiers.method:EVALUATOR",
    "backbone": "embedlab.classifiers.method:BACKBONE",
    "vq": "embedlab.methods.vq.method",
    "gan": "embedlab.methods.gan.method",
    "federated": "embedlab.methods.federated.method",
    "diffusion": "embedlab.methods.diffusion.method",
}

# The networks a claim holds fixed, trained once per data set by `embedlab pretrain <name>` into
# models/<name>/ (weights in git, like the evaluator's): PPAP guides a given DDPM; ResGen and
# the AR baseline share one tokenizer. Each module exposes `name` and `train(params, paths)`.
GIVEN: dict[str, str] = {
    "ddpm": "embedlab.methods.diffusion.given",
    "tokenizer": "embedlab.methods.vq.given",
}


def params_module(name: str) -> str | None:
    """The module holding model `name`'s params schema (`SCHEMA`), or None for a core section."""
    package = MODELS[name].partition(":")[0].rpartition(".")[0]
    return f"{package}.params" if package.startswith("embedlab.methods.") else None


def get_given(name: str) -> Any:
    if name not in GIVEN:
        raise KeyError(f"unknown given network {name!r}; known: {', '.join(GIVEN)}")
    return importlib.import_module(GIVEN[name])


def get_model(name: str) -> Any:
    """What implements `embedlab.methods.base.Method` for `name` (an object or a module)."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    module, _, attr = MODELS[name].partition(":")
    target = importlib.import_module(module)
    return getattr(target, attr) if attr else target
