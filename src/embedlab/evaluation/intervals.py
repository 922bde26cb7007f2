"""The one format for a score with its 95% interval, and the intervals themselves.

A score in metrics/*.json is a dict ``{"value": v, "lo": a, "hi": b, "n": N}``: the point
estimate, its 95% interval and the number of samples behind it (``seeds`` too when it is a
mean over training seeds). ``dvc metrics diff`` flattens it to ``<key>.value``, ``<key>.lo``,
``<key>.hi``; the registry gate and the PR report read exactly these keys (`value_of`,
`interval_of`). Which interval a score carries is said once per metrics file, under
``intervals``, using the names in `METHODS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

METHODS = {
    "wilson": "Wilson score interval of a proportion (95%)",
    "bootstrap": "basic (reverse-percentile) bootstrap, 95%: both feature sets resampled with replacement; "
                 "the basic interval corrects the upward shift duplicates give the plug-in FD, and KID's "
                 "U-statistic leaves out pairs of one image with its own copy",
    "seeds": "mean over training seeds with a Student-t 95% interval (n - 1 degrees of freedom)",
    "paired": "paired differences over training seeds: mean with a Student-t 95% interval",
}


def _r(x: float, digits: int) -> float | None:
    return round(float(x), digits) if math.isfinite(x) else None


def score(value: float, lo: float, hi: float, n: int, digits: int = 4, **extra) -> dict:
    """The settled format: value, 95% interval [lo, hi], sample count n (and any extra keys)."""
    return {"value": _r(value, digits), "lo": _r(lo, digits), "hi": _r(hi, digits), "n": int(n), **extra}


def is_score(entry) -> bool:
    return isinstance(entry, dict) and {"value", "lo", "hi"} <= set(entry)


def value_of(entry) -> float:
    """The point value of a score, or the number itself."""
    return float(entry["value"]) if is_score(entry) else float(entry)


def interval_of(entry) -> tuple[float, float] | None:
    """(lo, hi) of a score; None for a plain number."""
    if is_score(entry) and entry["lo"] is not None and entry["hi"] is not None:
        return float(entry["lo"]), float(entry["hi"])
    return None


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of successes / n (good near 0 and 1, unlike the normal one)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(mask) -> dict:
    """A share (e.g. accuracy, confident share) with its Wilson interval."""
    mask = np.asarray(mask, dtype=bool).ravel()
    n, k = len(mask), int(mask.sum())
    if n == 0:
        raise ValueError("a proportion of zero samples has no value")
    lo, hi = wilson(k, n)
    return score(k / n, lo, hi, n)


def t_quantile(dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t 95% interval of the mean; one value gives an interval of nan."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = t_quantile(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return mean, mean - half, mean + half


def over_seeds(per_seed: Sequence[dict | float], digits: int = 4) -> dict:
    """Scores of one arm at several training seeds -> their mean with a t interval over seeds.
    One seed keeps that seed's own interval (say so: `seeds` = 1)."""
    values = [value_of(s) for s in per_seed]
    n = per_seed[0]["n"] if is_score(per_seed[0]) else len(values)
    if len(values) == 1 and is_score(per_seed[0]):
        return {**per_seed[0], "seeds": 1}
    mean, lo, hi = mean_interval(values)
    return score(mean, lo, hi, n, digits, seeds=len(values))
