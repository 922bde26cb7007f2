"""The 2-D mixtures with longer training: does mee separate from maf when the runs converge?

The pipeline gives each 2-D run 1,500 generator updates (its 12-minute budget). There, runs
either find every mode or end far from the modes, and the seed spread hides any gap between
arms. This retrains dcgan, maf and mee on the ring and the grid with `--scale` x the
pipeline's steps (the sigma ramp scales with them), the pipeline's seeds and the values
train@gan's tuning chose for each arm and mixture (read from models/gan/config.json: run
`dvc repro train@gan` first). It scores them exactly as evaluate@gan does (modes with at least
the min count the real ceiling gives).

    .venv/bin/python benchmarks/gan_toy_longer.py [--scale 4]     # ~10 min on 2 cores

Writes benchmarks/results/gan_toy_longer.json and prints modes covered and high quality per
seed, with mean +- std, beside the pipeline's numbers from metrics/gan.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=4.0, help="multiple of gan.toy.steps")
    parser.add_argument("--arms", nargs="+", default=["dcgan", "maf", "mee"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gan_toy_longer.json")
    args = parser.parse_args()

    import torch

    from embedlab.jobs import Pool
    from embedlab.methods.gan.arms import sample
    from embedlab.methods.gan.method import _stack, stacks_of
    from embedlab.methods.gan.modes import score_toy, toy_ceiling
    from embedlab.methods.gan.parts import TOY, Job, mixture, restore_generator
    from embedlab.params import load_params, parse_params
    from embedlab.paths import Paths

    paths = Paths(REPO)
    base = load_params(REPO / "params.yaml")
    raw = base.model_dump(by_alias=True)
    steps = int(base.gan.toy.steps * args.scale)
    raw["gan"]["toy"]["steps"] = steps
    params = parse_params(raw)
    chosen = json.loads((paths.model_dir("gan") / "config.json").read_text())["tuning"]["chosen"]
    if not all(f"{b}/{a}" in chosen for b in TOY for a in args.arms):
        raise SystemExit("models/gan has no tuning on ring and grid: train@gan ran with gan.toy.run false (the CPU "
                         "default). Set gan.toy.run: true (or `embedlab preset paper`), `dvc repro train@gan`, then rerun.")
    pipeline = json.loads(paths.metrics("gan").read_text())["per_seed"]
    e = params.evaluation
    min_count = {b: toy_ceiling(*mixture(params, b), params.gan.toy.eval_samples, e.seed, e.mode_min_fraction)[1]
                 for b in TOY}

    jobs = [Job(bench, arm, seed, chosen[f"{bench}/{arm}"]["value"]) for bench in TOY for arm in args.arms
            for seed in params.gan.toy.seeds]
    pool = Pool(params.gan.workers)
    args_ = (raw, torch.zeros(1, 1, 16, 16).numpy(), torch.zeros(1, dtype=torch.long).numpy())
    start = time.perf_counter()
    futures = [(group, pool.submit(_stack, group, *args_)) for group in stacks_of(jobs, "cpu")]
    results: dict = {b: {a: {"modes_covered": [], "high_quality": [], "seconds": []} for a in args.arms} for b in TOY}
    try:
        done = [(job, out) for group, future in futures for job, out in zip(group, future.result())]
        for job, (state, history) in done:
            gen = restore_generator(params, job.bench, 16, state)
            centres, std = mixture(params, job.bench)
            scores = score_toy(sample(gen, params.gan.toy.eval_samples, job.seed), centres, std, min_count[job.bench])
            scores["high_quality"] = scores["high_quality"]["value"]
            row = results[job.bench][job.arm]
            row["modes_covered"].append(scores["modes_covered"])
            row["high_quality"].append(scores["high_quality"])
            row["seconds"].append(history["seconds"])
            print(f"{job.bench} {job.arm} seed {job.seed}: {scores['modes_covered']} modes, "
                  f"high quality {scores['high_quality']:.3f}, {history['seconds']:.1f} s", flush=True)
    finally:
        pool.close()

    def summary(values):
        return {"mean": round(statistics.mean(values), 4), "std": round(statistics.pstdev(values), 4)}

    report = {
        "steps": steps, "pipeline_steps": base.gan.toy.steps, "seeds": params.gan.toy.seeds, "chosen": chosen,
        "min_count": min_count,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "results": {b: {a: {**r, **{f"{k}_summary": summary(r[k]) for k in ("modes_covered", "high_quality")}}
                        for a, r in arms.items()} for b, arms in results.items()},
        "pipeline": {b: {a: {k: [run[k] for run in pipeline[b][a]] for k in ("modes_covered", "high_quality")}
                         for a in args.arms} for b in TOY},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\n{steps} steps (pipeline: {base.gan.toy.steps}); mean +- std over seeds {params.gan.toy.seeds}")
    for bench in TOY:
        for arm in args.arms:
            r = report["results"][bench][arm]
            p = report["pipeline"][bench][arm]
            print(f"{bench:5s} {arm:6s} modes {r['modes_covered']} = {r['modes_covered_summary']['mean']:.1f} "
                  f"+- {r['modes_covered_summary']['std']:.1f} (pipeline {p['modes_covered']}); "
                  f"high quality {r['high_quality_summary']['mean']:.3f} (pipeline {statistics.mean(p['high_quality']):.3f})")


if __name__ == "__main__":
    main()
