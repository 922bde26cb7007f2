"""A killed fit resumes (issue 32): `embedlab train evaluator` on tiny params, SIGKILLed after
its first kept checkpoint, rerun: it says it resumed, from which step, and ends with the weights
an uninterrupted run gives. A corrupt kept checkpoint stops the rerun before any work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from .conftest import BIN, run, set_params

pytestmark = pytest.mark.slow


def test_a_killed_fit_resumes_from_its_last_epoch_and_ends_as_an_uninterrupted_run(repo_copy):
    set_params(repo_copy, {"evaluator": {"max_epochs": 4, "patience": 4, "batch_size": 4}})  # ~315 steps an epoch
    run(["embedlab", "prepare"], repo_copy)
    weights = repo_copy / "models/evaluator/model.safetensors"
    kept = repo_copy / ".embedlab/resume/evaluator"
    run(["embedlab", "train", "evaluator"], repo_copy)  # uninterrupted
    whole = weights.read_bytes()
    assert not kept.exists()  # removed once the weights are written

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen([str(BIN / "embedlab"), "train", "evaluator"], cwd=repo_copy, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (kept / "last.ckpt").exists():
        assert proc.poll() is None, "the fit ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.05)  # inside the second epoch (the checkpoint is written atomically)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (kept / "last.ckpt").exists()

    # A corrupt kept checkpoint: refused before any work, naming it; nothing written.
    good = (kept / "last.ckpt").read_bytes()
    (kept / "last.ckpt").write_bytes(good[: len(good) // 3])
    refused = run(["embedlab", "train", "evaluator"], repo_copy, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "last.ckpt: not a readable checkpoint" in refused.stderr and "delete" in refused.stderr
    assert weights.read_bytes() == whole

    (kept / "last.ckpt").write_bytes(good)
    again = run(["embedlab", "train", "evaluator"], repo_copy)
    said = re.search(r"resuming evaluator from \S+last\.ckpt: (\d+) epoch\(s\), step (\d+) done", again.stdout + again.stderr)
    assert said and 1 <= int(said.group(1)) < 4, again.stdout[-2000:] + again.stderr[-2000:]
    assert weights.read_bytes() == whole  # the resumed fit ends where the uninterrupted one did
    assert not kept.exists()

