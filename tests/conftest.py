"""Shared fixtures and skip helpers. Nothing here reaches the network."""

from __future__ import annotations

import os

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# An accidental Prefect engine call in a fast test must fail, not start a temporary server.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "false")

# First the numerics pins (embedlab.numerics), before numpy or torch load, as in every stage:
# a test process computes what the pipeline computes, whichever test module it imports first.
import embedlab  # noqa: F401, E402

# isort: split
import numpy as np  # noqa: E402
import pytest  # noqa: E402


class RunIf:
    """`@RunIf(gpu=True)` style skips, as in lightning-hydra-template."""

    def __new__(cls, gpu: bool = False):
        reasons = []
        if gpu:
            import torch

            if not torch.cuda.is_available():
                reasons.append("needs a CUDA device")
        return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons))


@pytest.fixture(scope="session")
def digits_raw():
    from embedlab.data.sources import load_digits_source

    return load_digits_source()


@pytest.fixture(scope="session")
def digits_prepared(digits_raw):
    from embedlab.data.prepare import prepare_dataset
    from embedlab.params import DataParams

    return prepare_dataset(digits_raw, DataParams())


def write_npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


# The order test files are handed to xdist workers (`make test` runs `--dist loadfile
# --no-loadscope-reorder`; a worker takes the next file when it has two tests or fewer left):
# the module that builds the shared tiny pipeline first, the Prefect server's next, then the
# fast unit files, then the modules that clone the pipeline (built by the time a worker gets
# there), and last the unit files from test_v* on, which fill the gaps at the end. The order
# only balances the two workers; the file lock in tests/integration/conftest.py keeps any order
# correct.
FIRST = ("tests/integration/test_pipeline.py", "tests/integration/test_prefect.py")
CLONERS = ("tests/integration/test_pipeline_team.py", "tests/integration/test_pipeline_rerun.py",
           "tests/integration/test_add_a_method.py")
FILLERS_FROM = "tests/unit/test_v"


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        if path in FIRST:
            return FIRST.index(path)
        if path in CLONERS:
            return 3 + CLONERS.index(path)
        return 2 if path < FILLERS_FROM else 6

    items.sort(key=rank)  # stable: the order within a file is kept


def pytest_report_header(config):
    """The host at the top of every run (CPU, its caches, ISA, library builds, the numerics pins):
    a tolerance that holds on one machine and not on CI's can then be traced to the machine. The
    same two lines close the run (`pytest_terminal_summary`), where a log's tail shows them."""
    from embedlab.host import compare_fingerprint, host_and_cache

    facts = host_and_cache()
    config._embedlab_host = ["host: " + "; ".join(f"{k}={v}" for k, v in facts.items() if k != "pins"),
                             compare_fingerprint()]
    return config._embedlab_host


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = getattr(config, "_embedlab_host", None)
    if lines:
        terminalreporter.section("host")
        for line in lines:
            terminalreporter.write_line(line)
