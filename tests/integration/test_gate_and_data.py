"""The gate stops bad data before anything downstream runs, and a user's own data file is
versioned by DVC: each test on its own tiny-params copy of the repository, no pipeline run."""

import json
import re

import numpy as np
import pytest

from .conftest import run, set_params

pytestmark = pytest.mark.slow


def test_bad_data_stops_at_validate_and_nothing_downstream_runs(repo_copy):
    from embedlab.data.sources import load_digits_source

    raw = load_digits_source()
    images = np.stack(raw.images)
    images[7, 2, 3] = np.nan
    np.savez(repo_copy / "data/raw/bad.npz", images=images, labels=raw.labels)
    run(["dvc", "add", "data/raw/bad.npz"], repo_copy)  # the documented way (data/raw/README.md)
    set_params(repo_copy, {"data": {"source": "npz:data/raw/bad.npz", "pixel_range": [0.0, 16.0]}})

    committed = {p: p.read_text() for p in repo_copy.glob("metrics/*.json")}
    weights = {p: p.read_bytes() for p in repo_copy.glob("models/*/model.safetensors")}  # the committed references
    out = run(["dvc", "repro"], repo_copy, check=False)
    assert out.returncode != 0
    message = out.stdout + out.stderr
    assert "NaN" in message or "nan" in message
    assert "bad-000007" in message  # the offending sample is named
    for never in ("registry/evaluator.json", "mlflow.db", "data/partitions", "reports/partition", "models/vq"):
        assert not (repo_copy / never).exists(), never
    assert weights and {p: p.read_bytes() for p in weights} == weights  # the fixed networks untouched
    # Metrics a clone carries are untouched: nothing was evaluated.
    assert {p: p.read_text() for p in committed} == committed
    summary = json.loads((repo_copy / "reports/validation/summary.json").read_text())
    assert summary["success"] is False


def test_own_data_is_versioned_one_changed_byte_reruns_prepare(repo_copy):
    """data/raw under `dvc add` is a dependency of prepare: DVC sees a one-byte change."""
    from embedlab.data.sources import load_digits_source

    raw = load_digits_source()
    images = np.stack(raw.images).astype(np.uint8)
    np.savez(repo_copy / "data/raw/mine.npz", images=images, labels=raw.labels)
    run(["dvc", "add", "data/raw/mine.npz"], repo_copy)
    tracked = (repo_copy / "data/raw/mine.npz.dvc").read_text()
    set_params(repo_copy, {"data": {"source": "npz:data/raw/mine.npz", "pixel_range": [0.0, 16.0]}})
    assert "Running stage 'prepare'" in run(["dvc", "repro", "prepare"], repo_copy).stdout
    assert "up to date" in run(["dvc", "status", "prepare"], repo_copy).stdout
    first = np.load(repo_copy / "data/prepared/images.npy")

    images[0, 3, 3] ^= 1  # one bit of one pixel of one image
    np.savez(repo_copy / "data/raw/mine.npz", images=images, labels=raw.labels)
    status = run(["dvc", "status", "prepare"], repo_copy).stdout
    assert re.search(r"prepare:\s+changed deps:\s+modified:\s+data/raw", status), status
    again = run(["dvc", "repro", "prepare"], repo_copy).stdout
    assert "Running stage 'prepare'" in again
    second = np.load(repo_copy / "data/prepared/images.npy")
    assert (first != second).sum() >= 1 and np.array_equal(np.delete(first, 0, 0), np.delete(second, 0, 0))
    # repro also re-records the data's hash: committing mine.npz.dvc versions the new bytes
    assert (repo_copy / "data/raw/mine.npz.dvc").read_text() != tracked
