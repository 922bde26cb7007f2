"""What one generated-sample score costs: `evaluation.distances.distance_scores` (FD + KID, 500
bootstrap draws) against the implementation it replaced, side by side in one process, one thread,
on evaluator-sized features (D = 128; 538 reference images against 500 and 1,000 generated ones,
the sizes evaluate@diffusion and evaluate@vq score), with the largest difference in any reported
number.

The earlier implementation, kept here for the comparison:
- second moments as a batched product of weighted copies of x ((B, N, D) written per chunk);
- tr((S1 S2)^(1/2)) through a full eigendecomposition of S1 (its square root), then eigvalsh.

    .venv/bin/python benchmarks/distance_speed.py    # ~1 min -> benchmarks/results/distance_speed.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import embedlab.numerics as numerics

numerics.pin_environment()

import torch  # noqa: E402

from embedlab.evaluation import distances  # noqa: E402

OUT = Path(__file__).parent / "results" / "distance_speed.json"


def _moments_before(x, w, outer=None):
    total = w.sum(1, keepdim=True)
    mu = w @ x / total
    second = (w[:, :, None] * x).transpose(1, 2) @ x
    cov = (second - total[:, :, None] * mu[:, :, None] * mu[:, None, :]) / (total[:, :, None] - 1)
    return mu, cov


def _trace_sqrt_before(s1, s2):
    vals, vecs = torch.linalg.eigh(s1)
    root = vecs @ torch.diag_embed(vals.clamp_min(0).sqrt()) @ vecs.transpose(-1, -2)
    inner = root @ s2 @ root
    return torch.linalg.eigvalsh((inner + inner.transpose(-1, -2)) / 2).clamp_min(0).sqrt().sum(-1)


def timed(fn, repeats: int) -> tuple[float, dict]:
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def largest_difference(a: dict, b: dict) -> float:
    return max(abs(a[m][k] - b[m][k]) for m in ("fd", "kid") for k in ("value", "lo", "hi"))


def main(repeats: int = 3) -> dict:
    numerics.pin_threads()
    gen = torch.Generator().manual_seed(0)
    reference = torch.randn(538, 128, generator=gen, dtype=torch.float64).relu()
    rows = {}
    new = (distances._weighted_moments, distances._trace_sqrt_product)
    for n in (500, 1000):
        generated = (torch.randn(n, 128, generator=gen, dtype=torch.float64) + 0.1).relu()

        def score(generated=generated):
            return distances.distance_scores(reference, generated, bootstrap=500, seed=0)

        t_new, out_new = timed(score, repeats)
        distances._weighted_moments, distances._trace_sqrt_product = _moments_before, _trace_sqrt_before
        try:
            t_old, out_old = timed(score, repeats)
        finally:
            distances._weighted_moments, distances._trace_sqrt_product = new
        rows[f"538 vs {n}"] = {"before_seconds": round(t_old, 3), "after_seconds": round(t_new, 3),
                               "speed_up": round(t_old / t_new, 2),
                               "largest_difference_in_a_reported_number": largest_difference(out_old, out_new)}
        print(f"538 vs {n}: before {t_old:.2f} s, after {t_new:.2f} s ({t_old / t_new:.2f}x)", flush=True)
    from embedlab.host import host

    result = {"command": "python benchmarks/distance_speed.py", "what": "one distance_scores call (FD + KID, "
              "500 bootstrap draws), D = 128, one thread, best of 3", "rows": rows, "host": host()}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
