"""The same numbers on every x86-64 machine: CPU kernels pinned to one instruction set and one
thread, and the host written beside every result so that a difference can be explained.

Two runs on one machine already agree to the last digit; two machines need not. The libraries
under torch choose their kernels by the CPU they find, and kernels of different vector widths
add in different orders: ATen's own vectorised loops (AVX2: 8 floats, AVX-512: 16), oneDNN's
convolutions (AVX2, AVX-512, AMX) and MKL's GEMM (which also branches on the CPU's vendor).
So every stage process pins, before torch loads a kernel:

- ATen to its AVX2 kernels (`ATEN_CPU_CAPABILITY`),
- oneDNN to AVX2 (`ONEDNN_MAX_CPU_ISA`),
- MKL to its strict AVX2 code path (`MKL_CBWR`, conditional numerical reproducibility),
- numpy's OpenBLAS (the Fréchet distances, bootstraps) to its Haswell (AVX2) kernels,
- one intra-op thread (a parallel reduction splits by thread count): every CPU job here is a
  one-thread worker already (embedlab.jobs), so in-process and pooled runs agree too.

AVX2 is the widest set every x86-64 machine of this project's kind has (AMD EPYC and Intel
Xeon alike). The cost of the pins, measured side by side: benchmarks/numerics_pins.py. A value
already in the environment wins (`EMBEDLAB_NATIVE_KERNELS=1` drops the pins altogether), and
embedlab.host records what was in effect beside every result. A GPU's float order is not pinned (docs/evaluation.md).
"""

from __future__ import annotations

import os

PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",  # oneDNN's older name for the same switch
    "MKL_CBWR": "AVX2,STRICT",
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's OpenBLAS (the evaluation's linear algebra): its AVX2 kernels
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}


def native() -> bool:
    return os.environ.get("EMBEDLAB_NATIVE_KERNELS", "") not in ("", "0")


def pin_environment() -> None:
    """Set the pins in this process's environment (spawned workers inherit it). Must run before
    torch is imported: MKL and oneDNN read their switches once, when they load."""
    if native():
        return
    for key, value in PINS.items():
        os.environ.setdefault(key, value)


def pin_threads() -> None:
    """One intra-op thread for CPU work (after torch is imported)."""
    if native():
        return
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
