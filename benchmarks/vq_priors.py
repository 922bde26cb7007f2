"""ResGen prior vs AR baseline over several seeds, on the pipeline's own tokenizer.

The pipeline trains each prior once (seed `vq.seed`); this retrains both priors with the
default params for each seed in --seeds (shifted copies, initialisation and batch order all
follow the seed), on the tokenizer in models/vq (so run `dvc repro train@vq` first), and
scores class-conditional samples with the evaluator exactly as `evaluate@vq` does.

    .venv/bin/python benchmarks/vq_priors.py [--seeds 0 1 2]     # ~8 min per seed on 2 cores

Writes benchmarks/results/vq_priors.json and prints a table: per seed and mean +- std of
fd and class_accuracy for both priors, and their training seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "vq_priors.json")
    args = parser.parse_args()

    import torch

    from embedlab.classifier import load_classifier
    from embedlab.data.prepare import read_prepared
    from embedlab.methods.vq import method
    from embedlab.params import load_params
    from embedlab.paths import Paths

    paths = Paths(REPO)
    base = load_params(REPO / "params.yaml")
    base = base.model_copy(update={"trainer": base.trainer.model_copy(update={"progress_bar": False})})
    data = read_prepared(paths.prepared)
    tokenizer, _, _, config = method.load_parts(paths.model_dir("vq"))
    evaluator = load_classifier(paths.model_dir("evaluator"))
    split = {s: tuple(torch.as_tensor(a) for a in data.split(s)) for s in ("train", "val")}
    test_x = torch.as_tensor(data.split("test")[0])
    k = int(data.meta["num_classes"])
    labels = torch.arange(k).repeat_interleave(base.vq.samples_per_class)

    rows = []
    for seed in args.seeds:
        params = base.model_copy(update={"vq": base.vq.model_copy(update={"seed": seed})})
        train, val = method.prior_data(tokenizer, params, split)
        _, resgen, ar = method.build_parts(config, codebooks=tokenizer.codebooks.detach().cpu())
        with tempfile.TemporaryDirectory() as scratch:
            for part, prior in (("resgen", resgen), ("ar", ar)):
                start = time.perf_counter()
                epochs = method.train_prior(prior, part, params, Paths(Path(scratch)), train, val)
                seconds = time.perf_counter() - start
                torch.manual_seed(seed)
                images = method.sample_images(tokenizer, prior.eval(), labels, params.vq.prior, part)
                row = {"seed": seed, "prior": part, "epochs": epochs, "train_seconds": round(seconds, 1),
                       **method.score_samples(images, labels, test_x, evaluator)}
                rows.append(row)
                print(json.dumps(row), flush=True)

    summary = {}
    for part in ("resgen", "ar"):
        mine = [r for r in rows if r["prior"] == part]
        summary[part] = {
            key: {"mean": round(statistics.mean(r[key] for r in mine), 3),
                  "std": round(statistics.stdev(r[key] for r in mine), 3) if len(mine) > 1 else 0.0}
            for key in ("fd", "class_accuracy", "train_seconds")
        }
    result = {"seeds": args.seeds, "tokenizer": "models/vq (the pipeline's)", "rows": rows, "summary": summary,
              "params": base.vq.prior.model_dump()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n| prior | fd (mean +- std) | class_accuracy | train s |\n| --- | --- | --- | --- |")
    for part, s in summary.items():
        print(f"| {part} | {s['fd']['mean']} +- {s['fd']['std']} | {s['class_accuracy']['mean']} +- "
              f"{s['class_accuracy']['std']} | {s['train_seconds']['mean']} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
