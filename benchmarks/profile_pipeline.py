"""Where the default pipeline's time goes (issue 16, step 1: a profile before any speed work).

1. Per stage and per job kind: the wall times the last `dvc repro` recorded in models/*/ and
   metrics/*.json (the pipeline's own clocks; nothing is rerun for this part).
2. For the three biggest job kinds, the share of a training step spent outside the arithmetic,
   measured side by side in this process on one thread (as a pipeline worker runs):
   - `lightning`: the stage's own Lightning fit (the project's Trainer factory), and
   - `plain`: a plain-PyTorch twin of the same step (training_step, backward, optimiser and
     scheduler step, the module's batch-end hook) on the same module class and batches;
   each timed at two step counts, so per-step time and fit start-up separate. Then the plain
   twin under torch.profiler: the share of its wall time inside ATen ops (the arithmetic and
   its memory traffic); the rest is Python and framework work.
   For the GAN: a run's Lightning fit (a stack of one) beside the plain per-run loop it replaced.

    .venv/bin/python benchmarks/profile_pipeline.py            # ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/profile_pipeline.py --quick    # fewer steps, a smoke run

Writes benchmarks/results/profile.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


# ---- part 1: what the pipeline's clocks recorded ---------------------------------------------

def recorded(repo: Path) -> dict:
    out: dict = {}
    models, metrics = repo / "models", repo / "metrics"

    def load(path: Path):
        return json.loads(path.read_text()) if path.exists() else None

    vq = load(models / "vq" / "train.json")
    if vq:
        parts: dict = {}
        for run in vq["runs"].values():
            for part, r in run.items():
                parts.setdefault(part, []).append(r["seconds"])
        out["vq"] = {"stage_seconds": vq["wall_seconds"],
                     "job_kinds": {p: {"jobs": len(v), "seconds_each": round(sum(v) / len(v), 1),
                                       "seconds_total": round(sum(v), 1)} for p, v in parts.items()}}
    gan = load(models / "gan" / "config.json")
    if gan:
        kinds: dict = {}
        for job in gan["jobs"]:
            kind = "2-D mixtures" if job["bench"] in ("ring", "grid") else job["bench"]
            kinds.setdefault(kind, []).append(job["seconds"])
        out["gan"] = {"stage_seconds": gan["wall_seconds"], "reported_jobs_only": True,
                      "job_kinds": {k: {"jobs": len(v), "seconds_each": round(sum(v) / len(v), 1),
                                        "seconds_total": round(sum(v), 1)} for k, v in kinds.items()}}
    diff = load(models / "diffusion" / "train.json")
    if diff:
        kinds = {}
        for key, seconds in diff["seconds"].items():
            part = key.split("/", 1)[1].rstrip("0123456789").rstrip("_")
            kinds.setdefault(part, []).append(seconds)
        out["diffusion"] = {"stage_seconds": diff.get("wall_seconds"),
                            "job_kinds": {k: {"jobs": len(v), "seconds_each": round(sum(v) / len(v), 1),
                                              "seconds_total": round(sum(v), 1)} for k, v in kinds.items()}}
    fed = load(models / "federated" / "runs.json")
    if fed:
        kinds = {}
        for run in fed["runs"]:
            kinds.setdefault(f"{run['job']['setting']}/{run['job']['algorithm']}", []).append(run.get("seconds", 0.0))
        out["federated"] = {"stage_seconds": fed["wall_seconds"],
                            "job_kinds": {k: {"jobs": len(v), "seconds_total": round(sum(v), 1)} for k, v in kinds.items()}}
    # Where models/ is absent (a fresh clone: DVC outputs are not in git), the committed metrics
    # still hold each train stage's wall time, and per job kind what the stage reported.
    for name in ("vq", "gan", "diffusion", "federated"):
        m = load(metrics / f"{name}.json")
        if not m:
            continue
        wall = m.get("wall_seconds") if isinstance(m.get("wall_seconds"), dict) else {}
        stage = m.get("train_wall_seconds") or wall.get("train")
        if name not in out:
            out[name] = {"stage_seconds": stage, "source": f"metrics/{name}.json"}
            if name == "gan":
                out[name]["seconds_per_run"] = wall
            elif name == "diffusion":
                kinds: dict = {}
                for key, seconds in wall.items():
                    if "/" in key:
                        kinds.setdefault(key.split("/", 1)[1].rstrip("0123456789").rstrip("_"), []).append(seconds)
                out[name]["job_kinds"] = {k: {"jobs": len(v), "seconds_total": round(sum(v), 1)} for k, v in kinds.items()}
            elif name == "federated":
                out[name]["job_kinds"] = {k: {"seconds_total": v} for k, v in wall.items() if k != "train"}
        out[name]["stage_seconds"] = out[name]["stage_seconds"] or stage
    return out


# ---- part 2: step overhead, side by side ------------------------------------------------------

def plain_fit(module, batches, steps: int) -> float:
    """The twin of a Lightning fit with automatic optimisation: seconds for `steps` steps."""
    import torch

    conf = module.configure_optimizers()
    opt = conf["optimizer"] if isinstance(conf, dict) else conf
    sched = conf.get("lr_scheduler") if isinstance(conf, dict) else None
    sched, interval = (sched["scheduler"], sched.get("interval", "epoch")) if isinstance(sched, dict) else (sched, "epoch")
    module.train()
    batches_iter = iter(batches)
    start = time.perf_counter()
    for i in range(steps):
        try:
            batch = next(batches_iter)
        except StopIteration:
            batches_iter = iter(batches)
            batch = next(batches_iter)
        loss = module.training_step(batch, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None and interval == "step":
            sched.step()
        module.on_train_batch_end(loss, batch, i)
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return time.perf_counter() - start


def lightning_fit(module, batches, steps: int, params, name: str) -> float:
    from embedlab.training import make_trainer

    trainer, _ = make_trainer(params.trainer, name=name, max_epochs=10_000, max_steps=steps, seed=0, monitor=None)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=batches)
    return time.perf_counter() - start


def aten_share(run_steps) -> float:
    """Share of a plain run's wall time spent inside ATen ops (self CPU time of aten:: events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        run_steps()
        wall = time.perf_counter() - start
    inside = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("aten::")) / 1e6
    return round(inside / wall, 3)


