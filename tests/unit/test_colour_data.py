"""Colour through prepare and the gate (issue 31): channels from the data or `data.channels`,
conversions where the intent is plain (and said), clear errors where it is not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from embedlab.data.prepare import prepare_dataset, read_prepared, run_prepare
from embedlab.data.sources import load_source
from embedlab.data.validate import array_checks
from embedlab.params import DataParams, ParamsError

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 210)}


def colour_folder(root, per_class: int = 4, size: int = 20, mode: str = "RGB"):
    """Classes that differ only in colour: the same noise pattern, tinted."""
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shade = rng.uniform(0.6, 1.0, (size, size, 1))
            pixels = (shade * np.array(rgb)).astype(np.uint8)
            img = Image.fromarray(pixels, mode="RGB")
            if mode == "RGBA":
                img = img.convert("RGBA")
            elif mode == "P":
                img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
            img.save(root / name / f"{i}.png")
    return f"folder:{root}"


def test_a_colour_folder_stays_colour_and_its_classes_differ_by_channel(tmp_path):
    spec = colour_folder(tmp_path / "raw")
    data = prepare_dataset(load_source(spec), DataParams(source=spec, image_size=8))
    assert data.images.shape == (12, 3, 8, 8) and data.channels == 3
    means = {name: data.images[data.labels == i].mean(axis=(0, 2, 3)) for i, name in enumerate(sorted(COLOURS))}
    assert np.argmax(means["red"]) == 0 and np.argmax(means["green"]) == 1 and np.argmax(means["blue"]) == 2


@pytest.mark.parametrize("mode,said", [("RGBA", "RGBA -> RGB (alpha dropped)"), ("P", "palette -> RGB")])
def test_rgba_and_palette_files_are_converted_to_rgb_and_the_conversion_is_said(tmp_path, mode, said):
    spec = colour_folder(tmp_path / "raw", mode=mode)
    logged: list[str] = []
    data = run_prepare(DataParams(source=spec, image_size=8), tmp_path / "prepared", log=logged.append)
    assert data.images.shape == (12, 3, 8, 8)
    assert len(logged) == 1 and f"12 image(s) {said}" in logged[0], logged


def test_grey_files_among_colour_ones_are_named_and_the_gate_fails_on_them(tmp_path):
    spec = colour_folder(tmp_path / "raw")
    Image.fromarray(np.full((20, 20), 90, np.uint8), mode="L").save(tmp_path / "raw/red/grey.png")
    data = prepare_dataset(load_source(spec), DataParams(source=spec, image_size=8))
    assert data.images.shape == (12, 3, 8, 8)  # the grey file left out ...
    problems = data.meta["ingest_problems"]
    assert problems == [{"file": "red/grey.png", "problem": "a grey image among 12 colour ones: set data.channels: "
                                                           "1 to convert every image, or convert this file"}]
    # ... and data.channels: 3 says the intent: grey repeated into RGB, nothing left out.
    data = prepare_dataset(load_source(spec), DataParams(source=spec, image_size=8, channels=3))
    assert data.images.shape == (13, 3, 8, 8) and not data.meta["ingest_problems"]


def test_channels_1_turns_colour_to_grey_and_channels_3_on_a_grey_source_is_refused_before_any_work(tmp_path):
    spec = colour_folder(tmp_path / "raw")
    grey = prepare_dataset(load_source(spec), DataParams(source=spec, image_size=8, channels=1))
    assert grey.images.shape == (12, 1, 8, 8)
    out = tmp_path / "prepared"
    with pytest.raises(ParamsError, match=r"data.channels: 3, but sklearn-digits has no colour image"):
        run_prepare(DataParams(channels=3), out)
    assert not out.exists()


def test_the_gate_takes_three_channels_and_reports_per_channel_statistics(tmp_path):
    spec = colour_folder(tmp_path / "raw")
    run_prepare(DataParams(source=spec, image_size=8), tmp_path / "prepared")
    data = read_prepared(tmp_path / "prepared")
    checks = {c.check: c for c in array_checks(data)}
    assert checks["images_shape"].success
    assert checks["channel_spread"].success and "per channel (R, G, B) mean" in checks["channel_spread"].details
    data.images[:, 1] = -1.0  # a dead green channel
    checks = {c.check: c for c in array_checks(data)}
    assert not checks["channel_spread"].success and "channel(s) G constant" in checks["channel_spread"].details


def test_feature_shift_on_colour_keeps_colour_transforms_and_refuses_the_grey_look_alikes(tmp_path):
    from embedlab.data.partition import PartitionError, feature_shift
    from embedlab.params import FeatureShiftParams, PartitionParams

    spec = colour_folder(tmp_path / "raw", per_class=12, size=8)
    data = prepare_dataset(load_source(spec), DataParams(source=spec, image_size=8))
    look_alikes = FeatureShiftParams(domains=["original", "synth", "mnistm", "svhn", "usps", "inverted"])
    with pytest.raises(PartitionError, match=r"\['synth', 'mnistm', 'svhn', 'usps'\] make grey images.*3 channels"):
        feature_shift(data, PartitionParams(feature_shift=look_alikes))
    fs = FeatureShiftParams(domains=["original", "inverted", "rotated"], train_per_class=2, val_per_class=1)
    arrays = feature_shift(data, PartitionParams(feature_shift=fs))
    assert arrays["train_images"].shape[1:] == (3, 8, 8)
    np.testing.assert_allclose(arrays["train_images"][arrays["train_client"] == 1].mean(axis=(0, 2, 3)),
                               -arrays["train_images"][arrays["train_client"] == 0].mean(axis=(0, 2, 3)), atol=0.2)
