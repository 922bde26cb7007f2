"""Flow logic without a Prefect server: DAG order from dvc.yaml, stage runs, artifact contents.

PREFECT_SERVER_EPHEMERAL_ENABLED=false (tests/conftest.py): any accidental engine call here
fails at once instead of starting a temporary server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from embedlab import orchestration as orch
from embedlab.paths import Paths

REPO = Path(__file__).resolve().parents[2]


def test_ephemeral_server_is_off_in_fast_tests():
    assert os.environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] == "false"


def dvc_vars() -> dict:
    merged = {}
    for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["vars"]:
        merged.update(entry)
    return merged


def test_the_model_lists_of_dvc_yaml_agree_with_each_other_and_the_cli():
    from embedlab.catalogue import MODELS

    v = dvc_vars()
    # The fixed references train in their own stage group (their weights are committed, cache: false);
    # every other model trains from its package. Evaluate and publish serve them all.
    assert set(v["models"]) == set(v["references"]) | set(v["methods"]) == set(MODELS)
    assert not set(v["references"]) & set(v["methods"])
    for name in v["methods"]:
        assert (REPO / "src/embedlab/methods" / name).is_dir(), name
        assert v["models"][name]["code"] == f"src/embedlab/methods/{name}"


def test_dag_order_comes_from_dvc_yaml():
    stages = orch.dag_stages(REPO)
    v = dvc_vars()
    models = list(v["models"])
    train = {m: f"reference@{m}" if m in v["references"] else f"train@{m}" for m in models}
    expected = {"prepare", "validate", "partition", "pretrain_ddpm", "pretrain_tokenizer"} | set(train.values()) | {
        f"{s}@{m}" for s in ("evaluate", "publish") for m in models}
    assert set(stages) == expected and len(stages) == len(expected)
    pos = stages.index
    assert pos("prepare") < pos("validate")
    # the given networks come before what reads them
    assert pos("pretrain_ddpm") < pos("train@diffusion") and pos("pretrain_tokenizer") < pos("train@vq")
    assert pos("pretrain_tokenizer") < pos("train@federated")
    for m in models:
        assert pos("validate") < pos(train[m]) < pos(f"evaluate@{m}") < pos(f"publish@{m}")
        assert pos("reference@evaluator") < pos(f"evaluate@{m}")  # every model is scored by the evaluator


def test_dag_target_keeps_only_what_it_needs():
    assert orch.dag_stages(REPO, "validate") == ["prepare", "validate"]
    upstream = orch.dag_stages(REPO, "publish@backbone")
    assert upstream[-1] == "publish@backbone" and "train@gan" not in upstream and "publish@evaluator" not in upstream
    with pytest.raises(KeyError, match="no stage 'train@nope'"):
        orch.dag_stages(REPO, "train@nope")


def test_experiment_command_applies_overrides_like_exp_run_S():
    cmd = orch.experiment_command(["publish@evaluator"], {"evaluator.lr": 0.001, "data.source": "npz:x.npz"}, "lr-try")
    assert cmd[1:] == ["exp", "run", "-S", "evaluator.lr=0.001", "-S", "data.source=npz:x.npz", "--name", "lr-try", "publish@evaluator"]
    assert orch.experiment_command(["t"], ["a.b=1"])[-3:] == ["-S", "a.b=1", "t"]
    with pytest.raises(ValueError, match="'lr' is not KEY=VALUE"):
        orch.experiment_command(["t"], ["lr"])


def test_artifact_keys_are_valid_prefect_keys():
    assert orch.artifact_key("metrics", "evaluator") == "metrics-evaluator"
    assert orch.artifact_key("registry", "My_Model@2") == "registry-my-model-2"
    assert orch.stage_model("publish@vq") == "vq" and orch.stage_model("prepare") is None


def _tiny_dvc_repo(root: Path) -> None:
    env = orch.tool_env()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(orch.dvc_command() + ["init", "-q"], cwd=root, check=True, env=env)
    (root / "dvc.yaml").write_text(
        "stages:\n  hello:\n    cmd: echo hello-from-stage && echo hi > out.txt\n    outs: [out.txt]\n"
        "  broken:\n    cmd: echo about-to-fail && exit 3\n"
    )
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], cwd=root, check=True)


def test_run_stage_streams_lines_and_skips_when_up_to_date(tmp_path):
    from flows.pipeline import run_stage

    _tiny_dvc_repo(tmp_path)
    seen = []
    first = orch.run_stage("hello", tmp_path, log=seen.append)
    assert first["ran"] is True and "hello-from-stage" in seen
    second = run_stage.fn("hello", str(tmp_path))  # the task body itself, no engine
    assert second["ran"] is False and second["stage"] == "hello"
    with pytest.raises(orch.StageFailed, match="about-to-fail") as err:
        orch.run_stage("broken", tmp_path, log=lambda line: None)
    assert err.value.returncode != 0


def test_remote_pull_and_push_with_a_real_local_remote(tmp_path, caplog):
    import logging

    from flows.pipeline import sync_remote

    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    _tiny_dvc_repo(repo)
    with caplog.at_level(logging.INFO, logger="embedlab.flows"):
        assert sync_remote.fn(str(repo), "pull") is False
    assert "No DVC remote configured" in caplog.text
    subprocess.run(orch.dvc_command() + ["remote", "add", "-d", "store", str(remote)], cwd=repo, check=True)
    orch.run_stage("hello", repo, log=lambda line: None)
    assert sync_remote.fn(str(repo), "push") is True
    assert any(p.is_file() for p in remote.rglob("*"))
    (repo / "out.txt").unlink()
    subprocess.run(["rm", "-rf", str(repo / ".dvc" / "cache")], check=True)
    assert sync_remote.fn(str(repo), "pull") is True
    assert (repo / "out.txt").read_text() == "hi\n"


def test_overrides_run_as_a_dvc_experiment(tmp_path):
    _tiny_dvc_repo(tmp_path)
    (tmp_path / "params.yaml").write_text("model:\n  lr: 0.1\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  fit:\n    cmd: python -c \"import yaml; print(yaml.safe_load(open('params.yaml')))\" > fit.txt\n"
        "    params: [model.lr]\n    outs: [fit.txt]\n"
    )
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["add", "-A"], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "fit"], cwd=tmp_path, check=True)
    code, lines = orch.stream(orch.experiment_command(["fit"], {"model.lr": 0.5}, "lr-half"), tmp_path, lambda line: None)
    assert code == 0, lines
    assert "0.5" in (tmp_path / "fit.txt").read_text()
    shown = subprocess.run(orch.dvc_command() + ["exp", "show", "--json"], cwd=tmp_path, env=orch.tool_env(),
                           capture_output=True, text=True, check=True).stdout
    assert "lr-half" in shown  # recorded as an experiment, not a silent edit


def test_validation_markdown_lists_failing_checks(tmp_path):
    paths = Paths(tmp_path)
    passed, text = orch.validation_markdown(paths)
    assert passed is False and "was not written" in text
    paths.validation_report.mkdir(parents=True)
    summary = {"success": False, "num_rows": 3, "num_classes": 2, "failed": 1, "data_docs": None, "checks": [
        {"check": "pixels_finite", "engine": "arrays", "success": False, "column": None, "details": "1 NaN in id7"},
        {"check": "rows_present", "engine": "arrays", "success": True, "column": None, "details": "3 rows"}]}
    (paths.validation_report / "summary.json").write_text(json.dumps(summary))
    passed, text = orch.validation_markdown(paths)
    assert passed is False and "pixels_finite" in text and "1 NaN in id7" in text and "|" in text


def test_metric_rows_and_registry_markdown(tmp_path):
    paths = Paths(tmp_path)
    paths.metrics("m").parent.mkdir(parents=True)
    paths.metrics("m").write_text(json.dumps({"test_accuracy": 0.9, "per_class": {"0": 1.0}}))
    assert orch.metrics_rows(paths, "m") == [{"metric": "test_accuracy", "value": 0.9}, {"metric": "per_class.0", "value": 1.0}]
    paths.receipt("m").parent.mkdir(parents=True)
    paths.receipt("m").write_text(json.dumps({
        "name": "embedlab-m", "version": 3, "alias": "challenger", "metric": "test_accuracy", "value": 0.9,
        "previous_champion_value": 0.95, "min_delta": 0.0, "git_commit": "abc", "data_hash": "d", "tracking_uri": "sqlite:///x"}))
    text = orch.registry_markdown(paths, "m")
    assert "embedlab-m v3" in text and "challenger" in text and "0.95" in text


def test_prefect_yaml_deployments():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"nightly-retrain", "train-model", "validate-data"}
    nightly = deployments["nightly-retrain"]
    assert nightly["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": True}]
    assert {d["work_pool"]["name"] for d in deployments.values()} == {"embedlab"}
    assert set(deployments["train-model"]["parameters"]) >= {"model", "overrides"}
    import flows.pipeline as module

    for d in deployments.values():
        path, func = d["entrypoint"].split(":")
        assert (REPO / path).exists()
        flow = getattr(module, func)
        assert set(d.get("parameters") or {}) <= set(flow.parameters.properties), d["name"]


def test_stream_logs_one_line_per_epoch(tmp_path):
    script = tmp_path / "fake_fit.py"
    script.write_text(
        "print('Sanity Checking: |          | 0/? [00:00<?, ?it/s]')\n"
        "for e in range(2):\n"
        "    print(f'Epoch {e}:  50%|#####     | 10/20 [00:00<00:00, 46.44it/s]')\n"
        "    for _ in range(2):\n"
        "        print(f'Epoch {e}: 100%|##########| 20/20 [00:00<00:00, 38.78it/s, val_acc=0.{e}]')\n"
        "print('trained')\n"
    )
    logged = []
    code, lines = orch.stream([sys.executable, str(script)], tmp_path, logged.append)
    assert code == 0 and len(lines) == 8
    assert logged == ["Epoch 0: 100%|##########| 20/20 [00:00<00:00, 38.78it/s, val_acc=0.0]",
                      "Epoch 1: 100%|##########| 20/20 [00:00<00:00, 38.78it/s, val_acc=0.1]", "trained"]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_update_sources_pulls_code_and_updates_imported_data_and_the_dag_skips_data_files(tmp_path):
    """What the nightly run does before its stages: git pull (fast-forward) and `dvc update` of
    `dvc import`ed data; data stages (.dvc files) are inputs, never steps of the flow."""
    env, dvc = orch.tool_env(), orch.dvc_command()
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    _git(upstream, "init", "-q")
    subprocess.run(dvc + ["init", "-q"], cwd=upstream, check=True, env=env)
    (upstream / "data.txt").write_text("one\n")
    subprocess.run(dvc + ["add", "-q", "data.txt"], cwd=upstream, check=True, env=env)
    _git(upstream, "add", "-A")
    _git(upstream, "commit", "-qm", "one")

    origin = tmp_path / "origin"  # the project, as the deployment's checkout follows it
    origin.mkdir()
    _tiny_dvc_repo(origin)
    subprocess.run(dvc + ["import", "-q", str(upstream), "data.txt", "-o", "imported.txt"], cwd=origin, check=True, env=env)
    (origin / "added.txt").write_text("mine\n")
    subprocess.run(dvc + ["add", "-q", "added.txt"], cwd=origin, check=True, env=env)
    _git(origin, "add", "-A")
    _git(origin, "commit", "-qm", "data")
    repo = tmp_path / "repo"
    _git(tmp_path, "clone", "-q", str(origin), str(repo))
    assert orch.imported_data(repo) == [repo / "imported.txt.dvc"]
    assert orch.dag_stages(repo) == ["hello", "broken"]  # added.txt.dvc and imported.txt.dvc are not steps

    seen = []
    nothing = orch.update_sources(repo, seen.append, git_pull=True, update_imports=True)
    assert nothing == {"base": _git(repo, "rev-parse", "HEAD"), "pulled": False, "updated": []}

    (upstream / "data.txt").write_text("two\n")
    subprocess.run(dvc + ["add", "-q", "data.txt"], cwd=upstream, check=True, env=env)
    _git(upstream, "commit", "-qam", "two")
    (origin / "README").write_text("new code\n")
    _git(origin, "add", "-A")
    _git(origin, "commit", "-qm", "code")
    before = _git(repo, "rev-parse", "HEAD")
    both = orch.update_sources(repo, seen.append, git_pull=True, update_imports=True)
    assert both["base"] == before and both["pulled"] and both["updated"] == ["imported.txt.dvc"]
    assert (repo / "imported.txt").read_text() == "two\n" and (repo / "README").read_text() == "new code\n"

    # a diverged checkout: the pull refuses, nothing is updated, the message says why
    (repo / "local.txt").write_text("local\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "local")
    (origin / "other.txt").write_text("other\n")
    _git(origin, "add", "-A")
    _git(origin, "commit", "-qm", "other")
    with pytest.raises(RuntimeError, match="git pull --ff-only failed"):
        orch.update_sources(repo, seen.append, git_pull=True)
