"""Every trainable model, by the name dvc.yaml and the CLI use.

Each entry resolves to an object or module implementing `methods.base.Method` (name,
primary_metric, needs_evaluator, train, evaluate, export, load_bundle; tests/unit/
test_interface.py checks every entry). Adding a method: docs/add-a-method.md.
"""

from __future__ import annotations

import importlib

from embedlab.methods.base import Method

MODELS: dict[str, str] = {
    "evaluator": "embedlab.classifier_stages:EVALUATOR",
    "backbone": "embedlab.classifier_stages:BACKBONE",
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


def get_given(name: str):
    if name not in GIVEN:
        raise KeyError(f"unknown given network {name!r}; known: {', '.join(GIVEN)}")
    return importlib.import_module(GIVEN[name])


def get_model(name: str) -> Method:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    module, _, attr = MODELS[name].partition(":")
    target = importlib.import_module(module)
    return getattr(target, attr) if attr else target
