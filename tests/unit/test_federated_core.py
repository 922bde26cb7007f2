"""The federated core (issue 6, in progress): aggregation, FedBN's local keys, FedProx,
GGEUR's exact covariance pooling and augmentation."""

import pytest
import torch
from torch import nn

from embedlab.methods.federated.core import (
    Update,
    merge_global,
    norm_keys,
    proximal_term,
    server_aggregate,
    state_bytes,
)
from embedlab.methods.federated.ggeur import augment, class_stats, eigen_directions, pool


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_fedavg_is_the_sample_weighted_mean():
    a, b = small_net(0).state_dict(), small_net(1).state_dict()
    merged = server_aggregate([Update(a, 30), Update(b, 10)], "fedavg")
    for key, value in merged.items():
        if torch.is_floating_point(value):
            assert torch.allclose(value, 0.75 * a[key] + 0.25 * b[key], atol=1e-6), key
    assert merged["1.num_batches_tracked"].dtype == torch.long


def test_fedbn_leaves_every_normalisation_entry_local():
    net = small_net(0)
    keys = norm_keys(net)
    assert keys == {"1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"}
    merged = server_aggregate([Update(small_net(0).state_dict(), 5), Update(small_net(1).state_dict(), 5)],
                              "fedbn", local_keys=keys)
    assert not keys & set(merged) and {"0.weight", "4.bias"} <= set(merged)
    # a client starts the next round from the global conv/linear and its own BatchNorm
    local = small_net(2).state_dict()
    local["1.running_mean"] += 3.0
    start = merge_global(local, merged)
    assert torch.equal(start["1.running_mean"], local["1.running_mean"])
    assert torch.equal(start["0.weight"], merged["0.weight"])


def test_aggregate_rejects_bad_updates_by_name():
    state = small_net(0).state_dict()
    with pytest.raises(ValueError, match="fedsgd"):
        server_aggregate([Update(state, 1)], "fedsgd")
    with pytest.raises(ValueError, match="at least one"):
        server_aggregate([], "fedavg")
    with pytest.raises(ValueError, match="0 samples"):
        server_aggregate([Update(state, 0)], "fedavg")
    fewer = {k: v for k, v in state.items() if k != "4.bias"}
    with pytest.raises(ValueError, match="different keys"):
        server_aggregate([Update(state, 1), Update(fewer, 1)], "fedavg")


def test_proximal_term_is_zero_at_the_global_state_and_pulls_back_toward_it():
    net = small_net(0)
    global_state = {k: v.clone() for k, v in net.state_dict().items()}
    assert proximal_term(net, global_state, mu=0.1).item() == 0.0
    with torch.no_grad():
        net[4].weight.add_(1.0)
    term = proximal_term(net, global_state, mu=0.1)
    term.backward()
    # d/dw (mu / 2) ||w - w_g||^2 = mu (w - w_g) = 0.1 on every shifted entry
    assert torch.allclose(net[4].weight.grad, torch.full_like(net[4].weight, 0.1))
    assert term.item() == pytest.approx(0.5 * 0.1 * net[4].weight.numel())


def test_state_bytes_counts_tensor_payloads():
    assert state_bytes({"a": torch.zeros(10), "b": torch.zeros(2, 3, dtype=torch.float64)}) == 40 + 48


def test_pooled_covariance_equals_the_covariance_of_all_data_stacked():
    gen = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, 5, generator=gen) * s + m for n, s, m in ((7, 1.0, 0.0), (20, 2.0, 3.0), (3, 0.5, -1.0))]
    pooled = pool([class_stats(p) for p in parts])
    everything = class_stats(torch.cat(parts))
    assert pooled.count == 30
    assert torch.allclose(pooled.mean, everything.mean, atol=1e-10)
    assert torch.allclose(pooled.cov, everything.cov, atol=1e-10)


def test_augment_sqrt_scale_reproduces_the_pooled_covariance():
    gen = torch.Generator().manual_seed(1)
    cov = torch.tensor([[4.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    values, vectors = eigen_directions(cov)
    assert values[0] >= values[1] >= 0
    x = torch.zeros(1, 2)
    new = augment(x, values, vectors, copies=20000, scale="sqrt", generator=gen)
    assert new.shape == (20000, 2)
    assert torch.allclose(torch.cov(new.double().T), cov, atol=0.15)
    linear = augment(x, values, vectors, copies=20000, scale="linear", generator=gen)
    assert torch.cov(linear.double().T).trace() > torch.cov(new.double().T).trace()  # eigenvalues > 1 here
    with pytest.raises(ValueError, match="cube"):
        augment(x, values, vectors, copies=1, scale="cube")