def per_step(t1: float, s1: int, t2: float, s2: int) -> tuple[float, float]:
    step = (t2 - t1) / (s2 - s1)
    return step, t1 - s1 * step


def twin(kind: str, make_module, make_batches, params, s1: int, s2: int, repeats: int = 2) -> dict:
    """Each (side, step count) timed `repeats` times, the fastest kept; one warm-up run first."""
    import torch

    plain_fit(make_module(), make_batches(), 2)
    rows = {}
    for how in ("plain", "lightning"):
        times = []
        for steps in (s1, s2):
            best = float("inf")
            for _ in range(repeats):
                torch.manual_seed(0)
                module, batches = make_module(), make_batches()
                best = min(best, plain_fit(module, batches, steps) if how == "plain"
                           else lightning_fit(module, batches, steps, params, f"profile-{kind}"))
            times.append(best)
        step, startup = per_step(times[0], s1, times[1], s2)
        rows[how] = {"seconds_per_step": round(step, 5), "startup_seconds": round(startup, 2),
                     f"seconds_{s1}_steps": round(times[0], 2), f"seconds_{s2}_steps": round(times[1], 2)}
    torch.manual_seed(0)
    module, batches = make_module(), make_batches()
    share = aten_share(lambda: plain_fit(module, batches, s1))
    lp, ll = rows["plain"]["seconds_per_step"], rows["lightning"]["seconds_per_step"]
    return {**rows, "aten_share_of_plain_step": share,
            "lightning_step_outside_plain": round(1 - lp / ll, 3) if ll > 0 else None,
            "lightning_step_outside_aten": round(1 - share * lp / ll, 3) if ll > 0 else None}


def ddpm(params, s1, s2) -> dict:
    import torch

    from embedlab.data.prepare import read_prepared
    from embedlab.methods.diffusion.given import build_unet, schedule_of
    from embedlab.methods.diffusion.models import _Steps, ddpm_module
    from embedlab.paths import Paths

    p = params.diffusion.ddpm
    dropout = params.diffusion.label_dropout
    x, y = (torch.as_tensor(a) for a in read_prepared(Paths(REPO).prepared).split("train"))
    return twin("ddpm", lambda: ddpm_module(build_unet(p), schedule_of(p), p.lr, p.ema_decay, dropout, p.steps,
                                            p.lr_decay, p.min_snr_gamma),
                lambda: _Steps(x, y, batch_size=p.batch_size, steps=10 ** 9, seed=0), params, s1, s2)


