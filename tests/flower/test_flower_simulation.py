"""Two rounds of FedBN in Flower's simulation engine (Ray, two client nodes) reach the same
global state as the in-process engine: the same core, wrapped as a ServerApp / ClientApp."""

import numpy as np
import torch

from embedlab.methods.federated import flower_app
from embedlab.methods.federated.clients import feature_shift_clients
from embedlab.methods.federated.engine import RunConfig
from embedlab.methods.federated.nets import unstack
from embedlab.methods.federated.simulation import simulate


def digits_partition(path):
    """A feature-shift partition file of real digits: client 0 plain, client 1 inverted."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 8.0 - 1.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    client = np.arange(len(y)) % 2
    images = np.where(client[:, None, None, None] == 1, -x, x)
    arrays = {"client_names": np.array(["plain", "inverted"])}
    for split, rows in (("train", slice(0, 1200)), ("val", slice(1200, 1500)), ("test", slice(1500, None))):
        arrays |= {f"{split}_images": images[rows], f"{split}_labels": y[rows], f"{split}_client": client[rows]}
    np.savez(path, **arrays)
    return arrays


def test_two_flower_rounds_equal_the_in_process_engine(tmp_path):
    arrays = digits_partition(tmp_path / "feature_shift.npz")
    cfg = RunConfig(algorithm="fedbn", seed=1, rounds=2, local_steps=3, batch_size=8, lr=0.05, momentum=0.9,
                    weight_decay=5e-4, model={"kind": "cnn", "image_size": 8, "num_classes": 10, "width": 4, "embedding_dim": 8})
    out = flower_app.run(cfg, {"file": str(tmp_path / "feature_shift.npz"), "size": 20}, num_clients=2)
    assert len(out["upload_bytes"]) == 2 and all(b > 0 for b in out["upload_bytes"])
    flower_global = out["global"]["net"]
    assert not any(k.startswith("bn") for k in flower_global)  # FedBN: norm layers never left the nodes

    clients = feature_shift_clients(arrays, 20, cfg.seed, "val", tmp_path / "feature_shift.npz")
    sim = simulate(clients, cfg)
    for k in range(2):
        mine = unstack(sim["states"]["net"], 2)[k]
        for name, value in flower_global.items():
            assert torch.allclose(value.float(), mine[name].float(), atol=1e-4), (k, name)


def test_one_fraug_round_in_flower_aggregates_the_generator_and_never_sends_rtnet(tmp_path):
    """FRAug through Flower: the generator is averaged by the server like the network, the RTNet
    stays on its node (never in an upload), and the round equals the in-process engine's."""
    from embedlab.methods.federated.params import FRAugParams

    arrays = digits_partition(tmp_path / "feature_shift.npz")
    fraug = FRAugParams().model_dump()  # the released form: synthetic embeddings from the first round
    cfg = RunConfig(algorithm="fraug", seed=2, rounds=1, local_steps=3, batch_size=8, lr=0.05, momentum=0.9,
                    weight_decay=5e-4, fraug=fraug,
                    model={"kind": "cnn", "image_size": 8, "num_classes": 10, "width": 4, "embedding_dim": 8})
    out = flower_app.run(cfg, {"file": str(tmp_path / "feature_shift.npz"), "size": 20}, num_clients=2)
    assert set(out["global"]) == {"net", "gen"}  # what the clients sent and the server merged
    assert out["global"]["gen"] and not any(k.startswith("bn") for k in out["global"]["net"])

    clients = feature_shift_clients(arrays, 20, cfg.seed, "val", tmp_path / "feature_shift.npz")
    sim = simulate(clients, cfg)
    assert "rtnet" in sim["states"]  # each client trained one; it was never part of an upload
    for part in ("net", "gen"):
        for k in range(2):
            mine = unstack(sim["states"][part], 2)[k]
            for name, value in out["global"][part].items():
                assert torch.allclose(value.float(), mine[name].float(), atol=1e-4), (part, k, name)
