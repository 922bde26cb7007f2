"""Every trainable model, by the name dvc.yaml and the CLI use.

Each entry resolves to an object (or module) with
  train(params, paths) -> None
  evaluate(params, paths, evaluator) -> dict   (writes metrics/<name>.json, plots/<name>/)
  export(params, paths) -> registry.ModelBundle
Adding a method = one package under methods/, one line here, one params section.
"""

from __future__ import annotations

import importlib

MODELS: dict[str, str] = {
    "evaluator": "embedlab.classifier_stages:EVALUATOR",
    "backbone": "embedlab.classifier_stages:BACKBONE",
    "vq": "embedlab.methods.vq.method",
    "gan": "embedlab.methods.gan.method",
    "federated": "embedlab.methods.federated.method",
    "diffusion": "embedlab.methods.diffusion.method",
}


def get_model(name: str):
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    module, _, attr = MODELS[name].partition(":")
    target = importlib.import_module(module)
    return getattr(target, attr) if attr else target
