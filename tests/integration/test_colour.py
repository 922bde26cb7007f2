"""Your own colour images (issue 31, first part): a 32x32 RGB folder whose classes differ only
in hue, at one luma, goes through prepare, the gate and the evaluator in colour: the evaluator
separates the classes (val accuracy), which the same pipeline on grey versions (data.channels: 1) cannot.
The methods' colour paths (a colour batch in, a colour sample out, per method and size) are unit tests:
test_gan_method.py, test_federated_engine.py, test_diffusion_given.py, test_vq_given.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from .conftest import run, set_params

pytestmark = pytest.mark.slow

# Three hues of (nearly) one ITU-R 601 luma (~101): grey versions of the classes look alike.
HUES = {"blue": (100, 70, 255), "green": (0, 160, 70), "red": (250, 40, 30)}


def write_folder(root, per_class: int = 50, size: int = 32) -> None:
    rng = np.random.default_rng(0)
    for name, rgb in HUES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shade = rng.uniform(0.5, 1.0, (size, size, 1))  # the same texture law in every class
            Image.fromarray((shade * np.array(rgb)).astype(np.uint8), mode="RGB").save(root / name / f"{i:03d}.png")


def evaluator_accuracy(repo) -> float:
    """prepare, then the evaluator's fit: its best val accuracy (the gate and the scoring stage on
    colour data: tests/unit/test_colour_data.py and test_validate.py)."""
    for cmd in (["embedlab", "prepare"], ["embedlab", "train", "evaluator"]):
        run(cmd, repo)
    return json.loads((repo / "models/evaluator/config.json").read_text())["best_val_acc"]


def test_a_colour_folder_trains_the_evaluator_in_colour_where_grey_versions_cannot(repo_copy):
    write_folder(repo_copy / "data/raw/hues")
    set_params(repo_copy, {"data": {"source": "folder:data/raw/hues", "image_size": 32},
                           "evaluator": {"max_epochs": 15, "patience": 15}})
    colour = evaluator_accuracy(repo_copy)
    images = np.load(repo_copy / "data/prepared/images.npy", mmap_mode="r")
    assert images.shape[1:] == (3, 32, 32)
    config = json.loads((repo_copy / "models/evaluator/config.json").read_text())
    assert config["kwargs"]["channels"] == 3
    assert colour >= 0.9, colour

    set_params(repo_copy, {"data": {"channels": 1}})
    grey = evaluator_accuracy(repo_copy)
    assert np.load(repo_copy / "data/prepared/images.npy", mmap_mode="r").shape[1] == 1
    assert grey < 0.7 and colour - grey > 0.25, (colour, grey)
