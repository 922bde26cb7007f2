"""A teammate and a pull request, each on a clone of the tiny run (conftest.py `tiny_pipeline`):
the run's outputs travel through its DVC remote, never retrained."""

import json
import re
from pathlib import Path

import pytest

from .conftest import run, set_params

pytestmark = pytest.mark.slow

def test_a_teammate_pulls_from_a_remote_and_a_pull_request_reruns_only_what_it_changed(tiny_pipeline, tmp_path):
    # A teammate's round trip through a DVC remote (README, "Sharing results: a DVC remote"):
    # the run was pushed to the team's remote (the fixture: `dvc remote add -d team`, commit,
    # `dvc push`); a fresh clone pulls, and nothing reruns there. The registry is the run's
    # machine's (mlflow.db is not in git): the clone gets the receipts, not the registrations.
    assert any(tiny_pipeline.remote.rglob("*")), "the run was pushed"
    clone = tmp_path / "teammate"
    run(["git", "clone", "-q", str(tiny_pipeline.origin), str(clone)], tmp_path)
    assert not (clone / "models/gan/config.json").exists()  # DVC-tracked: not in git
    run(["dvc", "pull"], clone)
    assert (clone / "models/gan/config.json").exists() and (clone / "registry/gan.json").exists()
    pulled = run(["dvc", "repro"], clone)
    assert "Running stage" not in pulled.stdout
    assert "up to date" in run(["dvc", "status"], clone).stdout
    assert not (clone / "mlflow.db").exists()

    # A pull request, as .github/workflows/pr-report.yml runs it with a remote configured:
    # `dvc pull --allow-missing`, then `dvc exp run`, on a fresh clone reruns only the stages whose params
    # the PR changed (here one method's budget: vq's three stages), and fetches everything else
    # (the other trained models) from the remote instead of retraining.
    pr = tmp_path / "pull-request"
    run(["git", "clone", "-q", str(tiny_pipeline.origin), str(pr)], tmp_path)
    set_params(pr, {"vq": {"prior": {"lr": 0.002}}})
    workflow = (Path(__file__).resolve().parents[2] / ".github/workflows/pr-report.yml").read_text()
    assert "dvc pull --allow-missing" in workflow and "dvc exp run\n" in workflow
    for key, value in (("user.email", "t@t"), ("user.name", "t")):  # `dvc exp run` commits the experiment
        run(["git", "config", key, value], pr)
    run(["dvc", "pull", "--allow-missing"], pr)
    exp = run(["dvc", "exp", "run"], pr)
    reran = re.findall(r"Running stage '([^']+)'", exp.stdout)
    assert sorted(reran) == ["evaluate@vq", "publish@vq", "train@vq"], exp.stdout[-3000:]
    assert (pr / "models/gan/config.json").exists()  # the GAN came from the remote, not retrained
    assert json.loads((pr / "registry/vq.json").read_text())["version"] == 1  # the PR runner's own registry
