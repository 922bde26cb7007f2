"""Job-level resume (embedlab.jobstore): finished jobs are kept, with the files they wrote, and a
rerun with the same key takes them instead of running them again; anything else starts fresh."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from embedlab.jobs import run_graph
from embedlab.jobstore import JobStore, ResumeError, tree_digest


def write_and_square(root: str, key: str, x: int, fail_on: str | None = None):
    """A job that writes a file in the stage's outs and logs that it ran."""
    if key == fail_on:
        raise RuntimeError("killed")
    with open(Path(root) / "ran.log", "a") as log:
        log.write(key + "\n")
    out = Path(root) / "models" / f"{key}.bin"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes([x]) * 3)
    return {"square": np.float64(x * x), "weights": torch.full((2,), float(x)), "curve": [x, (x, None)]}


def graph(root: Path, store: JobStore, fail_on: str | None = None) -> dict:
    jobs = {k: (str(root), k, x, fail_on) for k, x in (("a", 1), ("b", 2), ("c", 3))}
    return run_graph(write_and_square, jobs, {"c": ["a", "b"]}, workers=1, store=store,
                     files=lambda key, _: [root / "models" / f"{key}.bin"])


def test_a_rerun_takes_finished_jobs_and_their_files_from_the_store_and_runs_the_rest(tmp_path):
    said: list[str] = []
    with pytest.raises(RuntimeError, match="killed"):
        graph(tmp_path, JobStore(tmp_path, "m", {"p": 1}, said.append), fail_on="c")
    assert (tmp_path / "ran.log").read_text().split() == ["a", "b"]
    for f in (tmp_path / "models").iterdir():  # dvc repro deletes the stage's outs before the rerun
        f.unlink()

    store = JobStore(tmp_path, "m", {"p": 1}, said.append)
    out = graph(tmp_path, store)
    assert said == [f"resuming m: 2 finished job(s) kept in {store.dir} are not run again"]
    assert (tmp_path / "ran.log").read_text().split() == ["a", "b", "c"]  # a and b not again
    assert sorted(store.reused) == ["a", "b"]
    assert (tmp_path / "models/a.bin").read_bytes() == b"\x01\x01\x01"  # written back
    assert out["a"]["square"] == 1.0 and type(out["a"]["square"]) is float
    assert torch.equal(out["b"]["weights"], torch.full((2,), 2.0)) and out["b"]["curve"] == [2, (2, None)]
    assert out["c"]["square"] == 9.0
    store.done()
    assert not (tmp_path / ".embedlab/resume/m").exists()


def test_a_store_of_other_params_is_set_aside_and_the_stage_starts_fresh(tmp_path):
    graph(tmp_path, JobStore(tmp_path, "m", {"p": 1}, print))
    said: list[str] = []
    store = JobStore(tmp_path, "m", {"p": 2}, said.append)
    assert said and "kept from a run with other params, data or code: starting m fresh" in said[0]
    assert store.get("a") == (False, None)
    graph(tmp_path, store)
    assert (tmp_path / "ran.log").read_text().split() == ["a", "b", "c"] * 2


def test_an_unreadable_or_foreign_job_file_is_refused_never_unpickled(tmp_path):
    store = JobStore(tmp_path, "m", {"p": 1}, print)
    graph(tmp_path, store)
    kept = store._file("a")
    good = kept.read_bytes()
    kept.write_bytes(good[: len(good) // 2])
    with pytest.raises(ResumeError, match=rf"{kept.name}: not a readable job result.*delete"):
        JobStore(tmp_path, "m", {"p": 1}, print).get("a")

    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"job": "a", "result": Boom(), "files": {}}, kept)  # would run code if unpickled
    with pytest.raises(ResumeError, match="not a readable job result"):
        JobStore(tmp_path, "m", {"p": 1}, print).get("a")
    assert not (tmp_path / "pwned").exists()
    kept.write_bytes(pickle.dumps("x"))
    with pytest.raises(ResumeError):
        JobStore(tmp_path, "m", {"p": 1}, print).get("a")


def test_a_result_that_would_not_load_back_is_refused_when_stored(tmp_path):
    store = JobStore(tmp_path, "m", {}, print)
    with pytest.raises(TypeError, match=r"job result k/arr: ndarray cannot be kept"):
        store.put("k", {"arr": np.zeros(3)})


def test_the_key_follows_every_file_it_reads(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/x.npy").write_bytes(b"1")
    before = tree_digest([tmp_path / "data"])
    (tmp_path / "data/x.npy").write_bytes(b"2")
    assert tree_digest([tmp_path / "data"]) != before
    (tmp_path / "data/x.npy").write_bytes(b"1")
    assert tree_digest([tmp_path / "data"]) == before
