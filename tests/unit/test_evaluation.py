"""Shared scores: FD on evaluator features, KL to uniform, modes, grids."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from embedlab.classifiers.nets import EvaluatorNet
from embedlab.evaluation import class_accuracy, class_histogram_kl, confusion_matrix, count_modes, predict
from embedlab.evaluation.fid import frechet_distance
from embedlab.evaluation.grids import class_grid, save_grid


def test_histogram_kl_extremes():
    assert class_histogram_kl(np.arange(10).repeat(5), 10) == pytest.approx(0.0, abs=1e-12)
    assert class_histogram_kl(np.zeros(50, dtype=int), 10) == pytest.approx(math.log(10))


def test_count_modes_and_confusion():
    pred = np.array([0, 0, 1, 3, 3, 3])
    assert count_modes(pred, 5) == 3
    assert count_modes(pred, 5, min_count=2) == 2
    m = confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
    assert m.tolist() == [[1, 0], [1, 1]]


def test_class_accuracy_and_predict_shapes():
    torch.manual_seed(0)
    net = EvaluatorNet(num_classes=3, image_size=8, width=4, feature_dim=8).eval()
    probs, feats = predict(net, torch.rand(5, 1, 8, 8) * 2 - 1, batch_size=2)
    assert probs.shape == (5, 3) and feats.shape == (5, 8)
    assert torch.allclose(probs.sum(1), torch.ones(5))
    assert class_accuracy(probs, probs.argmax(1)) == 1.0


def test_frechet_distance_orders_shifts():
    torch.manual_seed(0)
    net = EvaluatorNet(num_classes=3, image_size=8, width=4, feature_dim=8).eval()
    real = torch.rand(400, 1, 8, 8) * 2 - 1
    same = torch.rand(400, 1, 8, 8) * 2 - 1
    shifted = (torch.rand(400, 1, 8, 8) * 2 - 1) * 0.3 + 0.5
    near, far = frechet_distance(real, same, net), frechet_distance(real, shifted, net)
    assert 0 <= near < far
    with pytest.raises(ValueError, match=">= 2 generated"):
        frechet_distance(real, real[:1], net)


def test_save_grid(tmp_path):
    imgs = np.linspace(-1, 1, 6 * 16).reshape(6, 1, 4, 4)
    path = save_grid(imgs, tmp_path / "g.png", per_row=3, scale=2, pad=1)
    w, h = Image.open(path).size
    assert (w, h) == ((3 * 5 + 1) * 2, (2 * 5 + 1) * 2)
    with pytest.raises(ValueError, match=r"\(N, 1, S, S\)"):
        save_grid(np.zeros((2, 4, 4)), tmp_path / "bad.png", per_row=2)


def test_class_grid_rows_are_classes():
    imgs = np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1).repeat(2, 2).repeat(2, 3)
    grid = class_grid(imgs, np.array([0, 1, 0, 1, 2, 0]), num_classes=3, per_class=2)
    assert grid.shape == (6, 1, 2, 2)
    assert grid[:, 0, 0, 0].tolist() == [0, 2, 1, 3, 4, -1]
