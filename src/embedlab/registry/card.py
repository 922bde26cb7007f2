"""The model card of a registered version: what it is, data, params, metrics with their
intervals, the claims' verdicts, the evaluator that read them, intended use and limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from embedlab.evaluation.intervals import is_score
from embedlab.methods.base import ModelBundle
from embedlab.paths import Paths
from embedlab.registry.store import CHAMPION, registered_name, version_by_alias

if TYPE_CHECKING:
    pass


def _score_text(node: Any) -> str:
    if is_score(node):
        lo, hi = node.get("lo"), node.get("hi")
        ci = f" [{lo:.6g}, {hi:.6g}]" if lo is not None and hi is not None else ""
        return f"{node['value']:.6g}{ci}" + (f" (n = {node['n']})" if node.get("n") is not None else "")
    return f"{node:.6g}" if isinstance(node, float) else str(node)


def model_card(name: str, bundle: ModelBundle, lineage: dict, value: float, interval, alias: str) -> str:
    """The markdown card of one registered version: what it is, data, params, metrics with their
    intervals, the claims' verdicts, the evaluator that read them, intended use and limits."""
    m = bundle.metrics
    ci = f" [{interval[0]:.6g}, {interval[1]:.6g}]" if interval is not None else ""
    lines = [f"# {registered_name(name)}", "", bundle.description or f"The `{name}` model of embedlab.", "",
             "## What it is",
             f"- registered program: a `torch.export` module (`registry.load_model(\"{name}\")`); "
             f"bundle files: {', '.join(sorted({Path(a).name for a in bundle.artifacts} | set(bundle.files))) or 'none'} "
             f"(`get_model(\"{name}\").load_bundle(registry.download_bundle(...))`)",
             f"- gated on `{bundle.primary_metric}` = {value:.6g}{ci} "
             f"({'higher' if bundle.higher_is_better else 'lower'} is better); alias at publish: `{alias}`",
             *([f"- quality floor: {bundle.quality['description']}: {bundle.quality['value']} against "
                f"{bundle.quality['threshold']}, **{'met' if bundle.quality['met'] else 'not met: never champion'}**"]
               if bundle.quality is not None else []),
             f"- git commit `{lineage['git_commit']}`", "",
             "## Data",
             f"- data hash `{lineage['data_hash']}` ({lineage['data_hash_source']})", ""]
    if bundle.params:
        lines += ["## Params", "", "```yaml", yaml.safe_dump(bundle.params, sort_keys=True).rstrip(), "```", ""]
    rows = []

    def walk(node: Any, prefix: str) -> None:
        if is_score(node) or isinstance(node, (int, float)) and not isinstance(node, bool):
            rows.append(f"| `{prefix}` | {_score_text(node)} |")
        elif isinstance(node, dict):
            for k, v in node.items():
                if k not in ("claims", "per_seed", "tuning", "training", "intervals", "evaluator", "weights"):
                    walk(v, f"{prefix}.{k}" if prefix else str(k))

    walk(m, "")
    if rows:
        lines += ["## Metrics (95% intervals where the pipeline has one)", "", "| metric | value |", "| --- | --- |",
                  *rows[:60], *(["| ... | see metrics/" + name + ".json |"] if len(rows) > 60 else []), ""]
    claims = m.get("claims") or {}
    if claims:
        lines += ["## Claims", "", "| claim | verdict | paired difference [95% CI] |", "| --- | --- | --- |"]
        for c in claims.values():
            d = c.get("difference", {})
            lines.append(f"| {c.get('claim', '')} | **{c.get('verdict', '')}** | {_score_text(d) if d else '-'} |")
        lines.append("")
    reader = m.get("evaluator") or m.get("weights")
    if reader:
        lines += ["## Read by", f"- evaluator weights sha256 `{reader.get('sha256', 'unknown')}`"
                  f"{' (' + reader['file'] + ')' if reader.get('file') else ''}", ""]
    lines += ["## Intended use", bundle.intended_use or "Research and teaching on small images; not for decisions "
              "about people.", "", "## Known limits", bundle.limits or "Trained and scored on the pipeline's data "
              "only; the scores above hold for that data, at the sample sizes stated.", ""]
    return "\n".join(lines)


def model_card_of(name: str, alias: str = CHAMPION, paths: Paths | None = None) -> str:
    """The model card of `embedlab-<name>@<alias>` (the version's description)."""
    _, _, _, found = version_by_alias(name, alias, paths)
    return found.description or ""
