"""Independent jobs (training seeds, parts, runs) on spawned CPU workers of one thread each, or
one by one in this process on a GPU (or with one worker).

Small models train fastest here as one process per core with one thread each (measured: two
processes of two threads ran 7x slower than two of one). Job functions must be importable
module-level functions taking picklable arguments (paths, dicts, numbers), never models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future


def worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def fresh(fn: Callable, *args):
    """fn(*args) from the same global random state, whatever ran before it in this process: a
    job that draws before seeding itself (a net built before its seed is set) then gets the same
    numbers in any worker, in any order, pooled or in-process. Without it such a job's draws
    depended on which jobs its worker had run before, that is on timing: the machine."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return fn(*args)


class Pool:
    """`submit(fn, *args)` -> Future, in `workers` spawned processes or in-process."""

    def __init__(self, workers: int, in_process: bool = False):
        self.executor = None
        if workers > 1 and not in_process:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self.executor = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=worker_init)

    def submit(self, fn: Callable, *args) -> Future:
        if self.executor is not None:
            return self.executor.submit(fresh, fn, *args)
        done: Future = Future()
        done.set_result(fresh(fn, *args))
        return done

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_all(fn: Callable, jobs: Sequence[tuple], workers: int, in_process: bool = False, bar=None) -> list:
    """fn(*job) for every job, results in job order; `bar` (tqdm) advances as each finishes."""
    with Pool(workers, in_process) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
        results = []
        for fut in futures:
            results.append(fut.result())
            if bar is not None:
                bar.update(1)
    return results


def run_graph(fn: Callable, jobs: dict, after: dict, workers: int, in_process: bool = False, bar=None,
              on_done: Callable | None = None, store=None, files: Callable | None = None) -> dict:
    """fn(*jobs[key]) for every key, each once all keys in after[key] have finished: a job starts
    as soon as its inputs exist, so no worker idles at a phase boundary. `on_done(key, result)`
    runs in this process as each finishes (and may return more jobs to add, {key: (args, after)}).
    `store` (an `embedlab.jobstore.JobStore`): a job it kept from a killed run of the same stage is
    taken from it, its files written back, instead of run again; each job that finishes here is
    kept in it with the files `files(key, result)` names (paths the job wrote). Returns {key: result}."""
    from concurrent.futures import FIRST_COMPLETED, wait

    jobs, after = dict(jobs), {k: set(after.get(k, ())) for k in jobs}
    results: dict = {}
    running: dict = {}

    def finish(key, result) -> None:
        results[key] = result
        if bar is not None:
            bar.update(1)
        if on_done is not None:
            for new_key, (args, deps) in (on_done(key, result) or {}).items():
                jobs[new_key], after[new_key] = args, set(deps)
                if bar is not None:
                    bar.total += 1

    def complete(key, result) -> None:
        if store is not None:
            store.put(key, result, files(key, result) if files is not None else ())
        finish(key, result)

    with Pool(workers, in_process) as pool:
        while len(results) < len(jobs):
            ready = [k for k in jobs if k not in results and k not in running.values() and after[k] <= set(results)]
            progressed = False
            for key in ready:
                found, result = store.get(key) if store is not None else (False, None)
                if found:
                    finish(key, result)
                    progressed = True
                    continue
                fut = pool.submit(fn, *jobs[key])
                if pool.executor is None:  # run here, now: kept before the next one starts
                    complete(key, fut.result())
                    progressed = True
                else:
                    running[fut] = key
            if progressed:
                continue  # a finished or kept job may have made others ready
            if not running:
                if len(results) == len(jobs):
                    break
                missing = {k: sorted(after[k] - set(jobs)) for k in jobs if after[k] - set(jobs)}
                raise ValueError(f"jobs wait on keys that do not exist: {missing}")
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                key = running.pop(fut)
                complete(key, fut.result())
    return results
