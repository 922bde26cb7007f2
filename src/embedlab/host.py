"""The host behind a result (CPU, ISA, library builds, threads, the numerics pins in effect):
written to models/<name>/host.json by every train stage and into metrics/<name>.json by every
evaluate stage, so that a difference between two machines can be explained. Plumbing: no stage
depends on this module."""

from __future__ import annotations

import os
import platform

from embedlab.numerics import PINS, native


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [flag for flag in wanted if flag in have]
    except OSError:
        pass
    return []


def host() -> dict:
    """What produced a result: CPU, ISA, library builds, threads and the pins in effect. Every
    value is a string, so `dvc metrics diff` (numbers only) never lists a host as a score."""
    import numpy
    import torch

    mkl = "absent"
    if torch.backends.mkl.is_available():
        mkl = str(getattr(torch.backends.mkl, "get_version_string", lambda: "present")())
    return {
        "cpu": _cpu_model(),
        "cpu_flags": " ".join(_cpu_flags()),
        "machine": platform.machine(),
        "cpu_count": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "mkl": mkl,
        "onednn": str(torch.backends.mkldnn.is_available()),
        "aten_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "threads": str(torch.get_num_threads()),
        "pins": "native" if native() else ",".join(f"{k}={os.environ.get(k, '')}" for k in PINS),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
