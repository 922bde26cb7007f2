"""PPAP against the supervised multi-experts at three expert budgets (issue 28: how far the CPU
default may cut train@diffusion).

Nothing is trained here: each row is `metrics/diffusion.json` as the pipeline wrote it at a
commit, read from git, plus the working tree's (the current default). The rows differ in the
experts' budget (`diffusion.ppap.steps` and `batch_size`; the supervised experts take the same);
the first also in N (1,000) and the sweep (20 per class), both shown; the given DDPM, the scale
grid and the training seeds (0, 1, 2) are the same in all. The backbone (the experts' teacher
and the naive arm) is the same in the two commits' rows; the working tree's was retrained on
today's code (issue 28: the committed reference weights had to be what `dvc repro -f` makes).

    .venv/bin/python benchmarks/diffusion_budget.py        # a second; needs the git history

Writes benchmarks/results/diffusion_budget.json (rendered into docs/pipeline.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# (commit, what it was): the commits whose metrics/diffusion.json each budget made.
COMMITS = [("07b2584", "the paper preset's budget (the CPU default until issue 28)"),
           ("32098d8", "a third of it (issue 28's first cut)")]


def at(commit: str | None, path: str) -> str:
    if commit is None:
        return (REPO / path).read_text()
    return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout


def row(commit: str | None, what: str) -> dict:
    m = json.loads(at(commit, "metrics/diffusion.json"))
    p = yaml.safe_load(at(commit, "params.yaml"))["diffusion"]
    claim = m["claims"]["ppap_vs_supervised"]
    fits = [v for k, v in m["wall_seconds"].items() if "/expert_" in k or "/supervised_" in k]
    return {"commit": commit or "this commit", "what": what, "steps": p["ppap"]["steps"],
            "batch_size": p["ppap"]["batch_size"],
            "compute_vs_paper": round(p["ppap"]["steps"] * p["ppap"]["batch_size"] / (600 * 128), 3),
            "n": m["n"], "sweep_per_class": p["sweep_per_class"],
            "ppap": m["guided_accuracy"]["ppap"], "supervised": m["guided_accuracy"]["supervised"],
            "difference": claim["difference"], "margin": claim["margin"], "verdict": claim["verdict"],
            "per_seed": claim["per_seed"], "seconds_per_fit": round(sum(fits) / len(fits), 1),
            "train_seconds": m["wall_seconds"]["train"]}


def main() -> None:
    rows = [row(c, w) for c, w in COMMITS] + [row(None, "the CPU default (params.yaml)")]
    out = REPO / "benchmarks" / "results" / "diffusion_budget.json"
    out.write_text(json.dumps({"claim": "ppap_vs_supervised", "rows": rows}, indent=1) + "\n")
    for r in rows:
        d = r["difference"]
        print(f"{r['steps']:>4} x {r['batch_size']:<4} {r['compute_vs_paper']:.2f}  {d['value']:+.4f} "
              f"[{d['lo']:+.4f}, {d['hi']:+.4f}]  {r['verdict']}")
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
