"""The gate: champion or challenger, by the primary metric and its 95% interval against the
current champion's (`registry.min_delta`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedlab.evaluation.intervals import interval_of, is_score
from embedlab.registry.store import CHALLENGER, CHAMPION, MLFLOW_KEY, RegistryError, flatten

if TYPE_CHECKING:
    pass


def numeric_metrics(metrics: dict) -> dict[str, float]:
    flat = {}
    for key, value in flatten(metrics).items():
        if isinstance(value, (int, float)):  # bools too: a passed check logs as 1.0
            flat[MLFLOW_KEY.sub("_", key)] = float(value)
    return flat


def current_champion(client, model: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model, CHAMPION)
    except MlflowException as exc:
        # No registered model yet, or no champion alias on it: both mean "no champion".
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def gate(value: float, champion_value: float | None, higher_is_better: bool, min_delta: float,
         interval: tuple[float, float] | None = None) -> str:
    """Champion only when the newcomer beats the champion by more than min_delta and, when its
    score carries a 95% interval, the champion's value lies outside that interval on the losing
    side: a gain inside the newcomer's own noise keeps the champion."""
    if champion_value is None:
        return CHAMPION
    gain = value - champion_value if higher_is_better else champion_value - value
    if gain <= min_delta:
        return CHALLENGER
    if interval is not None:
        lo, hi = interval
        beyond_noise = champion_value < lo if higher_is_better else champion_value > hi
        if not beyond_noise:
            return CHALLENGER
    return CHAMPION


def primary_score(metrics: dict, key: str) -> tuple[float, tuple[float, float] | None]:
    """(value, 95% interval or None) of the dotted `key` in a metrics tree: a plain number or a
    score in the settled format (evaluation.intervals)."""
    node: Any = metrics
    for part in [key] if key in metrics else key.split("."):
        if not isinstance(node, dict) or part not in node:
            flat = sorted(k for k, v in numeric_metrics(metrics).items())
            raise RegistryError(f"primary metric {key!r} is not in the metrics (numeric keys: {flat})")
        node = node[part]
    if is_score(node):
        if node["value"] is None:
            raise RegistryError(f"primary metric {key} has no value")
        return float(node["value"]), interval_of(node)
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise RegistryError(f"primary metric {key!r} is {type(node).__name__}, not a number or a score")
    return float(node), None
