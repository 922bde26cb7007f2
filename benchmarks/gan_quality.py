"""Are the stacked-digit GAN's channels digit-like? Train dcgan / mee on the selection seed (100)
with variants of steps, lr, discriminator and generator width, and read 10,000 samples with the
*backbone*: the confident share of channels (top probability >= 0.9; real stacked train triples
read 0.989) and the confident modes covered at the min count the real ceiling gives (3).

    .venv/bin/python benchmarks/gan_quality.py stacked_weak:dcgan:2000:0.0002:8:16 ...

A spec is bench:arm:steps:lr:disc_width:gen_width (bench stacked_weak | stacked_full | digits).
Needs models/backbone and data/prepared. Results: benchmarks/results/gan_quality.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "gan_quality.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from embedlab.classifiers.nets import load_classifier
    from embedlab.data.prepare import read_prepared
    from embedlab.evaluation.samples import SampleScorer
    from embedlab.methods.gan.arms import sample
    from embedlab.methods.gan.method import run_job
    from embedlab.methods.gan.modes import score_stacked, stacked_ceiling
    from embedlab.methods.gan.parts import Job, restore_generator
    from embedlab.params import load_params, parse_params
    from embedlab.paths import Paths

    paths = Paths(REPO)
    base = load_params(REPO / "params.yaml").model_dump(by_alias=True)
    data = read_prepared(paths.prepared)
    x, y = (torch.as_tensor(a) for a in data.split("train"))
    backbone = load_classifier(paths.model_dir("backbone"))
    ceiling, min_count = stacked_ceiling(x, y, backbone, 10_000, 0, 0.9, 0.25)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results["real"] = {"confident_share": ceiling["confident_share"]["value"], "modes_covered": ceiling["modes_covered"],
                       "min_count": min_count}
    for spec in args.specs:
        bench, arm, steps, lr, disc, gen = spec.split(":")
        raw = json.loads(json.dumps(base))
        raw["gan"]["image"].update(steps=int(steps), lr=float(lr), weak_disc_width=int(disc), disc_width=int(disc),
                                   gen_width=int(gen))
        params = parse_params(raw)
        start = time.perf_counter()
        state, _ = run_job(Job(bench, arm, 100, 0.3 if arm == "mee" else None), params, x, y)
        generator = restore_generator(params, bench, int(x.shape[-1]), state)
        if bench == "digits":
            scores = SampleScorer(backbone, data, 0.9, 0).score(sample(generator, 1000, 100))
            row = {"confident_share": scores["confident_share"]["value"]}
        else:
            scores = score_stacked(sample(generator, 10_000, 100), backbone, 0.9, min_count)
            row = {"confident_share": scores["confident_share"]["value"], "modes_covered": scores["modes_covered"],
                   "modes_any": scores["modes_any"]}
        row["seconds"] = round(time.perf_counter() - start)
        results[spec] = row
        print(spec, row, flush=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
