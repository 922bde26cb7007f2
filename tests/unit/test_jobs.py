"""The shared job runner: order, dependencies, results, in-process and spawned."""

import os

import pytest

from embedlab.jobs import run_all, run_graph


def square_with_pid(x):
    return x * x, os.getpid()


def test_run_all_keeps_job_order_in_process_and_in_workers():
    assert [r[0] for r in run_all(square_with_pid, [(i,) for i in range(5)], workers=1)] == [0, 1, 4, 9, 16]
    spawned = run_all(square_with_pid, [(i,) for i in range(4)], workers=2)
    assert [r[0] for r in spawned] == [0, 1, 4, 9]
    assert all(pid != os.getpid() for _, pid in spawned)  # really other processes


def test_run_graph_starts_a_job_only_after_its_inputs_and_can_add_jobs():
    order = []

    def on_done(key, result):
        order.append(key)
        if key == "a":
            return {"c": ((3,), ["a", "b"])}

    out = run_graph(square_with_pid, {"a": (1,), "b": (2,)}, {"b": ["a"]}, workers=1, on_done=on_done)
    assert order == ["a", "b", "c"] and {k: v[0] for k, v in out.items()} == {"a": 1, "b": 4, "c": 9}
    with pytest.raises(ValueError, match="do not exist"):
        run_graph(square_with_pid, {"a": (1,)}, {"a": ["nope"]}, workers=1)


def draw_unseeded(draws: int):
    """A job that draws from the global generators before (or without) seeding itself."""
    import random

    import numpy as np
    import torch

    return [torch.rand(draws).tolist(), np.random.rand(draws).tolist(), [random.random() for _ in range(draws)]]


def test_every_job_starts_from_the_same_global_random_state_whatever_ran_before_it():
    # Different jobs, then the same job again: each sees the state a fresh job sees, in this
    # process (workers=1) and in spawned workers that have run other jobs first.
    jobs = [(3,), (5,), (3,), (1,), (3,)]
    alone = run_all(draw_unseeded, jobs, workers=1)
    pooled = run_all(draw_unseeded, jobs, workers=2)
    assert alone == pooled
    assert alone[0] == alone[2] == alone[4]
    assert alone[1][0][:3] == alone[0][0]  # the same stream, not merely equal by luck
