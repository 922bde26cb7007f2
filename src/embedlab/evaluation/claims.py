"""Verdicts on a paper's claim from paired per-seed scores of two arms.

Each seed trains both arms (the seed varies training, not only sampling), so the differences
d_s = a_s - b_s are paired; their mean gets a Student-t 95% interval over seeds. With d
oriented so that positive favours the claim ("a better than b"):

- kind "superior" (a beats b): first equivalence, then direction. Refuted when the interval
  lies inside the equivalence margin (-margin, +margin): whatever its sign, the effect is
  smaller than the claim's own margin of what matters. Otherwise reproduced when the interval
  lies above 0, refuted when it lies below 0, inconclusive when it straddles 0.
- kind "noninferior" (a is no worse than b by more than margin): reproduced when the interval
  lies above -margin; refuted when it lies below -margin; inconclusive otherwise.
- Fewer than two finite per-seed differences, or any non-finite one (a diverged seed: dropping
  it would let the verdict rest on fewer seeds than were run), is "inconclusive"; `n` counts
  the finite differences and `nonfinite` the others.
- A claim whose precondition fails (the setting leaves the baseline nothing to fix) is
  "untested": whatever the interval says, it is no test of the claim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from embedlab.evaluation.intervals import mean_interval, value_of

VERDICTS = ("reproduced", "refuted", "inconclusive", "untested")


def precondition(description: str, value: float, threshold: float, higher_is_better: bool = True, *,
                 decided_on: str | None = None, test_value: float | None = None,
                 interval: tuple[float, float] | None = None, **extra) -> dict:
    """A stated check that the setting leaves room for the claim: value >= threshold (or <=).

    Preregistered: `value` is measured where the claim's test scores cannot reach it
    (`decided_on`: val, the selection seed, the backbone) and decides `met`. `test_value` is the
    same quantity on the test scores, reported beside it as a check and never as the gate.
    `interval` is the measurement's own 95% interval; `extra` carries its other numbers."""
    def rounded(x: float) -> float | None:
        return round(float(x), 4) if math.isfinite(x) else None

    if not math.isfinite(value):
        met = False
    else:
        met = value >= threshold if higher_is_better else value <= threshold
    out = {"description": description, "value": rounded(value), "threshold": threshold, "met": bool(met)}
    if decided_on is not None:
        out["decided_on"] = decided_on
    if test_value is not None:
        out["test_value"] = rounded(test_value)
    if interval is not None:
        out["interval"] = [rounded(x) for x in interval]
    return {**out, **extra}


def all_of(*checks: dict) -> dict:
    """Several preconditions of one claim: met when every one is."""
    return {"description": "; ".join(c["description"] for c in checks), "checks": list(checks),
            "met": all(c["met"] for c in checks)}


def verdict(a: Sequence, b: Sequence, *, claim: str, metric: str, arms: tuple[str, str],
            higher_is_better: bool = True, kind: str = "superior", margin: float = 0.0,
            seeds: Sequence[int] | None = None, requires: dict | None = None, digits: int = 4) -> dict:
    """The paired verdict of `claim` ("arms[0] vs arms[1] on metric") from per-seed values or scores."""
    if kind not in ("superior", "noninferior"):
        raise ValueError(f"claim kind {kind!r}: expected 'superior' or 'noninferior'")
    if len(a) != len(b):
        raise ValueError(f"{claim}: paired scores need one value per seed for both arms, got {len(a)} and {len(b)}")
    sign = 1.0 if higher_is_better else -1.0
    diffs = [sign * (value_of(x) - value_of(y)) for x, y in zip(a, b)]
    finite = [d for d in diffs if math.isfinite(d)]
    nonfinite = len(diffs) - len(finite)
    mean, lo, hi = mean_interval(finite)
    if nonfinite or len(finite) < 2 or not math.isfinite(lo):
        result = "inconclusive"
    elif kind == "superior":
        if margin > 0 and -margin < lo and hi < margin:
            result = "refuted"  # equivalent to no effect, by the claim's own margin
        elif lo > 0:
            result = "reproduced"
        elif hi < 0:
            result = "refuted"
        else:
            result = "inconclusive"
    else:
        result = "reproduced" if lo > -margin else "refuted" if hi < -margin else "inconclusive"
    if requires is not None and not requires["met"]:
        result = "untested"

    def r(x):
        return round(float(x), digits) if math.isfinite(x) else None

    out = {
        "claim": claim, "metric": metric, "a": arms[0], "b": arms[1], "kind": kind, "margin": margin,
        "higher_is_better": higher_is_better,
        "difference": {"value": r(mean), "lo": r(lo), "hi": r(hi), "n": len(finite)},
        "nonfinite": nonfinite,
        "per_seed": [r(d) for d in diffs],
        "wins": int(np.sum(np.asarray(finite) > 0)),
        "verdict": result,
    }
    if seeds is not None:
        out["seeds"] = list(seeds)
    if requires is not None:
        out["precondition"] = requires
    return out
