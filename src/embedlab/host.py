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


def host_and_cache() -> dict:
    """`host()` and the CPU's cache size (oneDNN sizes its blocks by it): what pytest prints and
    benchmarks/results/kernels.json records."""
    return {**host(), "cache": _cpuinfo().get("cache size", "")}


def kernel_fingerprint() -> dict[str, str]:
    """A short hash of what each kind of CPU kernel the methods use computes, on fixed inputs.

    Two hosts whose fingerprints agree compute these kernels to the same bits; where they do not,
    the differing names say which kernel (oneDNN's convolutions, MKL's GEMM, ATen's reductions,
    numpy's linear algebra) to pin next. `tests/conftest.py` compares this host's with the one
    committed in `benchmarks/results/kernels.json` at the top of every test run; no stage reads
    it. Costs well under a second."""
    import hashlib

    import numpy as np
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    def digest(*tensors) -> str:
        h = hashlib.sha256()
        for t in tensors:
            h.update(np.ascontiguousarray(t.detach().numpy() if isinstance(t, torch.Tensor) else t).tobytes())
        return h.hexdigest()[:12]

    def with_grads(fn, *shapes):
        inputs = [rand(*s).requires_grad_() for s in shapes]
        out = fn(*inputs)
        out.backward(rand(*out.shape))
        return digest(out, *(x.grad for x in inputs))

    out: dict[str, str] = {}
    out["randn"] = digest(rand(1000))
    out["matmul (MKL GEMM)"] = with_grads(lambda a, b: a @ b, (64, 200), (200, 96))
    out["bmm"] = with_grads(torch.bmm, (6, 33, 40), (6, 40, 17))
    out["linear"] = with_grads(F.linear, (50, 120), (70, 120), (70,))
    out["conv2d (oneDNN)"] = with_grads(lambda x, w: F.conv2d(x, w, padding=1), (8, 16, 16, 16), (32, 16, 3, 3))
    out["conv2d grouped"] = with_grads(lambda x, w: F.conv2d(x, w, padding=1, groups=4), (8, 16, 16, 16), (32, 4, 3, 3))
    out["conv_transpose2d"] = with_grads(lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1), (8, 16, 8, 8), (16, 8, 4, 4))
    out["conv_transpose2d grouped"] = with_grads(
        lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, groups=4), (8, 16, 8, 8), (16, 2, 4, 4))
    out["batch_norm (train)"] = with_grads(lambda x: F.batch_norm(x, None, None, training=True), (32, 24, 8, 8))
    out["group_norm"] = with_grads(lambda x: F.group_norm(x, 4), (8, 32, 8, 8))
    out["layer_norm"] = with_grads(lambda x: F.layer_norm(x, (96,)), (40, 96))
    out["softmax / log_softmax"] = with_grads(lambda x: F.log_softmax(x, 1) + F.softmax(x, 1), (40, 97))
    out["silu / gelu / tanh / exp"] = with_grads(lambda x: F.silu(x) + F.gelu(x) + torch.tanh(x) + torch.exp(x / 4), (4001,))
    out["sum / mean / var"] = digest(*(f(rand(100003)) for f in (torch.sum, torch.mean, torch.var)))
    out["cdist"] = with_grads(torch.cdist, (60, 31), (45, 31))
    a = np.random.default_rng(0).standard_normal((64, 64))
    cov = a @ a.T
    out["numpy dot / eigh / svd (BLAS, LAPACK)"] = digest(a @ a, np.linalg.eigh(cov)[0], np.linalg.svd(a, compute_uv=False))
    return out


def compare_fingerprint(committed_path: str = "benchmarks/results/kernels.json") -> str:
    """One line: does this host compute the kernels as the host that made the committed results?"""
    import json

    try:
        committed = json.load(open(committed_path, encoding="utf-8"))
    except (OSError, ValueError):
        return f"kernels: no {committed_path} to compare with"
    ours = kernel_fingerprint()
    differ = [name for name, value in committed["kernels"].items() if ours.get(name) != value]
    where = f"{committed['host']['cpu']}, cache {committed['host'].get('cache', '?')}"
    if not differ:
        return f"kernels: all {len(ours)} compute as on the committed results' host ({where})"
    return f"kernels: {len(differ)} of {len(ours)} differ from the committed results' host ({where}): " + ", ".join(differ)


if __name__ == "__main__":  # python -m embedlab.host > benchmarks/results/kernels.json
    import json

    print(json.dumps({"command": "python -m embedlab.host > benchmarks/results/kernels.json",
                      "host": host_and_cache(),
                      "kernels": kernel_fingerprint()}, indent=2))
