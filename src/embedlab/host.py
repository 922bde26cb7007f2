"""The host behind a result (CPU, ISA, library builds, threads, the numerics pins in effect):
written to models/<name>/host.json by every train stage and into metrics/<name>.json by every
evaluate stage, so that a difference between two machines can be explained. Plumbing: no stage
depends on this module."""

from __future__ import annotations

import os
import platform

from embedlab.numerics import PINS, native


def _cpuinfo() -> dict[str, str]:
    """The first value of each field of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def _cpu_flags(flags: str) -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
    have = set(flags.split())
    return [flag for flag in wanted if flag in have]


def host() -> dict:
    """What produced a result: CPU, ISA, library builds, threads and the pins in effect. Every
    value is a string, so `dvc metrics diff` (numbers only) never lists a host as a score."""
    import numpy
    import torch

    cpu = _cpuinfo()
    mkl = "absent"
    if torch.backends.mkl.is_available():
        mkl = str(getattr(torch.backends.mkl, "get_version_string", lambda: "present")())
    return {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_flags": " ".join(_cpu_flags(cpu.get("flags", ""))),
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
