"""`embedlab report` on a real two-commit history: a param change shows up with its effect."""

import re

import pytest

from .conftest import run, set_params

pytestmark = pytest.mark.slow

NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"


def commit(repo, message: str) -> str:
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message], repo)
    return run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


def section(text: str, title: str) -> str:
    return text.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]


def test_report_shows_param_change_and_its_metrics(repo_copy):
    run(["dvc", "repro"], repo_copy)
    base = commit(repo_copy, "baseline run")   # dvc.lock, metrics/, plots/, dvclive/

    run(["git", "checkout", "-qb", "longer-training"], repo_copy)
    set_params(repo_copy, {"evaluator": {"max_epochs": 3}})
    second = run(["dvc", "repro"], repo_copy)
    assert "Running stage 'reference@evaluator'" in second.stdout
    assert "Running stage 'prepare'" not in second.stdout
    commit(repo_copy, "evaluator: 3 epochs")

    out = run(["embedlab", "report", "--base", base], repo_copy)
    assert "reports/pr.md" in out.stdout
    text = (repo_copy / "reports/pr.md").read_text()

    assert f"## embedlab report vs `{base[:12]}`" in text
    params = section(text, "Params")
    assert f"| {base[:12]} " in params   # the base heads its column
    assert re.search(r"\|\s*evaluator\.max_epochs\s*\|\s*2\s*\|\s*3\s*\|", params), text

    # At least one metric row with old, new and change, and the change is new - old.
    rows = re.findall(rf"\|\s*metrics/\w+\.json\s*\|\s*(\S+)\s*\|\s*({NUMBER})\s*\|\s*({NUMBER})\s*\|\s*({NUMBER})\s*\|",
                      section(text, "Metrics"))
    assert rows, text
    for _, old, new, change in rows:
        assert float(new) - float(old) == pytest.approx(float(change), abs=1e-4)

    # The second publish of the evaluator met the first as the champion to beat.
    registry = section(text, "Registry decisions")
    assert re.search(r"\| embedlab-evaluator \| v2 \| \*\*(champion|challenger)\*\* \| test_accuracy \| "
                     rf"{NUMBER} \| {NUMBER} \|", registry), registry

    pictures = section(text, "Pictures")
    assert re.search(r"!\[plots/evaluator/\w+\.png\]\(\.\./plots/evaluator/\w+\.png\)", pictures), pictures
    assert "label_histograms" not in pictures   # partition did not rerun
    assert (repo_copy / "reports/pr_plots/index.html").exists()
