"""PR report: the workflow only calls what exists, and the markdown carries every section."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from embedlab import report
from embedlab.report import Image, ReportError, ReportInputs, render_report

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "pr-report.yml"
BIN = Path(sys.executable).parent

PARAMS_MD = """| Path        | Param                | main   | workspace   |
|-------------|----------------------|--------|-------------|
| params.yaml | evaluator.max_epochs | 2      | 3           |
"""
METRICS_MD = """| Path                   | Metric        | main    | workspace   | Change   |
|------------------------|---------------|---------|-------------|----------|
| metrics/evaluator.json | test_accuracy | 0.81    | 0.87        | 0.06     |
"""
METRICS_JSON = ('{"metrics/evaluator.json": {"test_accuracy.value": {"old": 0.81, "new": 0.87, "diff": 0.06}, '
                '"test_accuracy.lo": {"old": 0.76, "new": 0.83}, "test_accuracy.hi": {"old": 0.85, "new": 0.9}}}')
EMPTY_PARAMS_MD = "| Path   | Param   | main   | workspace   |\n|--------|---------|--------|-------------|\n"


# --- the workflow ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def run_text(workflow) -> str:
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    # Join shell continuations so a command split over lines is read as one.
    return "\n".join(step.get("run", "") for step in steps).replace("\\\n", " ")


def makefile_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        # A rule line: names, then ':' that is not ':=' (a variable); recipes start with a tab.
        rule = re.match(r"^([A-Za-z0-9_.\-/ ]+?)\s*::?(?!=)", line)
        if rule and not line.startswith("\t"):
            targets.update(rule.group(1).split())
    return targets


def test_workflow_is_yaml_and_runs_on_pull_requests(workflow):
    # PyYAML reads a bare `on:` key as the boolean True (YAML 1.1).
    triggers = workflow.get("on", workflow.get(True))
    assert "pull_request" in (triggers if isinstance(triggers, (dict, list)) else [triggers])
    assert workflow["permissions"]["pull-requests"] == "write"
    steps = workflow["jobs"]["report"]["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    setup_python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert str(setup_python["with"]["python-version"]) == "3.11"
    assert any(s.get("uses", "").startswith("actions/upload-artifact") and "reports/pr_plots" in s["with"]["path"]
               for s in steps)
    for var, value in {"GX_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "MLFLOW_DISABLE_TELEMETRY": "true"}.items():
        assert workflow["env"][var] == value


def test_workflow_make_targets_exist(run_text):
    called = set(re.findall(r"\bmake\s+([A-Za-z0-9_.\-]+)", run_text))
    assert {"setup", "run"} <= called
    missing = called - makefile_targets()
    assert not missing, f"workflow calls make targets the Makefile lacks: {missing}"


def test_workflow_venv_tools_exist(run_text):
    tools = set(re.findall(r"\.venv/bin/([A-Za-z0-9_.\-]+)", run_text))
    assert {"dvc", "embedlab"} <= tools
    missing = {tool for tool in tools if not (BIN / tool).exists()}
    assert not missing, f"not installed in {BIN}: {missing}"


def test_workflow_embedlab_commands_and_options_exist(run_text):
    import typer.main

    from embedlab.cli import app

    commands = typer.main.get_command(app).commands
    calls = re.findall(r"\bembedlab\s+([a-z][\w-]*)([^\n]*)", run_text)
    assert "report" in [name for name, _ in calls]
    for name, rest in calls:
        assert name in commands, f"workflow calls `embedlab {name}`; commands are {sorted(commands)}"
        known = {opt for param in commands[name].params for opt in param.opts}
        used = set(re.findall(r"(?<!\S)(--[a-z][\w-]*)", rest))
        assert used <= known, f"`embedlab {name}` has no option(s) {used - known}"


def test_cli_import_stays_light():
    code = ("import sys, embedlab.cli; heavy = {'dvc', 'mlflow', 'torch', 'lightning'}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m == 'embedlab.report'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the markdown ------------------------------------------------------------------------

def receipt(**kw) -> dict:
    base = {"name": "embedlab-evaluator", "model": "evaluator", "version": 2, "alias": "challenger",
            "metric": "test_accuracy", "value": 0.87, "previous_champion_value": 0.91}
    return {**base, **kw}


def test_render_report_has_every_section_in_order():
    text = render_report(ReportInputs(
        base="main", base_sha="0123456789abcdef", params_md=PARAMS_MD, metrics_md=METRICS_MD,
        receipts=[receipt(), receipt(name="embedlab-backbone", version=1, alias="champion", previous_champion_value=None)],
        images=[Image("plots/evaluator/confusion.png", "../plots/evaluator/confusion.png"),
                Image("reports/partition/label_histograms.png", None)],
        plots_html="reports/pr_plots/index.html", notes=["dvc metrics diff: something odd"],
    ))
    heads = ["### Params", "### Metrics", "### Registry decisions", "### Pictures", "### Notes"]
    assert [text.index(h) for h in heads] == sorted(text.index(h) for h in heads)
    assert "`main` (0123456789)" in text
    assert "| evaluator.max_epochs | 2      | 3 " in text
    assert "| test_accuracy | 0.81    | 0.87        | 0.06 " in text
    assert "| embedlab-evaluator | v2 | **challenger** | test_accuracy | 0.87 | 0.91 | did not beat" in text
    assert "| embedlab-backbone | v1 | **champion** | test_accuracy | 0.87 | - | first champion |" in text
    assert "![plots/evaluator/confusion.png](../plots/evaluator/confusion.png)" in text
    assert "**reports/partition/label_histograms.png**" in text and "artifact" in text
    assert "reports/pr_plots/index.html" in text
    assert "- dvc metrics diff: something odd" in text


def test_render_report_says_plainly_when_nothing_changed():
    text = render_report(ReportInputs(base="main", base_sha="abc", params_md=EMPTY_PARAMS_MD, metrics_md=""))
    assert "No params changed since `main`." in text
    assert "No metrics changed since `main`." in text
    assert "No registry receipts" in text and "nothing was published" in text
    assert "No pictures changed since `main`." in text
    assert "| Path" not in text and "### Notes" not in text


# --- gathering, on a real git repo with dvc stubbed out -----------------------------------

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.strip()


def lock(partition_md5: str) -> str:
    return yaml.safe_dump({"schema": "2.0", "stages": {"partition": {
        "cmd": "embedlab partition", "outs": [{"path": "reports/partition", "md5": partition_md5}]}}})


@pytest.fixture
def tiny_repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    (repo / "plots/evaluator").mkdir(parents=True)
    (repo / "plots/evaluator/confusion.png").write_bytes(b"old")
    (repo / "plots/evaluator/misclassified.png").write_bytes(b"same")
    (repo / "dvc.lock").write_text(lock("aaa.dir"))
    (repo / "dvc.yaml").write_text("plots:\n  - plots/evaluator/confusion.png\n")
    git(repo, "init", "-q", "-b", "work")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    return repo


def test_unknown_base_is_named(tiny_repo):
    from typer.testing import CliRunner

    from embedlab.cli import app

    result = CliRunner().invoke(app, ["report", "--base", "no-such-branch", "--root", str(tiny_repo)])
    assert result.exit_code == 2
    assert "unknown base revision 'no-such-branch'" in result.output


def test_default_base_prefers_main_then_head(tiny_repo):
    assert report.resolve_base(tiny_repo, None) == ("HEAD", git(tiny_repo, "rev-parse", "HEAD"))
    git(tiny_repo, "branch", "main")
    assert report.resolve_base(tiny_repo, None)[0] == "main"
    with pytest.raises(ReportError, match="'v9'"):
        report.resolve_base(tiny_repo, "v9")


def test_write_report_links_changed_pictures_and_receipts(tiny_repo, monkeypatch):
    base = git(tiny_repo, "rev-parse", "HEAD")
    (tiny_repo / "plots/evaluator/confusion.png").write_bytes(b"new")     # changed, committed below
    (tiny_repo / "plots/evaluator/extra.png").write_bytes(b"brand new")   # untracked
    (tiny_repo / "reports/partition").mkdir(parents=True)
    (tiny_repo / "reports/partition/label_histograms.png").write_bytes(b"x")
    (tiny_repo / "dvc.lock").write_text(lock("bbb.dir"))                  # partition output changed
    git(tiny_repo, "commit", "-qam", "change")
    (tiny_repo / "registry").mkdir()
    (tiny_repo / "registry/evaluator.json").write_text('{"name": "embedlab-evaluator", "version": 3, '
                                                      '"alias": "champion", "metric": "test_accuracy", '
                                                      '"value": 0.9, "previous_champion_value": 0.8}')
    calls = []

    def fake_dvc(root, *args):
        calls.append(args)
        stdout = {"params": PARAMS_MD, "metrics": METRICS_JSON}.get(args[0], "")
        if args[0] == "plots":
            out = Path(args[args.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "index.html").write_text("<html/>")
        return subprocess.CompletedProcess(args, 0, stdout, "")

    monkeypatch.setattr(report, "_dvc", fake_dvc)
    out = report.write_report(tiny_repo, base, Path("reports/pr.md"), Path("reports/pr_plots"),
                              image_url="https://example.test/raw/abc/")
    text = out.read_text()
    assert out == tiny_repo / "reports/pr.md"
    assert [c[:3] for c in calls] == [("params", "diff", "--md"), ("metrics", "diff", "--json"), ("plots", "diff", base[:12])]
    assert "| metrics/evaluator.json | test_accuracy | 0.81 | 0.87 | 0.06 | [0.76, 0.85] -> [0.83, 0.9] |" in text
    assert "![plots/evaluator/confusion.png](https://example.test/raw/abc/plots/evaluator/confusion.png)" in text
    assert "misclassified.png" not in text                                   # unchanged
    assert "**plots/evaluator/extra.png**" in text                           # not in git: no URL to give
    assert "**reports/partition/label_histograms.png**" in text              # found through dvc.lock
    assert "| embedlab-evaluator | v3 | **champion** | test_accuracy | 0.9 | 0.8 | beat the previous" in text
    assert "reports/pr_plots/index.html" in text

    # Without a URL prefix the links are relative to the report, for a local viewer.
    report.write_report(tiny_repo, base, Path("reports/pr.md"), None)
    assert "![plots/evaluator/confusion.png](../plots/evaluator/confusion.png)" in out.read_text()


def test_metrics_table_marks_score_changes_against_their_intervals():
    diff = {"metrics/m.json": {
        "fd.ppap.value": {"old": 10.0, "new": 11.0}, "fd.ppap.lo": {"old": 8.0, "new": 9.0},
        "fd.ppap.hi": {"old": 12.0, "new": 13.0}, "fd.ppap.n": {"old": 1000, "new": 1000},
        "kid.cfg.value": {"old": 0.01, "new": 0.05}, "kid.cfg.lo": {"old": 0.008, "new": 0.045},
        "kid.cfg.hi": {"old": 0.012, "new": 0.055},
        "same.value": {"old": 1.0, "new": 1.0}, "same.lo": {"old": 0.5, "new": 0.5}, "same.hi": {"old": 1.5, "new": 1.5},
        "epochs": {"old": 3, "new": 4, "diff": 1},
    }}
    table = report.metrics_table(diff, "main")
    rows = {line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    assert set(rows) == {"fd.ppap", "kid.cfg", "epochs"}  # unchanged scores and a score's parts are folded
    assert "inside the 95% interval" in rows["fd.ppap"] and "[8, 12] -> [9, 13]" in rows["fd.ppap"]
    assert "**outside the 95% interval**" in rows["kid.cfg"]
    assert "no interval" in rows["epochs"]
    assert report.metrics_table({"metrics/m.json": {"epochs": {"old": 3, "new": 3}}}, "main") == ""
    text = render_report(ReportInputs("main", "abc", PARAMS_MD, table))
    assert "noise, not a result" in text


def test_timings_traces_and_hosts_get_their_own_table_and_never_read_as_results():
    from embedlab.report import metrics_table

    diff = {
        "metrics/gan.json": {
            "digits.fd.mee.value": {"old": 10.0, "new": 12.0, "diff": 2.0},
            "digits.fd.mee.lo": {"old": 9.0, "new": 11.0}, "digits.fd.mee.hi": {"old": 11.0, "new": 13.0},
            "wall_seconds.digits.mee": {"old": 50.0, "new": 40.0, "diff": -10.0},
            "host.train.cpu": {"old": "Intel Xeon", "new": "AMD EPYC"},
        },
        "dvclive/gan/metrics.json": {"tuning.ring.mee": {"old": 7, "new": 8, "diff": 1}},
    }
    results, timings = metrics_table(diff, "main"), metrics_table(diff, "main", timings=True)
    assert "digits.fd.mee" in results and "outside the 95% interval" in results
    assert "seconds" not in results and "host" not in results and "dvclive" not in results
    assert "wall_seconds.digits.mee" in timings and "host.train.cpu" in timings and "tuning.ring.mee" in timings
    assert "digits.fd" not in timings
