"""Training again gives the same numbers: every method of the tiny run (conftest.py
`tiny_pipeline`, its jobs in one process) retrained on a clone on 2 spawned workers, one of
them killed halfway first and resumed from its finished jobs."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from .conftest import BIN, run, set_params

pytestmark = pytest.mark.slow


def test_each_method_trained_again_on_two_workers_gives_the_same_metrics(tiny_pipeline, tmp_path):
    """Seeded runs are reproducible whatever the worker count, and through a crash: every method
    retrained and evaluated on 2 spawned workers (where the run used workers: 1, its jobs in one
    process), train@federated after a SIGKILL that left some of its runs kept for the rerun,
    scores exactly the same, wall times and the host record aside (embedlab.numerics pins the
    kernels and the threads)."""
    from embedlab.report import flat_metrics as flat
    from embedlab.report import is_timing

    again = tmp_path / "two-workers"
    run(["git", "clone", "-q", str(tiny_pipeline.origin), str(again)], tmp_path)
    run(["dvc", "pull"], again)  # the team remote: the inputs, not retrained
    methods = ("vq", "gan", "federated", "diffusion")
    set_params(again, {m: {"workers": 2} for m in methods})

    # Job-level resume (embedlab.jobstore) through dvc itself, which deletes the stage's outputs
    # before the rerun: train@federated SIGKILLed once 3 of its runs are kept.
    store = again / ".embedlab/resume/federated/jobs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "-s", "train@federated"], cwd=again, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while len(list(store.glob("*.pt"))) < 3:
        assert proc.poll() is None, "train@federated ended before three of its runs were kept"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    out = run(["dvc", "repro", "-s"] + [f"{stage}@{m}" for m in methods for stage in ("train", "evaluate")], again)
    said = re.search(r"resuming federated: (\d+) finished job\(s\)", out.stdout + out.stderr)
    assert said and int(said.group(1)) >= 3, out.stdout[-2000:] + out.stderr[-2000:]
    assert not store.exists()  # removed once the stage's outputs are written
    for m in methods:
        assert f"Running stage 'train@{m}'" in out.stdout, m
        before = flat(json.loads(run(["git", "show", f"HEAD:metrics/{m}.json"], again).stdout))
        after = flat(json.loads((again / f"metrics/{m}.json").read_text()))
        kept = {k for k in before if not is_timing(f"metrics/{m}.json", k)}
        assert kept == {k for k in after if not is_timing(f"metrics/{m}.json", k)}, m
        differ = {k: (before[k], after[k]) for k in kept if before[k] != after[k]}
        assert not differ, f"{m}: {len(differ)} of {len(kept)} values differ, e.g. {list(differ.items())[:5]}"
        assert before["host.evaluate.pins"] == after["host.evaluate.pins"] != "native"
