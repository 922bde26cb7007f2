"""Does another machine give the committed numbers? Every number in the workspace's
metrics/<model>.json against the same file at a git revision (the committed results), timings,
traces and hosts aside (the PR report's own rule, `embedlab.report.is_timing`), with the two
hosts named as each file records them and, from a time-stamped `dvc repro` log, each stage's
wall time on this host.

Run it after `dvc repro` on a fresh clone on the other machine:

    start=$(date +%s); dvc repro 2>&1 | while IFS= read -r l; do echo "$(( $(date +%s) - start )) $l"; done > repro.log
    .venv/bin/python benchmarks/cross_host.py --log repro.log   # -> benchmarks/results/cross_host.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

from embedlab.report import flat_metrics, is_timing

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "cross_host.json"
MODELS = ("evaluator", "backbone", "vq", "gan", "federated", "diffusion")


def numbers(document) -> dict:
    """The numbers of a metrics document by dotted path (lists by index), booleans aside."""
    return {k: v for k, v in flat_metrics(document).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def compare(model: str, rev: str) -> dict:
    path = f"metrics/{model}.json"
    committed = json.loads(subprocess.check_output(["git", "show", f"{rev}:{path}"], cwd=ROOT))
    here = json.loads((ROOT / path).read_text())
    old, new = numbers(committed), numbers(here)
    keys = [k for k in old if not is_timing(path, k)]
    differing = [[k, old[k], new.get(k)] for k in keys if new.get(k) != old[k]]
    hosts = {stage: committed.get("host", {}).get(stage, {}) for stage in ("train", "evaluate")}
    return {"values_compared": len(keys), "differing": len(differing), "first_differences": differing[:10],
            "committed_host": {s: {k: h.get(k) for k in ("cpu", "cpu_flags")} for s, h in hosts.items() if h},
            "this_host": {s: {k: h.get(k) for k in ("cpu", "cpu_flags")}
                          for s, h in here.get("host", {}).items()}}


def stage_seconds(log: Path) -> tuple[dict, int]:
    """({stage: seconds}, the whole run's seconds) from a log whose lines start with the seconds
    since `dvc repro` began."""
    marks, last = [], 0
    for line in log.read_text(errors="replace").splitlines():
        stamp = re.match(r"(\d+) ", line)
        if stamp:
            last = int(stamp.group(1))
        m = re.match(r"(\d+) (Running stage '([^']+)'|Updating lock file)", line)
        if m:
            marks.append((int(m.group(1)), m.group(3)))
    out = {}
    for (t, stage), (t_next, _) in zip(marks, marks[1:]):
        if stage:
            out[stage] = t_next - t
    return out, last


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rev", default="HEAD", help="the commit whose metrics are the committed results")
    parser.add_argument("--log", type=Path, help="a time-stamped dvc repro log (see the docstring)")
    parser.add_argument("--what", default="", help="what was run, in words")
    args = parser.parse_args()
    from embedlab.host import compare_fingerprint

    rev = subprocess.check_output(["git", "rev-parse", "--short", args.rev], cwd=ROOT, text=True).strip()
    models = {m: compare(m, args.rev) for m in MODELS}
    result = {"what": args.what, "command": "python benchmarks/cross_host.py" + (f" --log {args.log.name}" if args.log else ""),
              "committed_rev": rev, "kernels": compare_fingerprint(),
              "values_compared": sum(m["values_compared"] for m in models.values()),
              "differing": sum(m["differing"] for m in models.values()), "models": models}
    if args.log:
        result["stage_seconds_this_host"], result["repro_seconds_this_host"] = stage_seconds(args.log)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['differing']} of {result['values_compared']} values differ from {rev}; {result['kernels']}")
    return result


if __name__ == "__main__":
    main()
