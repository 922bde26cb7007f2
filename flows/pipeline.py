"""Prefect flows over the one DAG in dvc.yaml: thin wrappers around embedlab.orchestration.

- `pipeline`: every stage (or those up to `target`) in DAG order, as tasks. The gate runs
  first; a failed gate fails the run with its checks in an artifact, and nothing after it runs.
  The nightly deployment first updates its inputs (git pull, `dvc update` of imported data,
  each a parameter) and ends with a report of what changed.
- `train_model`: one model through `dvc exp run -S ...`, so overrides are a DVC experiment.
- `validate_data`: the gate alone, for new data.

Tasks pass stage names, paths and small dicts, never models or trainers.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.tasks import exponential_backoff

from embedlab import orchestration as orch
from embedlab.paths import Paths

TRAIN_PREFIXES = ("train@", "reference@")  # stages that train: retried with backoff


def _log():
    """The run logger inside a flow; a plain logger when a task's `.fn` is called directly."""
    import logging

    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger().info
    except MissingContextError:
        return logging.getLogger("embedlab.flows").info


@task(task_run_name="{stage}")
def run_stage(stage: str, root: str, force: bool = False) -> dict:
    """One DVC stage; its output lines stream into the Prefect run log."""
    return orch.run_stage(stage, Path(root), log=_log(), force=force)


@task
def validation_gate_report(root: str) -> bool:
    passed, markdown = orch.validation_markdown(Paths(Path(root)))
    create_markdown_artifact(markdown, key="validation-summary", description="Data validation gate")
    return passed


@task
def stage_artifacts(stage: str, root: str) -> None:
    """Metrics table after evaluate@<m>, registry decision after publish@<m>."""
    paths, model = Paths(Path(root)), orch.stage_model(stage)
    if stage.startswith("evaluate@") and paths.metrics(model).exists():
        create_table_artifact(orch.metrics_rows(paths, model), key=orch.artifact_key("metrics", model),
                              description=f"metrics/{model}.json")
    elif stage.startswith("publish@") and paths.receipt(model).exists():
        create_markdown_artifact(orch.registry_markdown(paths, model), key=orch.artifact_key("registry", model),
                                 description=f"registry decision for embedlab-{model}")


@task
def sync_remote(root: str, direction: str) -> bool:
    """dvc pull / push when a DVC remote is configured; says so once when there is none."""
    log = _log()
    if not orch.remote_configured(Path(root)):
        if direction == "pull":
            log("No DVC remote configured: skipping pull/push, the local DVC cache is the store.")
        return False
    args = ["pull", "--allow-missing"] if direction == "pull" else ["push"]
    code, lines = orch.stream(orch.dvc_command() + args, Path(root), log)
    if code != 0:
        raise RuntimeError(f"dvc {direction} failed:\n" + "\n".join(lines[-20:]))
    return True


@task
def update_sources(root: str, git_pull: bool, update_imports: bool) -> dict:
    """git pull (of the deployed branch) and `dvc update` of imported data, each when asked."""
    return orch.update_sources(Path(root), _log(), git_pull=git_pull, update_imports=update_imports)


@task
def change_report(root: str, base: str) -> str:
    """What this run changed, against the commit it started from: the PR report's params and
    metrics diff and registry decisions (`embedlab report`), as the `changes` artifact."""
    from embedlab.report import write_report

    written = write_report(Path(root), base, Path("reports/nightly.md"), Path("reports/nightly_plots"), None)
    markdown = Path(written).read_text()
    create_markdown_artifact(markdown, key="changes", description=f"what this run changed against {base[:12]}")
    return markdown


def _run_dag(root: str, stages: list[str], retries: int, retry_delay: float, force: bool) -> list[dict]:
    results = []
    for stage in stages:
        runner = run_stage
        if stage.startswith(TRAIN_PREFIXES) and retries > 0:
            runner = run_stage.with_options(retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=retry_delay))
        if stage == "validate":
            try:
                results.append(runner(stage, root, force))
            finally:
                # The summary is written pass or fail, so a failed gate still shows its checks.
                passed = validation_gate_report(root)
            if not passed:
                raise RuntimeError("data validation failed: see the validation-summary artifact")
            continue
        results.append(runner(stage, root, force))
        stage_artifacts(stage, root)
    return results


@flow(name="pipeline", log_prints=True)
def pipeline(root: str = ".", target: str | None = None, retries: int = 2, retry_delay: float = 10.0, force: bool = False,
             git_pull: bool = False, update_imports: bool = False, report: bool = False) -> list[dict]:
    """The DAG of dvc.yaml (all of it, or `target` and what it needs) as Prefect tasks.

    A scheduled run first brings its inputs up to date, each step when asked: `git_pull` (the
    checked-out branch, fast-forward only), `update_imports` (`dvc update` of every `dvc
    import`ed data set), then the DVC remote's pull when one is configured. `report` ends the
    run with what it changed against the commit it started from (the `changes` artifact)."""
    root = str(Path(root).resolve())
    base = orch.git_head(Path(root)) if report else None  # before anything moves HEAD
    if git_pull or update_imports:
        update_sources(root, git_pull, update_imports)
    stages = orch.dag_stages(Path(root), target)
    get_run_logger().info("stages in DAG order: %s", ", ".join(stages))
    remote = sync_remote(root, "pull")
    results = _run_dag(root, stages, retries, retry_delay, force)
    if remote:
        sync_remote(root, "push")
    if report:
        change_report(root, base)
    return results


@flow(name="validate-data")
def validate_data(root: str = ".") -> list[dict]:
    """prepare + validate only: is the new data fit to train on?"""
    return pipeline(root=root, target="validate", retries=0)


@flow(name="train-model")
def train_model(model: str, overrides: dict | list[str] | None = None, root: str = ".", experiment_name: str | None = None) -> dict:
    """One model through `dvc exp run -S key=value ... publish@<model>`: a DVC experiment."""
    root = str(Path(root).resolve())
    stages = orch.dag_stages(Path(root), f"publish@{model}")
    cmd = orch.experiment_command([f"publish@{model}"], overrides, experiment_name)
    logger = get_run_logger()
    logger.info("%s", " ".join(cmd))
    code, lines = orch.stream(cmd, Path(root), logger.info)
    # The gate runs inside the experiment too; its report is there pass or fail.
    if "validate" in stages and not validation_gate_report(root):
        raise RuntimeError("data validation failed: see the validation-summary artifact")
    if code != 0:
        raise orch.StageFailed(f"exp run publish@{model}", code, "\n".join(lines[-40:]))
    for stage in (f"evaluate@{model}", f"publish@{model}"):
        stage_artifacts(stage, root)
    return {"model": model, "overrides": overrides, "ran": [line for line in lines if line.startswith("Running stage")]}


if __name__ == "__main__":
    pipeline()
