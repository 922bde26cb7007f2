"""Domain transforms and federated partitions."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedlab.data.domains import COLOUR_ONLY, DOMAINS, apply_domain, digit_fonts, domain_statistics, generate_domain, synth
from embedlab.data.partition import (
    PartitionError,
    assign_by_proportions,
    dirichlet_partition,
    load_partition,
    run_partition,
    stratified_shards,
)
from embedlab.params import LabelSkewParams, PartitionParams


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(6, 1, 16, 16)).astype(np.float32)


def test_domains_are_distinct_and_in_range(batch):
    outs = {name: apply_domain(name, batch, seed=3) for name in DOMAINS if name not in COLOUR_ONLY}
    for name, out in outs.items():
        assert out.shape == batch.shape and out.dtype == batch.dtype, name
        assert out.min() >= -1 and out.max() <= 1, name
    np.testing.assert_array_equal(outs["original"], batch)
    np.testing.assert_array_equal(outs["inverted"], -batch)
    np.testing.assert_array_equal(np.rot90(outs["rotated"], k=-1, axes=(-2, -1)), batch)
    np.testing.assert_allclose(outs["contrast"], 0.4 * batch, rtol=1e-6)
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.allclose(outs[a], outs[b]), (a, b)


def test_blurred_noise_is_seeded(batch):
    np.testing.assert_array_equal(apply_domain("blurred_noise", batch, 1), apply_domain("blurred_noise", batch, 1))
    assert not np.allclose(apply_domain("blurred_noise", batch, 1), apply_domain("blurred_noise", batch, 2))
    # Blurring a constant image changes nothing but the noise.
    flat = np.zeros((200, 1, 16, 16), np.float32)
    assert abs(apply_domain("blurred_noise", flat, 0).std() - 0.2) < 0.01


def test_unknown_domain():
    with pytest.raises(ValueError, match="unknown domain 'sepia'"):
        apply_domain("sepia", np.zeros((1, 1, 4, 4)), 0)


def test_stratified_shards_same_label_distribution():
    labels = np.repeat(np.arange(10), 50)
    client = stratified_shards(labels, 5, np.random.default_rng(0))
    hist = np.array([np.bincount(labels[client == k], minlength=10) for k in range(5)])
    assert (hist == 10).all()


def test_dirichlet_every_client_non_empty_and_deterministic():
    labels = np.repeat(np.arange(10), 100)
    cfg = LabelSkewParams(num_clients=8, alpha=0.1, min_client_size=5)
    a, pa = dirichlet_partition(labels, 10, cfg, np.random.default_rng(0))
    b, _ = dirichlet_partition(labels, 10, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert np.bincount(a, minlength=8).min() >= 5
    assert pa.shape == (10, 8) and np.allclose(pa.sum(1), 1)


def test_samples_follow_their_class_proportions():
    # Class 0 all to client 2, class 1 split evenly over clients 0 and 1.
    proportions = np.array([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    labels = np.array([0] * 100 + [1] * 4000)
    client = assign_by_proportions(labels, proportions, np.random.default_rng(0))
    assert (client[:100] == 2).all()
    share = np.bincount(client[100:], minlength=3) / 4000
    assert abs(share[0] - 0.5) < 0.03 and share[2] == 0
    # Not a cumulative-sum split: the last client gets no leftovers of class 1.


def test_small_alpha_is_more_skewed_than_large():
    labels = np.repeat(np.arange(10), 200)

    def skew(alpha):
        skew = LabelSkewParams(num_clients=5, alpha=alpha, min_client_size=1)
        client, _ = dirichlet_partition(labels, 10, skew, np.random.default_rng(1))
        hist = np.array([np.bincount(labels[client == k], minlength=10) for k in range(5)], dtype=float)
        p = hist / hist.sum(1, keepdims=True)
        return float(np.mean(np.abs(p - 0.1).sum(1)))

    assert skew(0.1) > 3 * skew(100.0)


def test_impossible_partition_names_params():
    labels = np.repeat(np.arange(2), 5)
    with pytest.raises(PartitionError, match="min_client_size=20"):
        dirichlet_partition(labels, 2, LabelSkewParams(num_clients=3, min_client_size=20, max_retries=5), np.random.default_rng(0))


def test_run_partition_writes_validated_report(tmp_path, digits_prepared):
    params = PartitionParams(label_skew={"alpha": 0.1, "extra_alphas": [0.5]})
    summary = run_partition(digits_prepared, params, tmp_path / "partitions", tmp_path / "report")
    assert set(summary) == {"feature_shift", "label_skew", "label_skew_alpha0.5"}
    fs = load_partition(tmp_path / "partitions", "feature_shift")
    # auto on grey digits 0-9: FRAug's digit domains, and the report says why
    assert list(fs["client_names"]) == ["original", "synth", "mnistm", "svhn", "usps", "inverted"]
    assert summary["feature_shift"]["domains_chosen"].startswith("auto: grey digits 0-9")
    cfg = params.feature_shift
    for k, name in enumerate(fs["client_names"]):
        for split, per_class in (("train", cfg.train_per_class), ("val", cfg.val_per_class)):
            counts = np.bincount(fs[f"{split}_labels"][fs[f"{split}_client"] == k], minlength=10)
            assert (counts == per_class).all(), (name, split, counts)
    sizes = {c["name"]: c["train_size"] + c["val_size"] + c["test_size"] for c in summary["feature_shift"]["clients"]}
    # Source-derived domains share the source images, each used once; synth renders its own.
    assert sum(n for name, n in sizes.items() if name != "synth") == len(digits_prepared.labels)
    assert sizes["synth"] == 10 * (cfg.train_per_class + cfg.val_per_class + cfg.synth_test_per_class)
    # Test shards as large as the source allows: 5 source-derived domains share 1,797 digits, so
    # each tests on about 1797 / 5 - 150 = 209 (synth renders 1,000).
    derived = len([d for d in fs["client_names"] if d != "synth"])
    assert min(c["test_size"] for c in summary["feature_shift"]["clients"]) >= len(digits_prepared.labels) // derived - 160
    original = np.concatenate([fs[f"{s}_images"][fs[f"{s}_client"] == 0] for s in ("train", "val", "test")])
    assert len(np.unique(original.reshape(len(original), -1), axis=0)) == len(original)  # no image in two splits
    assert set(summary["feature_shift"]["domains"]) == set(fs["client_names"])
    assert (tmp_path / "report" / "domains.png").stat().st_size > 5000
    for setting in summary:
        for c in summary[setting]["clients"]:
            assert c["train_size"] == sum(c["train_histogram"]) > 0
    # Inverted client's images are the negation of the same samples' originals.
    ls = load_partition(tmp_path / "partitions", "label_skew")
    assert ls["train_client"].max() == params.label_skew.num_clients - 1
    # Each extra alpha is its own split over the same training samples; a larger alpha spreads
    # every class over more clients.
    wide = load_partition(tmp_path / "partitions", "label_skew_alpha0.5")
    np.testing.assert_array_equal(wide["train_labels"], ls["train_labels"])
    def clients_per_class(arrays):
        return np.mean([len(np.unique(arrays["train_client"][arrays["train_labels"] == c])) for c in range(10)])
    assert clients_per_class(wide) > clients_per_class(ls)
    saved = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert saved == summary
    assert (tmp_path / "report" / "label_histograms.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def digit_batch(digits_prepared):
    images, labels = digits_prepared.split("train")
    return images[:300], labels[:300]


@pytest.mark.parametrize("name", ["mnistm", "svhn", "usps", "synth"])
def test_dataset_domains_are_seeded_keep_every_class_and_stay_in_range(digit_batch, name):
    images, labels = digit_batch

    def make(seed):
        if name == "synth":
            return generate_domain(name, labels, 16, seed)
        return apply_domain(name, images, seed)

    first = make(1)
    assert first.shape == images.shape and first.dtype == np.float32
    assert first.min() >= -1 and first.max() <= 1 and np.isfinite(first).all()
    np.testing.assert_array_equal(first, make(1))  # deterministic per seed
    if name != "usps":  # usps draws nothing at random
        assert not np.allclose(first, make(2))
    assert len(np.unique(labels)) == 10  # the domain is made for every class of its labels
    for c in range(10):
        assert first[labels == c].std() > 0.05, c


def test_domains_differ_in_a_measured_statistic(digit_batch):
    """Each pair of the default domains is told apart by mean, std or edge energy."""
    images, labels = digit_batch
    stats = {name: domain_statistics(apply_domain(name, images, 1)) for name in ("original", "mnistm", "svhn", "usps")}
    stats["synth"] = domain_statistics(generate_domain("synth", labels, 16, 1))
    names = list(stats)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            gap = max(abs(stats[a][k] - stats[b][k]) / max(abs(stats[a][k]), abs(stats[b][k])) for k in stats[a])
            assert gap > 0.1, (a, b, stats[a], stats[b])


def test_synth_uses_fonts_whose_digits_read_as_digits():
    names = {Path(f).name for f in digit_fonts()}
    assert {"DejaVuSans.ttf", "DejaVuSerif.ttf", "cmr10.ttf", "STIXGeneral.ttf"} <= names
    assert not names & {"cmsy10.ttf", "cmex10.ttf", "LastResortHE-Regular.ttf"}  # symbols, not digits
    images = synth(np.arange(10), 16, np.random.default_rng(0))
    assert images.shape == (10, 1, 16, 16)


def test_feature_shift_errors_name_the_key(digits_prepared):
    with pytest.raises(PartitionError, match=r"partition.feature_shift: domain 'original' .*train_per_class"):
        run_partition(digits_prepared, PartitionParams(feature_shift={"train_per_class": 60}), Path("/nonexistent/a"),
                      Path("/nonexistent/b"))
    letters = replace(digits_prepared, meta={**digits_prepared.meta, "class_names": list("abcdefghij")})
    listed = PartitionParams(feature_shift={"domains": ["original", "synth", "mnistm", "svhn", "usps", "inverted"]})
    with pytest.raises(PartitionError, match="'synth' renders the digits 0-9"):
        run_partition(letters, listed, Path("/nonexistent/a"), Path("/nonexistent/b"))


def test_params_accept_exactly_the_domains_the_code_makes():
    """params.DomainName (what params.yaml may name) is a second list beside domains.DOMAINS and
    GENERATED (what partition can make): they must not drift apart."""
    from typing import get_args

    from embedlab.data.domains import GENERATED
    from embedlab.params import DomainName

    assert set(get_args(DomainName)) == set(DOMAINS) | set(GENERATED)


def test_auto_domains_follow_the_source(digits_prepared):
    """Issue 31: `auto` keeps FRAug's digit domains for grey digits 0-9 and takes transforms of
    the source's own images for anything else, colour shifts for colour; a grey source refuses
    colour-only shifts by name."""
    from embedlab.data.domains import AUTO_COLOUR, AUTO_GREY, auto_domains
    from embedlab.data.partition import resolve_domains

    digits = [str(c) for c in range(10)]
    assert auto_domains(digits, 10, 1)[0] == ("original", "synth", "mnistm", "svhn", "usps", "inverted")
    assert auto_domains(list("abcdefghij"), 10, 1)[0] == AUTO_GREY
    assert auto_domains(digits, 10, 3)[0] == AUTO_COLOUR  # colour digits: the grey look-alikes would drop the colour
    assert not set(AUTO_COLOUR) & {"mnistm", "svhn", "usps", "synth"} and not set(AUTO_GREY) & set(COLOUR_ONLY)
    letters = replace(digits_prepared, meta={**digits_prepared.meta, "class_names": list("abcdefghij")})
    chosen, why = resolve_domains(letters, PartitionParams())
    assert chosen == AUTO_GREY and why.startswith("auto: a grey source (not the digits 0-9)")
    with pytest.raises(PartitionError, match=r"\['hue_rotated'\] shift colours.*grey images"):
        run_partition(digits_prepared, PartitionParams(feature_shift={"domains": ["original", "hue_rotated"]}),
                      Path("/nonexistent/a"), Path("/nonexistent/b"))


def test_colour_shifts_move_hue_swap_channels_and_drop_colour():
    rgb = np.random.default_rng(0).uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    hue = apply_domain("hue_rotated", rgb, 0)
    np.testing.assert_array_equal(hue[:, 1], rgb[:, 0])  # red moves to green
    np.testing.assert_array_equal(apply_domain("channel_swap", rgb, 0)[:, [2, 1, 0]], rgb)
    grey = apply_domain("greyscale", rgb, 0)
    assert grey.shape == rgb.shape and grey.dtype == rgb.dtype and np.allclose(grey[:, 0], grey[:, 2])
    np.testing.assert_allclose(grey[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2], atol=1e-6)