def vq_ar(params, s1, s2) -> dict:
    import torch

    from embedlab.data.prepare import read_prepared
    from embedlab.methods.vq.method import _configs
    from embedlab.methods.vq.parts import build_priors
    from embedlab.methods.vq.prior_training import LitPrior
    from embedlab.paths import Paths
    from embedlab.training import TensorBatches

    data = read_prepared(Paths(REPO).prepared)
    config = _configs(params, data.meta)
    t = config["tokenizer"]
    positions = config["ar"]["num_positions"]
    gen = torch.Generator().manual_seed(0)
    n = int((data.manifest["split"] == "train").sum()) * (1 + params.vq.prior.augment_copies)
    tokens = torch.randint(t["codebook_size"], (n, positions, t["num_quantizers"]), generator=gen)
    labels = torch.randint(int(data.meta["num_classes"]), (n,), generator=gen)

    def module():
        _, ar = build_priors(config)
        return LitPrior(ar, params.vq.prior, params.vq.prior.ar_max_epochs)

    return twin("vq-ar", module, lambda: TensorBatches(tokens, labels, batch_size=params.vq.prior.batch_size,
                                                        shuffle=True, seed=0), params, s1, s2)


def gan_image(params, s1, s2) -> dict:
    """A stacked_weak mee run, the GAN's biggest job kind: its Lightning fit (a stack of one,
    module.py) beside the plain per-run loop it replaced (benchmarks/gan_stacking.py)."""
    from dataclasses import replace

    import torch

    from embedlab.data.prepare import read_prepared
    from embedlab.methods.gan.module import Run, train_runs
    from embedlab.methods.gan.parts import build_generator, disc_factory, gen_config, loop_config, real_sampler
    from embedlab.paths import Paths

    sys.path.insert(0, str(REPO / "benchmarks"))
    from gan_stacking import per_run_loop

    x, y = (torch.as_tensor(a) for a in read_prepared(Paths(REPO).prepared).split("train"))
    bench, size = "stacked_weak", int(x.shape[-1])
    config = gen_config(params, bench, size)
    make_gen, make_disc, real = (lambda: build_generator(config)), disc_factory(params, bench, size), real_sampler(params, bench, x, y)

    def run(how, steps):
        cfg = replace(loop_config(params, bench, "mee"), steps=steps)
        start = time.perf_counter()
        if how == "plain":
            per_run_loop("mee", make_gen, make_disc, real, cfg, 0)
        else:
            train_runs([Run("mee", 0, cfg)], make_gen, make_disc, real, params.trainer)
        return time.perf_counter() - start

    run("plain", 2), run("lightning", 2)  # warm-up
    rows = {}
    for how in ("plain", "lightning"):
        t1, t2 = min(run(how, s1), run(how, s1)), min(run(how, s2), run(how, s2))
        step, startup = per_step(t1, s1, t2, s2)
        rows[how] = {"seconds_per_step": round(step, 5), "startup_seconds": round(startup, 2),
                     f"seconds_{s1}_steps": round(t1, 2), f"seconds_{s2}_steps": round(t2, 2)}
    share = aten_share(lambda: run("plain", s1))
    lp, ll = rows["plain"]["seconds_per_step"], rows["lightning"]["seconds_per_step"]
    return {**rows, "aten_share_of_plain_step": share,
            "lightning_step_outside_plain": round(1 - lp / ll, 3) if ll > 0 else None,
            "lightning_step_outside_aten": round(1 - share * lp / ll, 3) if ll > 0 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "profile.json")
    args = parser.parse_args()

    import torch

    from embedlab.params import load_params, parse_params

    warnings.filterwarnings("ignore")  # self.log outside a Trainer (the plain twin), Lightning's tips
    torch.set_num_threads(1)  # as a pipeline worker runs
    raw = load_params(REPO / "params.yaml").model_dump(by_alias=True)
    raw["trainer"].update(progress_bar=False, accelerator="cpu")
    params = parse_params(raw)
    steps = {"diffusion ddpm": (20, 80), "vq ar prior": (10, 30), "gan stacked_weak mee": (50, 200)}
    if args.quick:
        steps = {k: (3, 6) for k in steps}
    result = {"command": "python benchmarks/profile_pipeline.py" + (" --quick" if args.quick else ""),
              "threads": 1, "steps": steps, "recorded": recorded(REPO), "step_overhead": {}}
    for kind, fn in (("diffusion ddpm", ddpm), ("vq ar prior", vq_ar), ("gan stacked_weak mee", gan_image)):
        start = time.perf_counter()
        result["step_overhead"][kind] = fn(params, *steps[kind])
        print(f"{kind}: {json.dumps(result['step_overhead'][kind])} ({time.perf_counter() - start:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
