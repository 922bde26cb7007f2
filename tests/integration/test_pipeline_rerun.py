"""Training again gives the same numbers: every method of the tiny run (conftest.py
`tiny_pipeline`, its jobs in one process) retrained on a clone on 2 spawned workers."""

import json

import pytest

from .conftest import run, set_params

pytestmark = pytest.mark.slow


def flat(tree, prefix: str = "") -> dict:
    """{"a.b.0.c": leaf}: dicts and lists flattened, as `dvc metrics diff` names the leaves."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        return {prefix: tree}
    out: dict = {}
    for key, value in items:
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def test_each_method_trained_again_on_two_workers_gives_the_same_metrics(tiny_pipeline, tmp_path):
    """Seeded runs are reproducible whatever the worker count: every method retrained and
    evaluated on 2 spawned workers (where the run used workers: 1, its jobs in one process)
    scores exactly the same, wall times and the host record aside (embedlab.numerics pins the
    kernels and the threads)."""
    from embedlab.report import is_timing

    again = tmp_path / "two-workers"
    run(["git", "clone", "-q", str(tiny_pipeline.origin), str(again)], tmp_path)
    run(["dvc", "pull"], again)  # the team remote: the inputs, not retrained
    methods = ("vq", "gan", "federated", "diffusion")
    set_params(again, {m: {"workers": 2} for m in methods})
    out = run(["dvc", "repro", "-s"] + [f"{stage}@{m}" for m in methods for stage in ("train", "evaluate")], again)
    for m in methods:
        assert f"Running stage 'train@{m}'" in out.stdout, m
        before = flat(json.loads(run(["git", "show", f"HEAD:metrics/{m}.json"], again).stdout))
        after = flat(json.loads((again / f"metrics/{m}.json").read_text()))
        kept = {k for k in before if not is_timing(f"metrics/{m}.json", k)}
        assert kept == {k for k in after if not is_timing(f"metrics/{m}.json", k)}, m
        differ = {k: (before[k], after[k]) for k in kept if before[k] != after[k]}
        assert not differ, f"{m}: {len(differ)} of {len(kept)} values differ, e.g. {list(differ.items())[:5]}"
        assert before["host.evaluate.pins"] == after["host.evaluate.pins"] != "native"
