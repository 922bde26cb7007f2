"""What the Prefect flows need from DVC, without importing Prefect.

The DAG is read from dvc.yaml through DVC's own index (never a second list of stages),
each stage runs as `dvc repro --single-item <stage>` so DVC's cache and dvc.lock stay in
charge, and artifact contents are built here as plain strings / rows, so all of it is
testable without a Prefect server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from embedlab.paths import Paths


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message carries the tail of its output."""

    def __init__(self, stage: str, returncode: int, tail: str):
        super().__init__(f"stage {stage!r} failed (exit {returncode}):\n{tail}")
        self.stage = stage
        self.returncode = returncode


def tool_env() -> dict[str, str]:
    """Environment for stage subprocesses: the venv's `dvc` and `embedlab` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key, value in (("GX_ANALYTICS_ENABLED", "false"), ("MLFLOW_DISABLE_TELEMETRY", "true"), ("DO_NOT_TRACK", "1")):
        env.setdefault(key, value)
    return env


def dvc_command() -> list[str]:
    candidate = Path(sys.executable).parent / "dvc"
    return [str(candidate)] if candidate.exists() else ["dvc"]


def dag_stages(root: Path, target: str | None = None) -> list[str]:
    """Stage names of dvc.yaml in dependency order (file order between independent stages);
    the stages of .dvc files (added or imported data) are left out.

    With `target`, only that stage and what it depends on."""
    import networkx as nx
    from dvc.repo import Repo

    root = Path(root).resolve()

    def name(stage) -> str:
        # `addressing` is relative to the current directory; dvc CLI calls run from root.
        dvcfile = Path(stage.dvcfile.path).resolve()
        if not hasattr(stage, "name"):  # a .dvc file's stage: data added (`dvc add`) or imported (`dvc import`)
            return os.path.relpath(dvcfile, root)
        return stage.name if dvcfile == root / "dvc.yaml" else f"{os.path.relpath(dvcfile, root)}:{stage.name}"

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        position = {name(stage): i for i, stage in enumerate(repo.index.stages)}
        by_name = {name(stage): stage for stage in graph.nodes}
        if target is not None:
            if target not in by_name:
                raise KeyError(f"dvc.yaml has no stage {target!r}; stages: {', '.join(sorted(by_name))}")
            keep = {target} | {name(s) for s in nx.descendants(graph, by_name[target])}
        else:
            keep = set(by_name)
        order = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=lambda s: position[name(s)])
        # Data stages (.dvc files) are inputs, not steps: `dvc update` refreshes an import
        # (update_sources), and an added file changes when its owner changes it.
        return [name(stage) for stage in order if name(stage) in keep and hasattr(stage, "name")]


_PROGRESS = re.compile(r"\d+%\|.*\|.*(it/s|s/it)|\?it/s\]|^(Sanity Checking|Validation|Training|Epoch \d+):.*\|")


def is_progress_frame(line: str) -> bool:
    """tqdm frames: a non-terminal log gets one line per redraw; only finished epochs are kept."""
    return bool(_PROGRESS.search(line)) and not (line.startswith("Epoch ") and "100%|" in line and "val_" in line)


def stream(cmd: list[str], root: Path, log: Callable[[str], None]) -> tuple[int, list[str]]:
    """Run `cmd`, passing each output line to `log` as it arrives; (exit code, all lines).

    Progress-bar frames are kept in the returned lines but not logged, except the last frame
    of each epoch, so a run log reads as one line per epoch."""
    lines: list[str] = []
    last_logged = ""
    with subprocess.Popen(
        cmd, cwd=root, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            # Progress bars redraw with carriage returns; the last frame is the one to keep.
            line = raw.rstrip("\n").split("\r")[-1].rstrip()
            if line:
                lines.append(line)
                key = line.split(":", 1)[0] if line.startswith("Epoch ") else line
                if is_progress_frame(line) or key == last_logged:
                    continue
                last_logged = key
                log(line)
        return proc.wait(), lines


def run_stage(stage: str, root: Path, log: Callable[[str], None] = print, force: bool = False) -> dict:
    """`dvc repro --single-item <stage>`: skipped by DVC when up to date. Small dict back."""
    cmd = dvc_command() + ["repro", "--single-item", stage] + (["--force"] if force else [])
    start = time.perf_counter()
    code, lines = stream(cmd, root, log)
    seconds = round(time.perf_counter() - start, 3)
    if code != 0:
        raise StageFailed(stage, code, "\n".join(lines[-40:]))
    return {"stage": stage, "ran": any(f"Running stage '{stage}'" in line for line in lines), "seconds": seconds}


def imported_data(root: Path) -> list[Path]:
    """The .dvc files of `dvc import`ed data in the repository at `root`, in path order: what
    `dvc update` refreshes. Read from DVC's own index, like `dag_stages` (it knows which stages
    are imports and what .dvcignore leaves out)."""
    from dvc.repo import Repo

    resolved = Path(root).resolve()
    with Repo(str(resolved)) as repo:
        return sorted(Path(root) / Path(stage.path).relative_to(resolved) for stage in repo.index.stages if stage.is_import)


def git_head(root: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{root}: not a git checkout with a commit ({done.stderr.strip()})")
    return done.stdout.strip()


def update_sources(root: Path, log: Callable[[str], None] = print, git_pull: bool = False,
                   update_imports: bool = False) -> dict:
    """Bring code and data up to date before a scheduled run: `git pull --ff-only` of the
    checked-out branch (`git_pull`), then `dvc update` of every imported data set
    (`update_imports`). Returns the commit the run started from (`base`: what the change report
    compares with), whether the pull moved HEAD, and which imports changed. A failed pull or
    update raises with its output: no stage runs on half-updated inputs."""
    base = git_head(root)
    if git_pull:
        code, lines = stream(["git", "pull", "--ff-only"], root, log)
        if code != 0:
            raise RuntimeError("git pull --ff-only failed (a diverged or detached checkout?):\n" + "\n".join(lines[-20:]))
    imports = imported_data(root) if update_imports else []
    if update_imports and not imports:
        log("No `dvc import`ed data in this checkout: nothing to update.")
    updated = []
    for spec in imports:
        before = spec.read_text()
        code, lines = stream(dvc_command() + ["update", str(spec.relative_to(root))], root, log)
        if code != 0:
            raise RuntimeError(f"dvc update {spec.relative_to(root)} failed:\n" + "\n".join(lines[-20:]))
        if spec.read_text() != before:
            updated.append(str(spec.relative_to(root)))
    return {"base": base, "pulled": git_head(root) != base, "updated": updated}


def remote_configured(root: Path) -> bool:
    done = subprocess.run(dvc_command() + ["remote", "list"], cwd=root, env=tool_env(), capture_output=True, text=True)
    return done.returncode == 0 and bool(done.stdout.strip())


def experiment_command(targets: list[str], overrides: dict | list[str] | None, name: str | None = None) -> list[str]:
    """`dvc exp run -S key=value ... <targets>`: param overrides recorded as a DVC experiment."""
    if isinstance(overrides, dict):
        pairs = [f"{key}={json.dumps(value) if not isinstance(value, str) else value}" for key, value in overrides.items()]
    else:
        pairs = list(overrides or [])
    for pair in pairs:
        if "=" not in pair or pair.startswith("="):
            raise ValueError(f"override {pair!r} is not KEY=VALUE (e.g. evaluator.lr=0.001)")
    cmd = dvc_command() + ["exp", "run"]
    for pair in pairs:
        cmd += ["-S", pair]
    if name:
        cmd += ["--name", name]
    return cmd + list(targets)


def stage_model(stage: str) -> str | None:
    """'evaluate@evaluator' -> 'evaluator'; stages without a model -> None."""
    return stage.split("@", 1)[1] if "@" in stage else None


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    key = "-".join(parts).lower()
    return "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in key)


def validation_markdown(paths: Paths) -> tuple[bool, str]:
    """(gate passed, markdown table of the checks) from reports/validation/summary.json."""
    from embedlab.data.validate import format_summary

    summary_file = paths.validation_report / "summary.json"
    if not summary_file.exists():
        return False, f"**Validation did not run to the end**: `{summary_file}` was not written."
    summary = json.loads(summary_file.read_text())
    return bool(summary["success"]), format_summary(summary)


def metrics_rows(paths: Paths, model: str) -> list[dict]:
    """metrics/<model>.json flattened (dots, as `dvc metrics diff` shows) into table rows."""
    from embedlab.registry import flatten

    metrics = json.loads(paths.metrics(model).read_text())
    return [{"metric": key, "value": value} for key, value in flatten(metrics).items()]


def registry_markdown(paths: Paths, model: str) -> str:
    receipt = json.loads(paths.receipt(model).read_text())
    previous = receipt.get("previous_champion_value")
    verdict = "new **champion**" if receipt["alias"] == "champion" else "**challenger** (champion kept)"
    return (
        f"### {receipt['name']} v{receipt['version']}: {verdict}\n\n"
        f"| | {receipt['metric']} |\n| --- | --- |\n"
        f"| this version | {receipt['value']} |\n"
        f"| previous champion | {previous if previous is not None else 'none'} |\n\n"
        f"min_delta {receipt.get('min_delta')}, commit `{receipt['git_commit'][:12]}`, "
        f"data `{receipt['data_hash']}`, registry `{receipt['tracking_uri']}`"
    )
