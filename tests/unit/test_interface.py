"""Every entry of MODELS implements the one method interface (methods/base.py), and the project
has no import cycle (function-level imports included)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from embedlab.catalogue import MODELS, get_model
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
    """Every module `path` imports, at the top, in functions and under TYPE_CHECKING alike
    (`from a import b` names a.b too, in case b is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as a path a -> ... -> a, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    return next((found for node in sorted(edges) if node not in state and (found := visit(node))), None)


def test_no_import_cycle_inside_the_project():
    # A package's __init__ running first when a submodule is imported is no edge: what counts is
    # what each module's own code imports (top, function-level and TYPE_CHECKING imports alike).
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
    assert _cycle(edges) is None, f"an import cycle: {' -> '.join(_cycle(edges))}"
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]  # the finder finds
    # The stage module of every method package trains; scoring never imports it back.
    for key in MODELS:
        if f"embedlab.methods.{key}.method" in modules:
            assert f"embedlab.methods.{key}.method" not in edges.get(f"embedlab.methods.{key}.scoring", set())


def test_no_method_package_imports_another():
    # What two methods share lives below the packages (e.g. embedlab.embedders: the frozen
    # tokenizer or backbone that GGEUR's heads classify), never in one method's files.
    methods = SRC / "embedlab" / "methods"
    packages = sorted(p for p in methods.iterdir() if (p / "__init__.py").exists())
    assert {p.name for p in packages} >= {"vq", "gan", "federated", "diffusion"}
    for package in packages:
        for path in package.rglob("*.py"):
            for imported in _imports(path):
                parts = imported.split(".")
                if parts[:2] == ["embedlab", "methods"] and len(parts) > 2 and parts[2] not in (package.name, "base"):
                    raise AssertionError(f"{path.relative_to(SRC)} imports {imported}: another method's internals")
