"""Presets: a file of overrides merged onto params.yaml in place, comments kept.

params.yaml is what `make run` runs on a laptop (~19 minutes on 2 cores, a third of it diffusion). params/paper.yaml
holds the paper-scale budgets (more seeds, longer training, the stacked GAN benchmarks): `make
run-paper` applies it and runs `dvc repro`, for a GPU or a long night (docs/pipeline.md says what
it costs). `git checkout params.yaml` returns to the default. The merged result is validated
before anything is written: a bad key or value in a preset names itself and leaves params.yaml
as it was.
"""

from __future__ import annotations

import io
from pathlib import Path

import yaml

from embedlab.params import ParamsError, parse_params


def _apply(node, override: dict, where: str = "") -> None:
    """Write the overrides into ruamel's round-trip tree (so comments survive); a key the tree
    lacks names itself."""
    for key, value in override.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in node:
            raise ParamsError(f"preset key {name!r} is not a key of params.yaml")
        if isinstance(value, dict) and isinstance(node[key], dict):
            _apply(node[key], value, name)
        else:
            node[key] = value


def apply_preset(preset: Path, params_file: Path = Path("params.yaml")) -> dict:
    """Merge `preset` onto `params_file`; returns the overrides applied. Nothing is written
    unless the merged params validate."""
    from ruamel.yaml import YAML

    if not preset.exists():
        raise ParamsError(f"{preset}: preset not found")
    override = yaml.safe_load(preset.read_text()) or {}
    if not isinstance(override, dict):
        raise ParamsError(f"{preset}: a preset is a mapping of params.yaml sections")
    rt = YAML()
    rt.preserve_quotes = True
    tree = rt.load(params_file.read_text())
    _apply(tree, override)
    out = io.StringIO()
    rt.dump(tree, out)
    text = out.getvalue()
    parse_params(yaml.safe_load(text), origin=f"{params_file} + {preset}")  # raises, naming the key
    params_file.write_text(text)
    return override
