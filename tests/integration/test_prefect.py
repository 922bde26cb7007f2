"""Scheduled runs for real: a Prefect server on 127.0.0.1, the process pool, `prefect deploy`
from prefect.yaml, a worker, and the pipeline on a tiny-params copy of the repository."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from .conftest import BIN, set_params

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Prefect server did not start:\n{(home / 'server.log').read_text()[-2000:]}") from exc
                time.sleep(0.5)
        yield {"url": url, "env": {**env, "PREFECT_API_URL": url}}
    finally:
        # The server runs uvicorn in children: stop the whole group, pass or fail.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def prefect(args: list[str], server: dict, cwd: Path, extra_env: dict | None = None, timeout: int = 900) -> str:
    env = {**server["env"], "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(extra_env or {})}
    out = subprocess.run([str(BIN / "prefect"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"prefect {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout + out.stderr


def client(server: dict):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Client:
        def __enter__(self):
            self._settings = temporary_settings({PREFECT_API_URL: server["url"]})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc):
            self._client.__exit__(*exc)
            self._settings.__exit__(*exc)

    return _Client()


def artifacts_of(server: dict, flow_run_id) -> dict[str, object]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with client(server) as c:
        found = c.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


def _nightly(server: dict, repo: Path, report: bool = True) -> tuple[object, dict]:
    """One nightly-retrain run (target publish@evaluator) through a worker: (flow run, artifacts)."""
    started = prefect(["deployment", "run", "pipeline/nightly-retrain", "--param", "target=publish@evaluator",
                       "--param", f"report={str(report).lower()}"], server, repo)
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", started).group(1)
    prefect(["worker", "start", "--pool", "embedlab", "--run-once"], server, repo.parent)
    with client(server) as c:
        run = c.read_flow_run(flow_run_id)
    assert run.state.is_completed(), run.state
    return run, artifacts_of(server, run.id)


def test_nightly_deployment_runs_the_pipeline_through_a_worker(prefect_server, repo_copy, tmp_path):
    """As an operator following Prefect's docs: `prefect deploy --all` from the repository root,
    nothing set; the worker starts in another folder. The run is the nightly deployment's flow
    with its `target` parameter set to the registry's first model (prepare, the gate, the two
    reference networks, evaluate and publish: six stages as tasks); the whole DAG is
    test_pipeline.py's `dvc repro`, and the flow's stage order is test_orchestration's.

    The data is a `dvc import` from another repository (the example-get-started way). Upstream
    changes after the import; the night's `dvc update` brings the new revision in before the
    stages (prepare, the gate, the networks retrained on it, a registry version), and the
    `changes` artifact reports the diff against the commit the night started from. The next
    night, with nothing new, reruns nothing."""
    from embedlab.data.sources import load_digits_source

    from .conftest import commit
    from .conftest import run as sh

    upstream = tmp_path / "upstream"
    upstream.mkdir()
    sh(["git", "init", "-q"], upstream)
    sh(["dvc", "init", "-q"], upstream)
    raw = load_digits_source()
    images = np.stack(raw.images).astype(np.uint8)
    np.savez(upstream / "digits.npz", images=images, labels=raw.labels)
    sh(["dvc", "add", "digits.npz"], upstream)
    commit(upstream, "the data set")
    sh(["dvc", "import", str(upstream), "digits.npz", "-o", "data/raw/digits.npz"], repo_copy)
    set_params(repo_copy, {"data": {"source": "npz:data/raw/digits.npz", "pixel_range": [0.0, 16.0]}})
    base = commit(repo_copy, "the data is an import")
    pixel = images[:20, 3, 3]
    images[:20, 3, 3] = np.where(pixel < 16, pixel + 1, pixel - 1)  # upstream changes twenty pixels (still 0-16)
    np.savez(upstream / "digits.npz", images=images, labels=raw.labels)
    sh(["dvc", "add", "digits.npz"], upstream)
    commit(upstream, "twenty pixels")
    imported = (repo_copy / "data/raw/digits.npz.dvc").read_text()

    prefect(["work-pool", "create", "embedlab", "--type", "process"], prefect_server, repo_copy)
    prefect(["--no-prompt", "deploy", "--all"], prefect_server, repo_copy)
    started = prefect(["deployment", "run", "pipeline/nightly-retrain", "--param", "target=publish@evaluator"],
                      prefect_server, repo_copy)
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", started).group(1)
    elsewhere = repo_copy.parent / "worker-home"
    elsewhere.mkdir()
    prefect(["worker", "start", "--pool", "embedlab", "--run-once"], prefect_server, elsewhere)

    with client(prefect_server) as c:
        run = c.read_flow_run(flow_run_id)
        deployment = c.read_deployment_by_name("pipeline/nightly-retrain")
        names = {d.name for d in c.read_deployments()}
    assert run.state.is_completed(), run.state
    assert names == {"nightly-retrain", "train-model", "validate-data"}
    schedule = deployment.schedules[0].schedule
    assert schedule.cron == "0 2 * * *" and schedule.timezone == "UTC"
    assert deployment.work_pool_name == "embedlab"
    # Each deployment runs in the checkout it was deployed from, whatever the worker's folder.
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(repo_copy.resolve())}}]
    assert "root" not in deployment.parameters

    assert run.parameters["target"] == "publish@evaluator"
    with client(prefect_server) as c:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        tasks = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    ran = {t.name for t in tasks if t.name.startswith(("prepare", "validate", "reference@", "evaluate@", "publish@",
                                                       "train@", "pretrain"))}
    assert ran == {"prepare", "validate", "reference@evaluator", "reference@backbone", "evaluate@evaluator",
                   "publish@evaluator"}, ran
    assert all(t.state.is_completed() for t in tasks)

    artifacts = artifacts_of(prefect_server, run.id)
    assert {"validation-summary", "metrics-evaluator", "registry-evaluator"} <= set(artifacts)
    assert "passed" in artifacts["validation-summary"].data.lower()
    assert "champion" in artifacts["registry-evaluator"].data
    receipt = json.loads((repo_copy / "registry/evaluator.json").read_text())
    assert receipt["alias"] == "champion" and receipt["version"] == 1
    assert (repo_copy / "data/raw/digits.npz.dvc").read_text() != imported  # dvc update pinned the new rev
    assert np.load(repo_copy / "data/raw/digits.npz")["images"][0, 3, 3] == images[0, 3, 3]
    assert base[:12] in artifacts["changes"].data and "evaluator" in artifacts["changes"].data

    lock, receipt = (repo_copy / "dvc.lock").read_text(), (repo_copy / "registry/evaluator.json").read_text()
    _nightly(prefect_server, repo_copy, report=False)  # nothing new upstream, nothing new here: nothing reruns
    assert (repo_copy / "dvc.lock").read_text() == lock and (repo_copy / "registry/evaluator.json").read_text() == receipt


def test_failed_gate_fails_the_flow_run_and_publishes_nothing(prefect_server, repo_copy):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from embedlab.data.sources import load_digits_source

    raw = load_digits_source()
    labels = raw.labels.copy()
    labels[11] = 42  # outside the declared class range
    np.savez(repo_copy / "data/raw/bad.npz", images=np.stack(raw.images), labels=labels)
    set_params(repo_copy, {"data": {"source": "npz:data/raw/bad.npz", "num_classes": 10}})

    from prefect.logging.handlers import APILogWorker

    from flows.pipeline import pipeline

    with temporary_settings({PREFECT_API_URL: prefect_server["url"]}):
        state = pipeline(root=str(repo_copy), return_state=True)
        APILogWorker.drain_all(timeout=10)  # ship this process's run logs while the server is up
    assert state.is_failed(), state
    flow_run_id = state.state_details.flow_run_id
    with client(prefect_server) as c:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        tasks = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    ran = {t.name for t in tasks}
    assert "validate" in ran
    assert not [name for name in ran if name.startswith(("reference@", "train@", "publish@", "partition"))], ran
    summary = artifacts_of(prefect_server, flow_run_id)["validation-summary"].data
    assert "less_than(10)" in summary and "42" in summary
    assert not (repo_copy / "registry/evaluator.json").exists()
    assert not (repo_copy / "models/vq").exists() and not (repo_copy / "data/partitions").exists()
