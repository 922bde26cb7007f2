"""Job-level resume (issue 32, embedlab.jobstore): a method stage killed after some of its jobs
finished takes them from .embedlab/resume/<method>/jobs/ on the rerun and writes what an
uninterrupted run writes. (A killed Lightning fit resumes too: test_resume.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from .conftest import BIN, run, set_params

pytestmark = pytest.mark.slow


def _without_timings(node):
    if isinstance(node, dict):
        return {k: _without_timings(v) for k, v in node.items() if "seconds" not in k}
    if isinstance(node, list):
        return [_without_timings(v) for v in node]
    return node


def test_a_killed_method_stage_resumes_without_redoing_its_finished_jobs(repo_copy):
    """Job-level resume (embedlab.jobstore): train@federated's runs are independent jobs; killed
    after some have finished, the rerun takes those from .embedlab/resume/federated/jobs/, runs
    the rest, and writes the outputs an uninterrupted run writes (timings aside). Other params,
data or code start fresh, and a corrupt kept job is refused: tests/unit/test_jobstore.py."""
    set_params(repo_copy, {"federated": {"seeds": [0], "feature_shift": {"sizes": [10]}}})  # 14 runs
    run(["embedlab", "prepare"], repo_copy)
    run(["embedlab", "partition"], repo_copy)
    out = repo_copy / "models/federated"
    store = repo_copy / ".embedlab/resume/federated/jobs"
    run(["embedlab", "train", "federated"], repo_copy)  # uninterrupted
    whole_states = (out / "runs.safetensors").read_bytes()
    whole = _without_timings(json.loads((out / "runs.json").read_text()))
    assert not store.exists()  # removed once the outputs are written

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen([str(BIN / "embedlab"), "train", "federated"], cwd=repo_copy, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list(store.glob("*.pt"))) < 3:
        assert proc.poll() is None, "the stage ended before three jobs were kept"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "runs.json").exists()  # the stage's outputs are written at its end only

    again = run(["embedlab", "train", "federated"], repo_copy)
    said = re.search(r"resuming federated: (\d+) finished job\(s\)", again.stdout + again.stderr)
    assert said and int(said.group(1)) >= 3, again.stdout[-2000:] + again.stderr[-2000:]
    assert (out / "runs.safetensors").read_bytes() == whole_states
    assert _without_timings(json.loads((out / "runs.json").read_text())) == whole
    assert not store.exists()
