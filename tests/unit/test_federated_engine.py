"""The federated engine: stacked networks, the in-process simulation against lone client
updates, what crosses the client boundary, FRAug's parts, GGEUR's client sets."""

import numpy as np
import pytest
import torch

from embedlab.methods.federated import core
from embedlab.methods.federated.clients import (
    FederatedDataError,
    client_class_stats,
    feature_shift_clients,
    ggeur_augment,
    stratified_subset,
)
from embedlab.methods.federated.engine import (
    ALGORITHMS,
    ClientData,
    RunConfig,
    balanced_labels,
    build_model,
    loss_ratio,
    multi_kernel_mmd,
    rbf_mmd2,
    split_payload,
)
from embedlab.methods.federated.nets import ClientCNN, ReleasedRTNet, stack, unstack
from embedlab.methods.federated.params import FRAugDampedParams, FRAugParams, GGEURParams
from embedlab.methods.federated.simulation import client_update, simulate

CNN = {"kind": "cnn", "image_size": 8, "num_classes": 10, "width": 4, "embedding_dim": 8}


@pytest.fixture(scope="module")
def digit_clients():
    """Three clients of real 8x8 digits: plain, inverted and transposed (a feature shift)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 8.0 - 1.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target)
    views = [x, -x, x.transpose(-1, -2)]
    return [ClientData(f"c{k}", v[k * 40:(k + 1) * 40], y[k * 40:(k + 1) * 40], v[600:660], y[600:660])
            for k, v in enumerate(views)]


def cfg(algorithm: str, rounds: int = 2, **kw) -> RunConfig:
    """`fraug` runs the released form, `fraug-damped` the earlier variant."""
    algorithm, _, form = algorithm.partition("-")
    fraug = FRAugParams(form=form or "released", damped=FRAugDampedParams(warmup_rounds=1, hidden=8, noise_dim=4))
    base = dict(algorithm=algorithm, seed=3, rounds=rounds, local_steps=3, batch_size=8, lr=0.05, momentum=0.9,
                weight_decay=5e-4, mu=0.1 if algorithm == "fedprox" else 0.0, model=CNN,
                fraug=fraug.model_dump() if algorithm == "fraug" else None)
    return RunConfig(**{**base, **kw})


def test_stacked_network_equals_its_clients_run_alone():
    torch.manual_seed(0)
    net = ClientCNN(3, 8, 10, width=4, embedding_dim=8).eval()
    x = torch.randn(3, 5, 1, 8, 8)
    for k, state in enumerate(unstack(net.state_dict(), 3)):
        alone = ClientCNN(1, 8, 10, width=4, embedding_dim=8).eval()
        alone.load_state_dict(state)
        assert torch.allclose(alone(x[k:k + 1])[0], net(x)[k], atol=1e-5)
    restacked = stack(unstack(net.state_dict(), 3))
    assert all(torch.equal(restacked[n], t) for n, t in net.state_dict().items())


@pytest.mark.parametrize("algorithm", ["fedavg", "fedprox", "fedbn", "fraug", "fraug-damped"])
def test_simulation_equals_lone_client_updates_and_server_aggregate(digit_clients, algorithm):
    """The stacked in-process run and a server loop over `client_update` (what a Flower
    ClientApp calls) reach the same states: one engine, two drivers. (FRAug's generator and
    RTNet used to start from draws that depended on the number of clients: caught here.)"""
    c = cfg(algorithm)
    sim = simulate(digit_clients, c)
    glob, private = {}, [None] * 3
    for rnd in range(c.rounds):
        updates = []
        for k, client in enumerate(digit_clients):
            update, private[k] = client_update(glob, client, c, client_id=k, rnd=rnd, private=private[k])
            updates.append(update)
        glob = split_payload(core.server_aggregate(updates, "fedavg"))
    expected = unstack(sim["states"]["net"], 3)
    for k in range(3):
        mine = core.merge_global(private[k]["net"], glob["net"])
        for name, value in expected[k].items():
            assert torch.allclose(mine[name].float(), value.float(), atol=1e-4), (algorithm, k, name)
    if algorithm.startswith("fraug"):  # the shared generator too; each RTNet stayed with its client
        for k in range(3):
            for name, value in unstack(sim["states"]["gen"], 3)[k].items():
                assert torch.allclose(glob["gen"][name].float(), value.float(), atol=1e-4), (k, name)
            for name, value in unstack(sim["states"]["rtnet"], 3)[k].items():
                assert torch.allclose(private[k]["rtnet"][name].float(), value.float(), atol=1e-4), (k, name)
        assert "rtnet" not in glob
    if algorithm in ("fedbn", "fraug", "fraug-damped"):  # the clients' BatchNorms differ: they never left the clients
        assert not torch.allclose(expected[0]["bn1.weight"], expected[1]["bn1.weight"])
    else:
        assert torch.allclose(expected[0]["bn1.weight"], expected[1]["bn1.weight"])


def test_fraug_payload_holds_no_rtnet_no_norm_layers_and_no_samples(digit_clients):
    c = cfg("fraug")
    update, private = client_update({}, digit_clients[0], c, client_id=0, rnd=1)
    parts = split_payload(update.state)
    assert set(parts) == {"net", "gen"}  # the RTNet stays home
    assert "rtnet" in private and private["rtnet"]
    assert not any(k.startswith("bn") for k in parts["net"])  # FedBN's local layers stay home
    params = {f"net.{k}": v.shape for k, v in private["net"].items()} | {f"gen.{k}": v.shape for k, v in private["gen"].items()}
    for key, value in update.state.items():  # every tensor is a parameter or buffer of the model
        assert value.shape == params[key], key
    n_features = digit_clients[0].x_train[0].numel()
    assert not any(v.dim() >= 1 and v.shape[-1] == n_features and v.shape[0] == len(digit_clients[0].y_train)
                   for v in update.state.values())
    assert update.num_samples == 40


def test_every_algorithm_runs_end_to_end_and_learns(digit_clients):
    for algorithm in [*ALGORITHMS, "fraug-damped"]:
        out = simulate(digit_clients, cfg(algorithm, rounds=8, local_steps=8, batch_size=16))
        acc = [np.mean(a) for a in out["history"]["eval_acc"]]
        assert len(acc) == 8
        # Chance is 0.1; FedAvg's shared BatchNorm over inverted and transposed digits is slow.
        assert acc[-1] > 0.2 and acc[-1] > acc[0] + 0.05, (algorithm, acc)
        sent = out["history"]["upload_bytes"]
        assert (sum(sent) == 0) == (algorithm == "local"), algorithm
    again = simulate(digit_clients, cfg(algorithm, rounds=8, local_steps=8, batch_size=16))
    assert again["final_eval_acc"] == out["final_eval_acc"]  # deterministic for a seed


def test_fraug_bytes_include_the_generator_and_fedbn_sends_less_than_fedavg(digit_clients):
    sent = {a: simulate(digit_clients, cfg(a, rounds=1))["history"]["upload_bytes"][0] for a in ("fedavg", "fedbn", "fraug")}
    assert sent["fedbn"] < sent["fedavg"] < sent["fraug"]


def test_released_fraug_parts_follow_the_released_code(digit_clients):
    """The released form's pieces: RTNet output through a BatchNorm at gamma = 1 (unit scale,
    not damped), class means as a running EMA over the classes a batch holds, balanced labels
    that cycle through every class, the loss ratio capped at 0.5, a multi-kernel MMD."""
    torch.manual_seed(0)
    rt = ReleasedRTNet(2, 8, 10).train()
    g, base = torch.rand(2, 64, 8), torch.zeros(2, 64, 8)
    y = torch.randint(0, 10, (2, 64))
    out = rt(g, base, y)
    assert torch.allclose(out.std((1,)).mean(), torch.tensor(1.0), atol=0.05)  # BN at gamma 1: unit scale
    assert all(torch.allclose(w, torch.ones_like(w)) for n, w in rt.state_dict().items() if n.endswith("bn.weight"))
    f = torch.rand(2, 4, 8)
    y = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])
    rt.update_means(f, y, 0.3)
    assert torch.allclose(rt.class_means[0, 0], 0.3 * f[0, :2].mean(0))
    assert torch.allclose(rt.class_means[1, 2], 0.3 * f[1].mean(0))
    assert rt.class_means[0, 2:].abs().sum() == 0 and rt.class_means[1, :2].abs().sum() == 0  # absent: untouched
    rt.update_means(f, y, 0.3)
    assert torch.allclose(rt.class_means[1, 2], (0.3 + 0.7 * 0.3) * f[1].mean(0))
    labels = torch.cat([balanced_labels(0, 20, s, 32, 10) for s in range(5)])
    assert np.bincount(labels.numpy(), minlength=10).tolist() == [16] * 10
    assert not torch.equal(balanced_labels(0, 20, 0, 32, 10), balanced_labels(0, 20, 1, 32, 10))
    assert [loss_ratio(r, 300, 0.5, 0.002) for r in (0, 299)] == [0.5, 0.5]  # digits: constant 0.5
    assert loss_ratio(0, 1000, 0.5, 0.002) < 0.5
    x = torch.randn(2, 32, 4, generator=torch.Generator().manual_seed(1))
    assert multi_kernel_mmd(x, x).abs().max() < 1e-6
    assert (multi_kernel_mmd(x, x + 2.0) > multi_kernel_mmd(x, x + 0.2)).all()
    # In a run, the class means stay with the client, never in the update.
    update, private = client_update({}, digit_clients[0], cfg("fraug"), client_id=0, rnd=0)
    assert private["rtnet"]["class_means"].abs().sum() > 0
    assert not any("class_means" in k or k.startswith("rtnet") for k in update.state)


def test_rbf_mmd_is_zero_for_equal_sets_and_grows_with_a_shift():
    x = torch.randn(2, 64, 4, generator=torch.Generator().manual_seed(0))
    assert rbf_mmd2(x, x).abs().max() < 1e-6
    assert (rbf_mmd2(x, x + 2.0) > rbf_mmd2(x, x + 0.2)).all()


def test_stratified_subset_spreads_classes_and_sizes_are_checked():
    labels = np.repeat(np.arange(10), 20)
    pick = stratified_subset(labels, 30, np.random.default_rng(0))
    assert np.bincount(labels[pick], minlength=10).tolist() == [3] * 10
    arrays = {"client_names": np.array(["a"]), "train_client": np.zeros(20, int), "train_images": np.zeros((20, 1, 4, 4), np.float32),
              "train_labels": np.arange(20) % 10, "val_client": np.zeros(2, int), "val_images": np.zeros((2, 1, 4, 4), np.float32),
              "val_labels": np.arange(2)}
    with pytest.raises(FederatedDataError, match=r"client 'a' holds 20 training samples in parts.npz"):
        feature_shift_clients(arrays, 30, 0, "val", "parts.npz")


def test_ggeur_clients_send_statistics_and_keep_their_weight():
    g = torch.Generator().manual_seed(0)
    empty = (torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))
    clients = [ClientData("a", torch.randn(30, 4, generator=g), torch.tensor([0] * 25 + [1] * 5), *empty),
               ClientData("b", torch.randn(20, 4, generator=g) + 3, torch.tensor([1] * 20), *empty)]
    sent = client_class_stats(clients[0], 2)
    assert set(sent) == {0, 1} and sent[0].count == 25  # statistics, no rows
    cfg_ = GGEURParams(per_sample=4, target_size=40)
    single, nbytes = ggeur_augment(clients, 2, cfg_, seed=0)
    assert nbytes > 0
    a, b = single
    assert a.num_samples == 30 and b.num_samples == 20  # FedAvg weights stay the real counts
    # Each class the client holds, filled up to the target (5 real rows: 7 copies each, cut to 35).
    assert (a.y_train == 0).sum() == 40 and (a.y_train == 1).sum() == 40
    assert (b.y_train == 0).sum() == 0  # single domain: nothing for a class the client lacks
    assert torch.equal(a.x_train[:25], clients[0].x_train[:25])  # every real row is kept, first
    multi, _ = ggeur_augment(clients, 2, GGEURParams(per_sample=4, target_size=40, prototype_samples=10), seed=0, prototypes=True)
    assert (multi[1].y_train == 0).sum() == 10  # around client a's class-0 mean, relayed as a statistic
    # fill "global": each class up to its count over all clients (class 1: 5 + 20), never below the real rows.
    glob, _ = ggeur_augment(clients, 2, GGEURParams(per_sample=4, fill="global"), seed=0)
    assert (glob[0].y_train == 0).sum() == 25 and (glob[0].y_train == 1).sum() == 25
    assert (glob[1].y_train == 1).sum() == 25 and (glob[1].y_train == 0).sum() == 0


def test_a_client_without_eval_samples_scores_nan_not_an_error(digit_clients):
    from embedlab.methods.federated.engine import accuracies
    from embedlab.methods.federated.nets import ClientCNN

    empty = ClientData("empty", digit_clients[0].x_train, digit_clients[0].y_train,
                       digit_clients[0].x_eval[:0], digit_clients[0].y_eval[:0])
    accs = accuracies(ClientCNN(2, 8, 10, width=4, embedding_dim=8), [digit_clients[0], empty])
    assert 0.0 <= accs[0] <= 1.0 and np.isnan(accs[1])


@pytest.mark.parametrize("size", [8, 16, 32])
def test_colour_clients_train_a_colour_cnn_at_each_size(size):
    """Issue 31: the CNN arms take the clients' channels; a colour batch in, logits out, and
    every algorithm (FRAug included) trains on colour clients."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 3, size, size, generator=gen) * 2 - 1, torch.arange(40) % 10
    clients = [ClientData(f"c{k}", x[k * 20:(k + 1) * 20], y[k * 20:(k + 1) * 20], x[:10], y[:10]) for k in range(2)]
    model = {**CNN, "image_size": size, "channels": 3}
    net = build_model(model, 2)
    assert net.conv1.c_in == 3
    assert net(torch.stack([x[:5], x[5:10]])).shape == (2, 5, 10)
    for algorithm in ("fedavg", "fraug"):
        out = simulate(clients, cfg(algorithm, rounds=1, model=model))
        assert len(out["history"]["eval_acc"]) == 1 and all(np.isfinite(out["final_eval_acc"]))
    with pytest.raises(RuntimeError):  # a grey CNN does not silently take colour
        build_model({**CNN, "image_size": size}, 2)(torch.stack([x[:5], x[5:10]]))

