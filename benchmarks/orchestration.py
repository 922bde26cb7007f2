"""Orchestration overhead: the same pipeline by `dvc repro --force` and by the Prefect flow.

Side by side in one run, on a throw-away copy of this repository with the params you pass
(default: the repository's own params.yaml), against a real local Prefect server:

  1. `dvc repro --force`: every stage runs, in one DVC process,
  2. the same stages one `dvc repro --single-item --force` process each (what a flow task
     runs), without Prefect: the cost of per-stage DVC start-up alone,
  3. `pipeline(force=True)`: the Prefect flow, one task per stage,
  4. per-task overhead with a running server: a flow of N no-op tasks vs an empty flow.

Arms 1-3 run in the order 1,2,3 then 3,2,1 for each repeat (drift cancels in the mean).

    .venv/bin/python benchmarks/orchestration.py [--params my-params.yaml] [--tiny] [--repeats 2]

Writes benchmarks/results/orchestration.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def copy_repo(dest: Path, params: Path | None, tiny: bool = False) -> Path:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    if params:
        shutil.copy2(params, dest / "params.yaml")
    if tiny:  # the integration tests' tiny budgets over the params: a whole DAG in ~3 min here
        import yaml

        sys.path.insert(0, str(REPO))
        from tests.integration.conftest import TINY, merge

        merged = merge(yaml.safe_load((dest / "params.yaml").read_text()), TINY)
        (dest / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    git = ["git", "-c", "user.email=b@b", "-c", "user.name=bench"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "bench"], cwd=dest, check=True)
    return dest


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("Prefect server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true", help="the tests' TINY budgets (tests/integration/conftest.py) over the params")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/orchestration.json")
    args = parser.parse_args()

    os.environ.update(GX_ANALYTICS_ENABLED="false", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    work = Path(tempfile.mkdtemp(prefix="embedlab-bench-"))
    server, url = start_server(work / "prefect-home")
    os.environ["PREFECT_API_URL"] = url
    try:
        from prefect import flow, task

        sys.path.insert(0, str(REPO))
        from flows.pipeline import pipeline

        repo = copy_repo(work / "repo", args.params, args.tiny)
        subprocess.run(["dvc", "repro"], cwd=repo, check=True, capture_output=True)  # warm caches and imports once

        from embedlab.orchestration import dag_stages

        stages = dag_stages(repo)

        def dvc_once() -> float:
            start = time.perf_counter()
            subprocess.run(["dvc", "repro", "--force"], cwd=repo, check=True, capture_output=True)
            return time.perf_counter() - start

        def dvc_per_stage() -> float:
            start = time.perf_counter()
            for stage in stages:
                subprocess.run(["dvc", "repro", "--single-item", "--force", stage], cwd=repo, check=True, capture_output=True)
            return time.perf_counter() - start

        def prefect_flow() -> float:
            start = time.perf_counter()
            pipeline(root=str(repo), force=True, retries=0)
            return time.perf_counter() - start

        arms = {"dvc_repro": dvc_once, "dvc_per_stage": dvc_per_stage, "prefect_flow": prefect_flow}
        times: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.repeats):
            for order in (list(arms), list(reversed(arms))):
                for name in order:
                    times[name].append(arms[name]())

        @task
        def noop(i: int) -> int:
            return i

        @flow
        def many(n: int) -> None:
            for i in range(n):
                noop(i)

        many(1)  # registration of flow and task happens once
        start = time.perf_counter()
        many(0)
        empty = time.perf_counter() - start
        start = time.perf_counter()
        many(args.tasks)
        per_task = (time.perf_counter() - start - empty) / args.tasks
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    mean = {name: sum(v) / len(v) for name, v in times.items()}
    report = {
        "params": str(args.params or "params.yaml") + (" + tests/integration/conftest.py TINY" if args.tiny else ""),
        "stages": len(stages),
        "runs_per_arm": len(times["dvc_repro"]),
        "seconds": {name: [round(t, 2) for t in v] for name, v in times.items()},
        "mean_seconds": {name: round(v, 2) for name, v in mean.items()},
        "orchestration_overhead_fraction": round(mean["prefect_flow"] / mean["dvc_repro"] - 1, 4),
        "per_stage_dvc_startup_fraction": round(mean["dvc_per_stage"] / mean["dvc_repro"] - 1, 4),
        "prefect_only_fraction": round(mean["prefect_flow"] / mean["dvc_per_stage"] - 1, 4),
        "prefect_per_task_overhead_seconds": round(per_task, 4),
        "empty_flow_seconds": round(empty, 3),
        "machine": f"{os.cpu_count()} cores",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for key, value in report.items():
        print(f"{key:40s} {value}")


if __name__ == "__main__":
    main()
