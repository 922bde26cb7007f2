"""The shared scoring toolkit against known answers: FD/KID (and torchmetrics), intervals,
confident mode counting, the verdict helper and the real-data floor."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from embedlab.evaluation.claims import precondition, verdict
from embedlab.evaluation.distances import distance_scores, frechet_distance, kernel_distance
from embedlab.evaluation.intervals import over_seeds, proportion, score, value_of, wilson
from embedlab.evaluation.modes import confident_classes, coverage, min_count_from_ceiling, triple_modes


def gaussian(n, d=8, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


class Identity(nn.Module):
    num_features = 8

    def forward(self, x):
        return x.flatten(1)


def test_fd_and_kid_equal_torchmetrics_on_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import poly_mmd

    a, b = gaussian(300, seed=1), gaussian(300, shift=0.3, seed=2) * 1.5
    fid = FrechetInceptionDistance(feature=Identity(), normalize=False)
    fid.update(a.float(), real=True)
    fid.update(b.float(), real=False)
    assert frechet_distance(a, b) == pytest.approx(float(fid.compute()), rel=1e-3)
    assert kernel_distance(a, b) == pytest.approx(float(poly_mmd(a, b)), rel=1e-9)


def test_same_distribution_is_near_zero_with_an_interval_covering_zero():
    scores = distance_scores(gaussian(400, seed=3), gaussian(400, seed=4), bootstrap=300, seed=0)
    for name in ("fd", "kid"):
        s = scores[name]
        assert s["lo"] <= 0 <= s["hi"], (name, s)
        assert s["n"] == 400
    assert scores["kid"]["value"] == pytest.approx(0.0, abs=0.02)
    # FD's plug-in value is biased up at finite N; the reported value is bias-corrected.
    assert scores["fd"]["plugin"] > scores["fd"]["hi"] and abs(scores["fd"]["value"]) < scores["fd"]["plugin"]


def test_shifted_gaussians_are_far_and_their_interval_excludes_zero():
    near = distance_scores(gaussian(400, seed=3), gaussian(400, seed=4), bootstrap=200)
    far = distance_scores(gaussian(400, seed=3), gaussian(400, shift=1.0, seed=4), bootstrap=200)
    for name in ("fd", "kid"):
        assert far[name]["lo"] > 0 and far[name]["lo"] > near[name]["hi"], name
    assert far["fd"]["value"] == pytest.approx(8.0, rel=0.15)  # |mu_a - mu_b|^2 = 8 x 1^2


def _fd_by_eigendecomposition(a: torch.Tensor, b: torch.Tensor) -> float:
    """FD the textbook way: S_a^(1/2) from its eigendecomposition, then the eigenvalues."""
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(s1)
    root = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    trace_sqrt = torch.linalg.eigvalsh(root @ s2 @ root).clamp_min(0).sqrt().sum()
    return float((a.mean(0) - b.mean(0)).pow(2).sum() + s1.trace() + s2.trace() - 2 * trace_sqrt)


@pytest.mark.parametrize("rows", [300, 5])  # 5 rows of 8 features: a singular covariance, no Cholesky factor
def test_fd_equals_the_eigendecomposition_form_with_or_without_a_cholesky_factor(rows):
    a, b = gaussian(rows, seed=5), gaussian(200, shift=0.2, seed=6) * 1.3
    factored = int(torch.linalg.cholesky_ex(torch.cov(a.T)).info) == 0
    assert factored == (rows > 8)
    # A singular S_a's near-zero eigenvalues carry rounding (~1e-17) that their square roots
    # lift to ~1e-9: the two forms agree to that, and to 1e-9 relative where S_a is factored.
    tolerance = 1e-9 if factored else 1e-6
    assert frechet_distance(a, b) == pytest.approx(_fd_by_eigendecomposition(a, b), rel=tolerance)


def test_second_moments_made_by_blocks_equal_those_made_whole(monkeypatch):
    import embedlab.evaluation.distances as distances

    a, b = gaussian(300, seed=7), gaussian(250, shift=0.5, seed=8)
    whole = distance_scores(a, b, bootstrap=100, seed=3)
    monkeypatch.setattr(distances, "OUTER_BYTES", 40 * 36 * 8)  # the 36-entry triangles of 40 rows at a time
    assert distances._outer_rows(a) is None
    blocked = distance_scores(a, b, bootstrap=100, seed=3)
    for name in ("fd", "kid"):
        for key in ("value", "lo", "hi"):
            assert blocked[name][key] == pytest.approx(whole[name][key], rel=1e-9, abs=1e-12), (name, key)


def test_distances_refuse_too_few_samples():
    with pytest.raises(ValueError, match=">= 2 generated"):
        distance_scores(gaussian(10), gaussian(1))


def test_wilson_interval_known_values_and_the_score_format():
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    s = proportion([True] * 9 + [False])
    assert set(s) == {"value", "lo", "hi", "n"} and s["value"] == 0.9 and s["lo"] < 0.9 < s["hi"]
    assert value_of(s) == 0.9 and value_of(3.0) == 3.0


def test_over_seeds_uses_a_t_interval_and_keeps_a_single_seeds_own():
    per_seed = [score(v, v - 1, v + 1, 100) for v in (1.0, 2.0, 3.0)]
    agg = over_seeds(per_seed)
    half = 4.302653 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert agg["value"] == 2.0 and agg["lo"] == pytest.approx(2 - half, abs=1e-3) and agg["seeds"] == 3
    assert over_seeds(per_seed[:1]) == {**per_seed[0], "seeds": 1}


def test_confident_counting_ignores_low_confidence_samples():
    probs = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.05, 0.95], [0.5, 0.5]])
    assert confident_classes(probs, 0.9).tolist() == [0, -1, 1, -1]
    # A stacked sample has a mode only when every channel is confident.
    assert triple_modes(torch.tensor([[1, 2, 3], [1, -1, 3]]), 10).tolist() == [123, -1]
    cov = coverage(np.array([0, 0, 0, 1, -1, -1]), num_modes=3, min_count=2)
    assert cov["modes_covered"] == 1 and cov["modes_any"] == 2
    assert cov["assigned_share"]["value"] == pytest.approx(4 / 6, abs=1e-4)


def test_min_count_comes_from_the_real_ceiling_and_changes_what_counts():
    ceiling = np.repeat(np.arange(100), 10)  # 10 per mode
    assert min_count_from_ceiling(ceiling, 100, 0.25) == 3
    assert min_count_from_ceiling(np.full(5, -1), 100, 0.25) == 1
    junk = np.arange(100)  # one sample in each mode: every mode "covered" without the gate
    assert coverage(junk, 100, 1)["modes_covered"] == 100
    assert coverage(junk, 100, min_count_from_ceiling(ceiling, 100, 0.25))["modes_covered"] == 0


@pytest.mark.parametrize("diffs, kind, margin, expected", [
    ([0.10, 0.12, 0.09, 0.11, 0.10], "superior", 0.0, "reproduced"),
    ([-0.10, -0.12, -0.09, -0.11, -0.10], "superior", 0.0, "refuted"),
    ([0.001, -0.002, 0.0015, -0.001, 0.0005], "superior", 0.01, "refuted"),  # inside the equivalence margin
    ([0.2, -0.3, 0.25, -0.1, 0.05], "superior", 0.0, "inconclusive"),
    ([-0.01, 0.0, -0.005, 0.005, -0.002], "noninferior", 0.05, "reproduced"),
    ([-0.2, -0.25, -0.22, -0.21, -0.19], "noninferior", 0.05, "refuted"),
    # equivalence before direction: an interval inside (0, margin) is an effect smaller than the
    # claim's own margin, not a reproduction (the rule used to read "reproduced" here)
    ([0.004, 0.005, 0.0045, 0.0055, 0.005], "superior", 0.01, "refuted"),
    ([-0.004, -0.005, -0.0045, -0.0055, -0.005], "superior", 0.01, "refuted"),
    # beyond the margin on either side: direction decides
    ([0.05, 0.06, 0.055, 0.052, 0.058], "superior", 0.01, "reproduced"),
    ([-0.05, -0.06, -0.055, -0.052, -0.058], "superior", 0.01, "refuted"),
    # crossing the margin's edge, above 0: the effect is real but may be below what matters
    ([0.002, 0.02, 0.01, 0.015, 0.005], "superior", 0.01, "reproduced"),
    # straddling zero and wider than the margin: no call
    ([0.03, -0.03, 0.02, -0.02, 0.01], "superior", 0.01, "inconclusive"),
    ([-0.06, 0.01, -0.04, 0.0, -0.05], "noninferior", 0.05, "inconclusive"),
    # fewer than two seeds: no interval, no call
    ([0.5], "superior", 0.0, "inconclusive"),
    ([0.5], "noninferior", 0.05, "inconclusive"),
])
def test_verdict_on_synthetic_paired_data(diffs, kind, margin, expected):
    b = [0.5] * len(diffs)
    a = [x + d for x, d in zip(b, diffs)]
    out = verdict(a, b, claim="a beats b", metric="accuracy", arms=("a", "b"), kind=kind, margin=margin)
    assert out["verdict"] == expected
    assert out["difference"]["n"] == len(diffs) and out["wins"] == sum(d > 0 for d in diffs)


def test_a_diverged_seed_makes_the_verdict_inconclusive_and_is_counted_apart():
    # mean_interval drops non-finite values; the verdict must not then rest on fewer seeds
    # than it ran while reporting them all
    b = [0.5, 0.5, 0.5, 0.5]
    a = [0.6, 0.61, float("nan"), 0.62]
    out = verdict(a, b, claim="a beats b", metric="accuracy", arms=("a", "b"))
    assert out["verdict"] == "inconclusive"
    assert out["difference"]["n"] == 3 and out["nonfinite"] == 1 and out["wins"] == 3
    assert out["per_seed"][2] is None
    clean = verdict(a[:2] + a[3:], b[:3], claim="a beats b", metric="accuracy", arms=("a", "b"))
    assert clean["verdict"] == "reproduced" and clean["nonfinite"] == 0


def test_verdict_lower_is_better_and_an_unmet_precondition():
    fd_a, fd_b = [10.0, 11.0, 9.5], [20.0, 21.0, 19.0]
    out = verdict(fd_a, fd_b, claim="a has lower FD", metric="fd", arms=("a", "b"), higher_is_better=False)
    assert out["verdict"] == "reproduced" and out["difference"]["value"] > 0  # positive favours a
    req = precondition("baseline leaves room: b's coverage <= 0.9", 0.99, 0.9, higher_is_better=False)
    blocked = verdict(fd_a, fd_b, claim="x", metric="fd", arms=("a", "b"), higher_is_better=False, requires=req)
    assert not req["met"] and blocked["verdict"] == "untested" and blocked["precondition"] == req
    with pytest.raises(ValueError, match="one value per seed"):
        verdict([1.0], [1.0, 2.0], claim="x", metric="m", arms=("a", "b"))


def test_sample_scorer_floor_matches_class_counts_and_caps_n(digits_prepared):
    from embedlab.classifiers.nets import EvaluatorNet
    from embedlab.evaluation.samples import SampleScorer

    torch.manual_seed(0)
    net = EvaluatorNet(num_classes=10, image_size=16, width=4, feature_dim=8).eval()
    scorer = SampleScorer(net, digits_prepared, threshold=0.5, bootstrap=20)
    labels = torch.arange(10).repeat_interleave(20)
    x, y = scorer.floor_images(len(labels), labels)
    assert torch.equal(torch.bincount(y), torch.bincount(labels))
    assert scorer.cap(10**6) == scorer.pool_size == len(digits_prepared.split("train")[1])
    floor = scorer.floor(len(labels), labels)
    assert {"fd", "kid", "confident_share", "accuracy"} <= set(floor) and floor["fd"]["n"] == 200
    assert scorer.floor(len(labels), labels) is floor  # cached: one floor per N and class counts
    with pytest.raises(ValueError, match="class 0"):
        scorer.floor_images(10**4, torch.zeros(10**4, dtype=torch.long))
