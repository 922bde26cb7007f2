"""Every entry of MODELS implements the one method interface (methods/base.py), and no module of a
method package imports back into a module that imports it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from embedlab.methods import MODELS, get_model
from embedlab.methods.base import Method

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize("key", sorted(MODELS))
def test_every_model_implements_the_interface(key):
    model = get_model(key)
    members = ("name", "primary_metric", "needs_evaluator", "train", "evaluate", "export", "load_bundle")
    assert isinstance(model, Method), f"{key}: missing {[m for m in members if not hasattr(model, m)]}"
    assert model.name == key
    assert isinstance(model.needs_evaluator, bool)
    assert model.primary_metric and isinstance(model.primary_metric, str)
    for method, expected in (("train", ["params", "paths"]), ("evaluate", ["params", "paths", "evaluator"]),
                             ("export", ["params", "paths"]), ("load_bundle", ["bundle_dir", "device"])):
        got = [p for p in inspect.signature(getattr(model, method)).parameters if p != "self"]
        assert got == expected, f"{key}.{method}{tuple(got)}: expected {tuple(expected)}"


def test_unknown_model_names_the_known_ones():
    with pytest.raises(KeyError, match="known: evaluator"):
        get_model("nope")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_no_import_circles_inside_the_project():
    modules = {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
               for p in SRC.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        edges[name] = targets
    circles = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in edges.get(b, ())})
    assert not circles, f"modules importing each other: {circles}"
    # The stage module of every method package trains; scoring never imports it back.
    for key in MODELS:
        if f"embedlab.methods.{key}.method" in modules:
            assert f"embedlab.methods.{key}.method" not in edges.get(f"embedlab.methods.{key}.scoring", set())
