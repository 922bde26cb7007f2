"""Sources (all three), resize/scale, stratified split, manifest."""

import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from embedlab.data.prepare import (
    prepare_dataset,
    read_prepared,
    resize,
    scale,
    stratified_split,
    write_prepared,
)
from embedlab.data.sources import load_source, untracked_source_problem
from embedlab.params import DataParams

from ..conftest import write_npz


def test_digits_source(digits_raw):
    assert len(digits_raw) == 1797
    assert digits_raw.images[0].shape == (8, 8)
    assert set(np.unique(digits_raw.labels)) == set(range(10))
    assert digits_raw.pixel_range == (0.0, 16.0)
    assert len(set(digits_raw.ids)) == 1797


@pytest.mark.parametrize(
    "shape,dtype",
    [((30, 12, 10), np.uint8), ((30, 12, 10, 3), np.uint8), ((30, 3, 12, 10), np.float32), ((30, 12, 10, 1), np.float64)],
)
def test_npz_source_layouts(tmp_path, shape, dtype):
    rng = np.random.default_rng(0)
    images = (rng.random(shape) * (255 if dtype == np.uint8 else 1)).astype(dtype)
    spec = write_npz(tmp_path / "d.npz", images=images, labels=np.arange(30) % 3)
    raw = load_source(spec)
    assert not raw.problems
    channels = 3 if 3 in shape else 1  # colour stays colour (data.channels: null)
    assert len(raw) == 30 and raw.images[0].shape == ((12, 10, 3) if channels == 3 else (12, 10))
    data = prepare_dataset(raw, DataParams(source=spec, image_size=8))
    assert data.images.shape == (30, channels, 8, 8)
    assert data.images.min() >= -1 and data.images.max() <= 1
    assert data.meta["num_classes"] == 3


def test_npz_ids_are_kept(tmp_path):
    spec = write_npz(tmp_path / "d.npz", images=np.zeros((4, 8, 8)), labels=np.array([0, 1, 0, 1]), ids=np.array(list("abcd")))
    assert load_source(spec).ids == ["a", "b", "c", "d"]


def test_folder_source_reads_classes_and_mixed_sizes(tmp_path):
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            size = (10 + i, 12)
            Image.fromarray(np.full(size[::-1], 40 * (c + i), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    Image.fromarray(np.zeros((6, 6, 3), dtype=np.uint8), mode="RGB").save(tmp_path / "dog" / "rgb.png")
    raw = load_source(f"folder:{tmp_path}")
    assert not raw.problems
    assert raw.class_names == ["cat", "dog"]
    assert list(raw.labels) == [0, 0, 0, 1, 1, 1, 1]
    assert "dog/rgb.png" in raw.ids
    data = prepare_dataset(raw, DataParams(source=f"folder:{tmp_path}", image_size=8, channels=1))
    assert data.images.shape == (7, 1, 8, 8)
    # A constant 0-valued image maps to -1, a constant 80 to 80/255*2-1.
    np.testing.assert_allclose(data.images[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(data.images[2], 80 / 255 * 2 - 1, atol=1e-5)


def test_resize_preserves_constant_and_nan():
    out = resize([np.full((8, 8), 3.0), np.full((20, 10), 5.0)], 16)
    assert out.shape == (2, 1, 16, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], 3.0, atol=1e-5)
    np.testing.assert_allclose(out[1], 5.0, atol=1e-5)
    img = np.zeros((8, 8))
    img[3, 3] = np.nan
    assert np.isnan(resize([img], 16)).any()


def test_scale_maps_range_to_unit_interval():
    np.testing.assert_allclose(scale(np.array([0.0, 8.0, 16.0]), (0.0, 16.0)), [-1.0, 0.0, 1.0])


def test_stratified_split_per_class(digits_raw):
    split = stratified_split(digits_raw.labels, 0.15, 0.15, seed=0)
    for c in range(10):
        counts = {s: int(((digits_raw.labels == c) & (split == s)).sum()) for s in ("train", "val", "test")}
        total = sum(counts.values())
        assert counts["test"] == round(total * 0.15) and counts["val"] == round(total * 0.15)
    assert (stratified_split(digits_raw.labels, 0.15, 0.15, seed=0) == split).all()
    assert (stratified_split(digits_raw.labels, 0.15, 0.15, seed=1) != split).any()


def test_stratified_split_leaves_tiny_class_out_of_test():
    labels = np.array([0] * 20 + [1])
    split = stratified_split(labels, 0.2, 0.2, seed=0)
    assert split[-1] == "train"


def test_prepared_round_trip_and_manifest(tmp_path, digits_prepared):
    write_prepared(digits_prepared, tmp_path / "prepared")
    back = read_prepared(tmp_path / "prepared")
    np.testing.assert_array_equal(back.images, digits_prepared.images)
    m = back.manifest
    assert list(m.columns) == ["sample_id", "label", "split", "source", "mean", "std", "min", "max"]
    assert m["sample_id"].is_unique and len(m) == len(back.images)
    np.testing.assert_allclose(m["mean"], back.images.reshape(len(m), -1).mean(1), rtol=1e-5)
    assert back.meta["num_classes"] == 10 and back.meta["ingest_problems"] == []
    x, y = back.split("test")
    assert len(x) == (m.split == "test").sum() == len(y)


def test_write_prepared_replaces_whole_dir(tmp_path, digits_prepared):
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    write_prepared(digits_prepared, out)
    assert not (out / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_prepare_refuses_a_source_dvc_cannot_see_and_reads_one_under_data_raw(tmp_path):
    images, labels = np.random.default_rng(0).integers(0, 255, (40, 8, 8), dtype=np.uint8), np.arange(40) % 4
    outside, inside = tmp_path / "mine.npz", tmp_path / "data/raw/mine.npz"
    inside.parent.mkdir(parents=True)
    for path in (outside, inside):
        np.savez(path, images=images, labels=labels)

    def prepare(source: str) -> subprocess.CompletedProcess:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"source": source, "image_size": 8}}))
        return subprocess.run([sys.executable, "-m", "embedlab.cli", "prepare", "--params", str(tmp_path / "params.yaml"),
                               "--root", str(tmp_path)], capture_output=True, text=True)

    for source in ("npz:mine.npz", f"npz:{outside}", "npz:data/raw/../mine.npz", f"folder:{tmp_path}"):
        refused = prepare(source)
        assert refused.returncode == 2, source
        assert f"data.source {source!r} points outside data/raw/" in refused.stderr and "dvc add" in refused.stderr
        assert not (tmp_path / "data/prepared").exists()  # nothing half-written
    accepted = prepare("npz:data/raw/mine.npz")
    assert accepted.returncode == 0, accepted.stderr
    assert "prepared 40 images from npz:data/raw/mine.npz" in accepted.stdout
    assert untracked_source_problem("sklearn-digits", tmp_path) is None  # the bundled digits need no file
