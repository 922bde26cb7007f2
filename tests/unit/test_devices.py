"""Several devices (issue 32): the classifiers' DDP shards and the refusals before any work.
The 2-process run itself: tests/integration/test_ddp.py."""

from __future__ import annotations

import os

import pytest
import torch

from embedlab.batches import TensorBatches
from embedlab.params import ParamsError, parse_params
from embedlab.training import ShardedBatches, check_devices, is_global_zero


def epochs(batches, n: int) -> list[list[int]]:
    """The sample ids each epoch yields, in order."""
    return [[int(i) for b in batches for i in b[0]] for _ in range(n)]


@pytest.mark.parametrize("n,world,batch", [(20, 2, 4), (21, 2, 4), (23, 3, 5), (7, 4, 2)])
def test_ranks_take_disjoint_shards_that_cover_every_epoch_in_equal_batch_counts(n, world, batch):
    ids = torch.arange(n)
    shards = []
    for rank in range(world):
        b = ShardedBatches(ids, batch_size=batch, shuffle=True, seed=3)
        b.rank, b.world = rank, world
        shards.append(epochs(b, 3))
        assert len(list(iter(b))) == len(b)  # what Lightning is told is what it gets
    for epoch in range(3):
        seen = [s[epoch] for s in shards]
        assert len({len(s) for s in seen}) == 1  # every rank the same number of samples
        assert set().union(*map(set, seen)) == set(range(n))  # the epoch covered
        padding = sum(map(len, seen)) - n
        assert 0 <= padding < world
        overlap = sum(len(set(a) & set(b)) for i, a in enumerate(seen) for b in seen[i + 1:])
        assert overlap <= padding  # disjoint but for the padding
    assert shards[0][0] != shards[0][1]  # a new order each epoch


def test_one_rank_is_tensor_batches_order_and_all():
    ids = torch.arange(50)
    plain, sharded = TensorBatches(ids, batch_size=8, shuffle=True, seed=1), ShardedBatches(ids, batch_size=8, shuffle=True, seed=1)
    assert len(plain) == len(sharded)
    assert epochs(plain, 3) == epochs(sharded, 3)


def test_ranks_agree_on_the_order_they_split():
    ids = torch.arange(10)
    a, b = ShardedBatches(ids, batch_size=10, shuffle=True, seed=5), ShardedBatches(ids, batch_size=10, shuffle=True, seed=5)
    a.world = b.world = 2
    b.rank = 1
    order = torch.randperm(10, generator=torch.Generator().manual_seed(5 * 100_003)).tolist()
    assert epochs(a, 1)[0] == order[0::2] and epochs(b, 1)[0] == order[1::2]


def test_models_that_cannot_use_several_devices_say_so_before_any_work():
    params = parse_params({"trainer": {"accelerator": "cpu", "devices": 2}})
    for name in ("evaluator", "backbone", "vq", "diffusion", "gan"):
        check_devices(params.trainer, name)  # DDP
    for name in ("federated", "ddpm", "tokenizer"):
        with pytest.raises(ParamsError, match=rf"trainer\.devices: 2 .*{name} trains on one device.*Flower"):
            check_devices(params.trainer, name)
    nodes = parse_params({"trainer": {"accelerator": "cpu", "devices": 1, "num_nodes": 2}})
    with pytest.raises(ParamsError, match="trainer.num_nodes: 2"):
        check_devices(nodes.trainer, "federated")


def test_more_devices_than_there_are_is_refused_naming_the_key():
    cores = os.cpu_count() or 1
    cpu = parse_params({"trainer": {"accelerator": "cpu", "devices": cores + 1}})
    with pytest.raises(ParamsError, match=rf"trainer\.devices: {cores + 1} CPU processes, but this machine has {cores}"):
        check_devices(cpu.trainer, "evaluator")
    if not torch.cuda.is_available():
        gpu = parse_params({"trainer": {"accelerator": "gpu", "devices": 1}})
        with pytest.raises(ParamsError, match=r"trainer\.devices: 1, but 0 CUDA device\(s\) are visible"):
            check_devices(gpu.trainer, "evaluator")


def test_rank_zero_is_read_from_the_launchers_environment(monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert is_global_zero()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not is_global_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")
    assert not is_global_zero()


def test_diffusion_steps_give_each_rank_its_slice_of_every_step_and_equal_the_plain_stream_alone():
    from embedlab.methods.diffusion.method import ShardedSteps
    from embedlab.methods.diffusion.models import _Steps

    ids = torch.arange(50)
    alone = [b for (b,) in ShardedSteps(ids, batch_size=4, steps=6, seed=2)]
    assert all(torch.equal(a, b) for a, (b,) in zip(alone, _Steps(ids, batch_size=4, steps=6, seed=2)))
    ranks = []
    for rank in range(3):
        steps = ShardedSteps(ids, batch_size=4, steps=6, seed=2)
        steps.rank, steps.world = rank, 3
        ranks.append([b for (b,) in steps])
    gen = torch.Generator().manual_seed(2)
    for step in range(6):  # every step: one draw of 3 x 4 rows, rank r its r-th slice, the same step count
        drawn = torch.randint(50, (12,), generator=gen)
        assert torch.equal(torch.cat([r[step] for r in ranks]), drawn)
    assert all(len(r) == 6 for r in ranks)
