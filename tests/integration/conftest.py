"""A throwaway copy of the repository, as a clone would have it, for real `dvc repro` runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# The methods run their jobs in this process (workers: 1): no spawned worker to start and import
# in the shared build. test_pipeline_rerun.py retrains them on 2 spawned workers and gets the
# same numbers. Every arm runs, the paper preset's too (gan.toy.run, vq.ar_baseline): the code
# paths stay covered end to end; the CPU default's leaner paths are the methods' unit tests.
TINY = {
    "trainer": {"progress_bar": False, "log_every_n_steps": 5},
    "evaluator": {"width": 8, "feature_dim": 16, "max_epochs": 2, "batch_size": 32, "lr": 0.005},
    "backbone": {"width": 4, "feature_dim": 8, "max_epochs": 1, "batch_size": 64},
    "evaluation": {"samples": 20, "bootstrap": 20},
    "vq": {
        "seeds": [0, 1], "ar_baseline": True,
        "tokenizer": {"hidden": 16, "latent_dim": 8, "num_quantizers": 2, "codebook_size": 8, "max_epochs": 1,
                      "batch_size": 128},
        "prior": {"width": 16, "layers": 1, "heads": 2, "mixtures": 2, "max_epochs": 1, "augment_copies": 0,
                  "steps": 2, "batch_size": 256},
        "eval_depths": [1, 2], "samples_per_class": 2, "timing_depths": [1, 2], "timing_samples": 10,
        "workers": 1,
    },
    "gan": {
        "loss": {"buffer_size": 64},
        "tuning": {"dcgan": {"values": [1.0, 2.0]}, "maf": {"values": [1.0, 2.0]},
                   "maf+disomap": {"values": [0.3, 1.0]}, "maf+disomap+dlle": {"values": [0.1, 0.3]},
                   "mee": {"values": [0.1, 0.3]}},
        "toy": {"run": True, "seeds": [0, 1], "steps": 4, "batch_size": 32, "hidden": 16, "eval_samples": 100},
        "image": {"seeds": [0], "compare_arms": ["dcgan", "mee"],  # the digit claim's code path
                  "steps": 3, "batch_size": 16, "gen_width": 4, "disc_width": 4, "weak_disc_width": 2,
                  "eval_samples": 50, "fd_samples": 20},
        "workers": 1,
    },
    "diffusion": {
        "seeds": [0, 1], "cfg_seeds": [0], "ddpm": {"timesteps": 100, "channels": [8, 8], "steps": 20, "batch_size": 32},
        "ddim_steps": 3, "ppap": {"experts": 2, "steps": 5, "kd_samples": 16, "batch_size": 8},
        "scales": [1.0, 10.0], "cfg_scales": [1.0], "sweep_per_class": 2, "samples_per_class": 2, "workers": 1,
    },
    "federated": {
        "seeds": [0, 1],
        "feature_shift": {"samples_per_client": 10, "sizes": [10, 20], "rounds": 2, "local_steps": 2, "ggeur_rounds": 2},
        "label_skew": {"rounds": 2, "local_steps": 2},
        "tuning": {"seeds": [100], **{arm: [{"lr": 0.05}, {"lr": 0.1}] for arm in ("local", "fedavg", "fedprox", "fedbn")},
                   "fraug": [{"lambda_r": 1.0}, {"lambda_r": 10.0}]},
        "ggeur": {"target_size": 5},
        "workers": 1,
    },
}


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(GX_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def copy_repo(dest: Path) -> Path:
    """Tracked + untracked-but-not-ignored files of this checkout, in a fresh git repo at
    `dest`, with the tiny params."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(merge(params, TINY), sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], dest)
    return dest


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    return copy_repo(tmp_path / "repo")


def _session_root(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this run shares (each worker's basetemp is one
    level below it); the basetemp itself without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> SimpleNamespace:
    """One `dvc repro` of the whole DAG on the tiny params, made once per test run whatever the
    number of xdist workers: the first worker that asks builds it under a file lock, any other
    waits for it (the pytest-xdist documentation's pattern for session data). After the run it
    is committed ("baseline run"), given a DVC remote (`team`, a local folder) that it pushes
    to, and cloned bare into `origin`.

    `repo` is the run itself: only tests/integration/test_pipeline.py works in it (one module,
    one worker). Every other module clones `origin` and pulls from the remote, as a teammate
    would, so none of them sees another's changes."""
    from filelock import FileLock

    root = _session_root(tmp_path_factory) / "tiny-pipeline"
    done = root / "built.json"
    with FileLock(f"{root}.lock"):
        if not done.exists():
            repo = copy_repo(root / "repo")
            first = run(["dvc", "repro"], repo)
            commit(repo, "baseline run")
            run(["dvc", "remote", "add", "-d", "team", str(root / "remote")], repo)
            base = commit(repo, "the team's remote")
            run(["dvc", "push"], repo)
            run(["git", "clone", "-q", "--bare", str(repo), str(root / "origin.git")], root)
            done.write_text(json.dumps({"first": first.stdout, "base": base}))
    built = json.loads(done.read_text())
    return SimpleNamespace(repo=root / "repo", origin=root / "origin.git", remote=root / "remote",
                           first=built["first"], base=built["base"])


def commit(repo: Path, message: str) -> str:
    """`git add -A` + commit (empty allowed), returning the new commit's hash."""
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "--allow-empty", "-qm", message], repo)
    return run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


def set_params(repo: Path, override: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(merge(params, override), sort_keys=False))
