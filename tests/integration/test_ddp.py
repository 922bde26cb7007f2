"""Several devices (issue 32): `embedlab train evaluator` as Lightning DDP over 2 CPU processes
(gloo) on tiny params, and vq's priors the same way. Each rank trains on its own shard of every
epoch (the shards themselves: tests/unit/test_devices.py), rank 0 alone writes, and the weights
load; a method that cannot use 2 devices refuses before any work."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import yaml

from .conftest import run, set_params

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two CPU processes need two cores (check_devices)")]


def test_the_evaluator_trains_as_ddp_on_two_cpu_processes_and_rank_zero_alone_writes(repo_copy):
    set_params(repo_copy, {"trainer": {"accelerator": "cpu", "devices": 2, "progress_bar": False},
                           "evaluator": {"max_epochs": 2, "patience": 2}})
    run(["embedlab", "prepare"], repo_copy)
    meta = json.loads((repo_copy / "data/prepared/meta.json").read_text())
    out = run(["embedlab", "train", "evaluator"], repo_copy)
    said = out.stdout + out.stderr
    assert said.count("trained evaluator ->") == 1, said[-3000:]  # rank 1 ends quietly

    model_dir = repo_copy / "models/evaluator"
    config = json.loads((model_dir / "config.json").read_text())
    from embedlab.data.prepare import read_prepared

    train_rows = len(read_prepared(repo_copy / "data/prepared").split("train")[1])
    batch = yaml.safe_load((repo_copy / "params.yaml").read_text())["evaluator"]["batch_size"]
    assert config["ddp"] == {"world_size": 2, "samples_per_rank": math.ceil(train_rows / 2),
                             "batches_per_rank": math.ceil(math.ceil(train_rows / 2) / batch)}
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "host.json", "model.safetensors"]
    assert not (repo_copy / ".embedlab/resume/evaluator").exists()

    from embedlab.classifiers.nets import load_classifier

    net = load_classifier(model_dir).eval()
    x = torch.zeros(2, 1, meta["image_size"], meta["image_size"])
    assert net(x).shape == (2, meta["num_classes"])

    # One DVCLive run: each validation logged once (one row per step), not once per rank.
    rows = (repo_copy / "dvclive/evaluator/plots/metrics/val/acc.tsv").read_text().strip().splitlines()[1:]
    steps = [r.split("\t")[0] for r in rows]
    assert rows and len(steps) == len(set(steps)), rows

    refused = run(["embedlab", "train", "federated"], repo_copy, check=False)
    assert refused.returncode == 2
    assert "trainer.devices: 2" in refused.stderr and "federated trains on one device" in refused.stderr



def test_the_methods_train_as_ddp_on_two_cpu_processes_and_rank_zero_alone_writes(repo_copy):
    """Each vq prior, each diffusion expert and each GAN stack is one DDP fit: both ranks run the
    same fits in one order, each on its own shard (vq: the ShardedBatches the evaluator uses;
    diffusion: its slice of every step's draws; GAN: rank 1's own streams), and rank 0 writes what
    loads; diffusion's sweeps run on rank 0. The GAN checks after every fit that the replicas agree."""
    run(["embedlab", "prepare"], repo_copy)
    for given in ("tokenizer", "ddpm"):  # the given networks train on one device
        run(["embedlab", "pretrain", given], repo_copy)
    # The GAN at its smallest: one toy seed, one tuning value per arm (fewer stacks, each a fit).
    set_params(repo_copy, {"gan": {"toy": {"seeds": [0]}, "tuning": {arm: {"values": [1.0]} for arm in (
        "dcgan", "maf", "maf+disomap", "maf+disomap+dlle", "mee")}}})
    run(["embedlab", "train", "gan"], repo_copy)  # one device first: what DDP's rank 1 must change
    one_device = {p.name: p.read_bytes() for p in (repo_copy / "models/gan/generators").iterdir()}
    set_params(repo_copy, {"trainer": {"accelerator": "cpu", "devices": 2, "progress_bar": False},
                           "vq": {"seeds": [0]}, "diffusion": {"seeds": [0]}})
    out = run(["embedlab", "train", "vq"], repo_copy)
    said = out.stdout + out.stderr
    assert said.count("trained vq ->") == 1, said[-3000:]  # rank 1 ends quietly

    model_dir = repo_copy / "models/vq"
    summary = json.loads((model_dir / "train.json").read_text())
    assert summary["ddp"] == {"world_size": 2} and set(summary["runs"]["0"]) == {"ar", "resgen"}
    assert sorted(p.name for p in (model_dir / "seed0").iterdir() if p.is_file()) == \
        ["ar.safetensors", "config.json", "resgen.safetensors"]  # no token files left behind
    assert not (repo_copy / ".embedlab/resume/vq").exists()

    from embedlab.data.prepare import read_prepared

    prior = yaml.safe_load((repo_copy / "params.yaml").read_text())["vq"]["prior"]
    sequences = len(read_prepared(repo_copy / "data/prepared").split("train")[1]) * (1 + prior["augment_copies"])
    for fit in summary["runs"]["0"].values():  # each rank half of every epoch's token sequences
        assert fit["epochs"] >= 1 and fit["best_val_loss"] is not None
        assert fit["ddp"] == {"world_size": 2, "samples_per_rank": math.ceil(sequences / 2),
                              "batches_per_rank": math.ceil(math.ceil(sequences / 2) / prior["batch_size"])}

    from embedlab.methods.vq.given import load_tokenizer
    from embedlab.methods.vq.parts import load_priors

    tokenizer, _ = load_tokenizer(repo_copy / "models/tokenizer", "cpu")
    resgen, ar, _ = load_priors(model_dir / "seed0", tokenizer)
    assert resgen.training is False and ar.training is False

    out = run(["embedlab", "train", "diffusion"], repo_copy)
    said = out.stdout + out.stderr
    assert said.count("trained diffusion ->") == 1, said[-3000:]
    train = json.loads((repo_copy / "models/diffusion/train.json").read_text())
    diffusion = yaml.safe_load((repo_copy / "params.yaml").read_text())["diffusion"]
    assert train["ddp"] == {"world_size": 2, "batch_per_rank": diffusion["ppap"]["batch_size"]}
    assert set(train["scales"]["0"]) >= {"naive", "ppap", "supervised"}  # rank 0's sweeps
    seed = repo_copy / "models/diffusion/seed0"
    assert {"experts.safetensors", "supervised.safetensors"} <= {p.name for p in seed.iterdir()}
    assert not list(seed.glob("expert_*.safetensors")) and not (repo_copy / ".embedlab/resume/diffusion").exists()

    from embedlab.io import load_tensors

    experts = load_tensors(seed / "experts.safetensors")
    assert len(experts) == diffusion["ppap"]["experts"] and all(experts)

    out = run(["embedlab", "train", "gan"], repo_copy)
    said = out.stdout + out.stderr
    assert said.count("trained gan ->") == 1, said[-3000:]
    config = json.loads((repo_copy / "models/gan/config.json").read_text())
    assert config["ddp"] == {"world_size": 2} and config["workers"] == 1
    ddp = {p.name: p.read_bytes() for p in (repo_copy / "models/gan/generators").iterdir()}
    assert set(ddp) == set(one_device) == {j["weights"].split("/")[-1] for j in config["jobs"]}
    # rank 1 drew its own batches: every generator moved off its one-device twin
    assert all(ddp[name] != one_device[name] for name in ddp)
    assert not (repo_copy / ".embedlab/resume/gan").exists()
