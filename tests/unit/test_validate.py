"""The validate stage passes clean data and names every kind of broken input.

Real data end to end: each case builds a tiny source in tmp_path, runs the real
`prepare` on it, then the real gate (pandera + Great Expectations)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedlab.data.prepare import run_prepare
from embedlab.data.validate import DataValidationError, format_summary, validate_prepared
from embedlab.params import DataParams, Params
from embedlab.paths import Paths


def digits_subset(per_class: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` digits of each class: balanced, large enough for every count rule."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.concatenate([np.flatnonzero(digits.target == c)[:per_class] for c in range(10)])
    return digits.images[keep].astype(np.float64), digits.target[keep].astype(np.int64)


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray, **extra) -> str:
    np.savez(path, images=images, labels=labels, **extra)
    return f"npz:{path}"


def rejected(root: Path, data: DataParams) -> tuple[str, dict]:
    """Prepare `data` under root, run the gate, return (error message, summary.json)."""
    paths = Paths(root=root)
    run_prepare(data, paths.prepared, root=root)
    with pytest.raises(DataValidationError) as caught:
        validate_prepared(Params(data=data), paths)
    summary = json.loads((paths.validation_report / "summary.json").read_text())
    assert summary["success"] is False and summary["failed"] >= 1
    return str(caught.value), summary


def failed_checks(summary: dict) -> set[tuple[str, str]]:
    return {(c["engine"], c["check"]) for c in summary["checks"] if not c["success"]}


@pytest.fixture(scope="module")
def clean_digits(tmp_path_factory) -> tuple[Paths, dict]:
    paths = Paths(root=tmp_path_factory.mktemp("digits"))
    run_prepare(DataParams(), paths.prepared)
    return paths, validate_prepared(Params(), paths)


def test_clean_digits_pass_and_write_summary_and_data_docs(clean_digits):
    paths, summary = clean_digits
    on_disk = json.loads((paths.validation_report / "summary.json").read_text())
    assert on_disk == summary
    assert summary["success"] is True and summary["failed"] == 0
    assert summary["num_rows"] == 1797 and summary["num_classes"] == 10
    engines = {c["engine"] for c in summary["checks"]}
    assert engines == {"ingest", "arrays", "pandera", "great_expectations"}
    for check in summary["checks"]:
        assert set(check) == {"check", "engine", "success", "column", "details"}
    assert {"class_balance", "class_in_every_split", "split_fractions", "min_rows_per_split", "mean_intensity"} <= {
        c["check"] for c in summary["checks"] if c["engine"] == "great_expectations"
    }
    index = paths.root / summary["data_docs"]
    assert summary["data_docs"].endswith("index.html") and index.is_file()
    assert index.is_relative_to(paths.validation_report)


def test_format_summary_is_a_markdown_table(clean_digits):
    _, summary = clean_digits
    text = format_summary(summary)
    assert "Data validation passed" in text
    assert "| engine | check | column | result | details |" in text
    assert text.count("\n| ") == len(summary["checks"]) + 1


def test_rerun_rebuilds_the_gx_project_instead_of_piling_up(clean_digits, tmp_path):
    paths = Paths(root=tmp_path)
    shutil.copytree(clean_digits[0].prepared, paths.prepared)
    first = validate_prepared(Params(), paths)
    second = validate_prepared(Params(), paths)
    assert [(c["check"], c["success"]) for c in first["checks"]] == [(c["check"], c["success"]) for c in second["checks"]]
    runs = list((paths.validation_report / "gx" / "uncommitted" / "validations").rglob("*.json"))
    assert len(runs) == 3  # one result per suite, from the latest run only


def test_arrays_that_disagree_with_the_manifest(clean_digits, tmp_path):
    paths = Paths(root=tmp_path)
    shutil.copytree(clean_digits[0].prepared, paths.prepared)
    labels = np.load(paths.prepared / "labels.npy")
    labels[[0, 1]] = labels[[1, 0]] if labels[0] != labels[1] else (labels[[0, 1]] + 1) % 10
    np.save(paths.prepared / "labels.npy", labels)
    np.save(paths.prepared / "images.npy", np.load(paths.prepared / "images.npy")[:, :, :8, :8])
    with pytest.raises(DataValidationError) as caught:
        validate_prepared(Params(), paths)
    message = str(caught.value)
    assert "FAILED arrays images_shape: images.npy shape (1797, 1, 8, 8); expected (1797, 1, 16, 16)" in message
    assert "FAILED arrays labels_match_manifest [label]: 2 of 1797 labels differ" in message and "digits-0000" in message
    assert "FAILED great_expectations checkpoint: not run" in message


def test_missing_prepared_data_is_a_failure_with_a_summary(tmp_path):
    paths = Paths(root=tmp_path)
    with pytest.raises(DataValidationError, match=r"FAILED ingest read_prepared: .*missing"):
        validate_prepared(Params(), paths)
    summary = json.loads((paths.validation_report / "summary.json").read_text())
    assert summary["success"] is False and summary["data_docs"] is None


def test_label_outside_class_range(tmp_path):
    images, labels = digits_subset()
    labels[7] = 12
    source = write_npz(tmp_path / "digits.npz", images, labels)
    message, summary = rejected(tmp_path, DataParams(source=source, num_classes=10))
    assert "FAILED pandera less_than(10) [label]" in message
    assert "12" in message and "digits-000007" in message


def test_nan_pixel_names_the_image(tmp_path):
    images, labels = digits_subset()
    images[5, 3, 3] = np.nan
    message, summary = rejected(tmp_path, DataParams(source=write_npz(tmp_path / "digits.npz", images, labels)))
    assert "FAILED arrays pixels_finite" in message
    assert "NaN" in message and "in 1 image(s)" in message and "digits-000005" in message
    assert ("pandera", "not_nullable") in failed_checks(summary)


def test_wrong_image_shape(tmp_path):
    images, labels = digits_subset()
    source = write_npz(tmp_path / "flat.npz", images.reshape(len(images), 64), labels)
    message, summary = rejected(tmp_path, DataParams(source=source))
    assert "flat.npz" in message and "shape (300, 64)" in message
    assert ("arrays", "rows_present") in failed_checks(summary)


def test_class_missing_from_test_split(tmp_path):
    images, labels = digits_subset()
    single = np.flatnonzero(labels == 3)[1:]  # class 3 keeps one image: it can only go to train
    images, labels = np.delete(images, single, axis=0), np.delete(labels, single)
    message, summary = rejected(tmp_path, DataParams(source=write_npz(tmp_path / "digits.npz", images, labels)))
    assert "FAILED great_expectations class_in_every_split [label]" in message
    assert "test/class 3: 0" in message and "val/class 3: 0" in message


def test_duplicated_sample_ids(tmp_path):
    images, labels = digits_subset()
    ids = np.array([f"img-{i % 150}" for i in range(len(images))])
    message, summary = rejected(tmp_path, DataParams(source=write_npz(tmp_path / "digits.npz", images, labels, ids=ids)))
    assert "FAILED pandera field_uniqueness [sample_id]" in message
    assert "img-0" in message


def test_empty_source_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    message, summary = rejected(tmp_path, DataParams(source=f"folder:{tmp_path / 'empty'}"))
    assert "FAILED ingest source_files" in message and "no images found" in message
    assert "prepared data has 0 rows" in message
    assert summary["num_rows"] == 0 and summary["data_docs"] is None


def test_truncated_npz(tmp_path):
    images, labels = digits_subset()
    path = tmp_path / "cut.npz"
    write_npz(path, images, labels)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message, _ = rejected(tmp_path, DataParams(source=f"npz:{path}"))
    assert "cut.npz" in message and "cannot read npz" in message


def test_unreadable_image_file(tmp_path):
    from PIL import Image

    images, labels = digits_subset(per_class=3)
    folder = tmp_path / "images"
    for i, (image, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 15).astype(np.uint8)).save(folder / str(label) / f"{i}.png")
    (folder / "4" / "broken.png").write_bytes(b"this is not a png")
    message, _ = rejected(tmp_path, DataParams(source=f"folder:{folder}"))
    assert "FAILED ingest source_files: 4/broken.png: unreadable image" in message
