"""How well the FD / KID intervals of `evaluation.distances` cover the truth.

Gaussian feature sets with a known FD (d * shift^2; 0 for one distribution), at the sizes the
pipeline scores (538 reference images against 1,000 generated ones) and a small case. For
each setting: the mean plug-in FD, the mean bias-corrected value and interval, and how often
the interval covers the true FD (and, for one distribution, how often KID's covers 0).

    .venv/bin/python benchmarks/distance_intervals.py    # -> benchmarks/results/distance_intervals.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from embedlab.evaluation.distances import distance_scores

OUT = Path(__file__).parent / "results" / "distance_intervals.json"
SETTINGS = [(8, 400, 400, 0.0, 40), (8, 400, 400, 0.5, 40), (64, 538, 1000, 0.0, 20), (64, 538, 1000, 0.3, 20),
            (128, 538, 1000, 0.0, 10)]


def run(d: int, na: int, nb: int, shift: float, reps: int, bootstrap: int = 200) -> dict:
    true_fd = d * shift**2
    rows = []
    for r in range(reps):
        g = torch.Generator().manual_seed(1000 + r)
        a = torch.randn(na, d, generator=g, dtype=torch.float64)
        b = torch.randn(nb, d, generator=g, dtype=torch.float64) + shift
        s = distance_scores(a, b, bootstrap, seed=r)
        rows.append([s["fd"]["plugin"], s["fd"]["value"], s["fd"]["lo"], s["fd"]["hi"], s["kid"]["lo"], s["kid"]["hi"]])
    v = np.array(rows)
    out = {"d": d, "reference": na, "generated": nb, "shift": shift, "true_fd": true_fd, "repeats": reps,
           "bootstrap": bootstrap, "mean_plugin_fd": round(float(v[:, 0].mean()), 3),
           "mean_fd": round(float(v[:, 1].mean()), 3), "mean_interval": [round(float(v[:, 2].mean()), 3),
                                                                       round(float(v[:, 3].mean()), 3)],
           "fd_coverage": round(float(((v[:, 2] <= true_fd) & (true_fd <= v[:, 3])).mean()), 3)}
    if shift == 0:
        out["kid_coverage_of_zero"] = round(float(((v[:, 4] <= 0) & (0 <= v[:, 5])).mean()), 3)
    return out


def main() -> None:
    torch.set_num_threads(1)
    results = [run(*s) for s in SETTINGS]
    for r in results:
        print(r)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"settings": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
