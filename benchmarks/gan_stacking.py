"""GAN runs stacked as one Lightning model against the per-run loop they replaced (issue 16).

Side by side in one process on one thread (as a pipeline worker runs), default params:

1. Same numbers: every arm, stacked together with other arms and seeds, against the same run
   alone in the per-run loop, over a few steps: generator samples and loss curves; and how
   many steps pass before float-order differences grow past 1e-4 in the losses.
2. Speed, 2-D: all arms x seeds of one mixture (25 runs at the pipeline's 1,500 steps), the
   per-run loop one run after another against the pipeline's stacks (`method.stacks_of`).
3. Speed, images: three stacked_weak mee runs (seeds) as one grouped-convolution stack against
   the three alone, at `--image-steps` steps: why a CPU trains image runs alone.

    .venv/bin/python benchmarks/gan_stacking.py            # ~6 min on this 2-core machine
    .venv/bin/python benchmarks/gan_stacking.py --quick    # a smoke run

Writes benchmarks/results/gan_stacking.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from embedlab.methods.gan import losses as L  # noqa: E402
from embedlab.methods.gan.arms import ARMS, LoopConfig  # noqa: E402


def per_run_loop(arm: str, make_gen: Callable[[], nn.Module], make_disc: Callable[[str], nn.Module],
              real_batches: Callable[[int, torch.Generator], Tensor], cfg: LoopConfig, seed: int,
              progress: Callable[[int, dict], None] | None = None,
              device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Today's loop until stacking (src/embedlab/methods/gan/arms.py `train_arm` at 3ce79cb), verbatim:
    one arm, one seed, plain PyTorch. Returns (generator in eval mode, history)."""
    spec = ARMS[arm]
    torch.manual_seed(seed)
    data_gen = torch.Generator().manual_seed(seed)
    gen, disc = make_gen().to(device), make_disc(spec.head).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), cfg.lr, betas=cfg.betas)
    # One FIFO per side: D's entropy term spreads real embeddings, G's spreads fake ones, each
    # measured against that side's own recent past.
    dim = getattr(disc.head, "dim", 1)
    buffers = {side: L.ReplayBuffer(cfg.buffer_size, dim) for side in ("real", "fake")} if spec.entropy else None
    losses: list[Tensor] = []
    start = time.perf_counter()

    def adversarial_d(real_out, fake_out):
        if spec.head == "scalar":
            return L.gan_d_loss(real_out, fake_out)
        return L.maf_d_loss(real_out, fake_out, cfg.maf_form, cfg.maf_scale)

    def adversarial_g(fake_out):
        if spec.head == "scalar":
            return L.gan_g_loss(fake_out)
        return L.maf_g_loss(fake_out, cfg.maf_form, cfg.maf_scale)

    aug = dict(max_shift=cfg.aug_shift, max_degrees=cfg.aug_degrees, noise_std=cfg.aug_noise, generator=data_gen)
    for step in range(cfg.steps):
        sigma = L.sigma_at(step, cfg.sigma, cfg.sigma_ramp)
        real = real_batches(cfg.batch_size, data_gen)
        # One generator forward per step, as in the DCGAN reference loop: D trains on it
        # detached, then G backpropagates through the same batch into the updated D.
        fake_graph = gen(torch.randn(cfg.batch_size, gen.z_dim, device=device))
        fake = fake_graph.detach()
        # Every D input of this step goes through one forward pass (D has no batch statistics):
        # [real, fake] + [aug real, aug fake] for DLLE + [mix] for DIsoMap.
        parts = [real, fake]
        if spec.dlle:
            parts += [L.mild_augment(real, **aug), L.mild_augment(fake, **aug)]
        if spec.disomap:
            a = L.mix_weights(real, data_gen)
            parts.append(L.mix(real, fake, a))
        outs = disc(torch.cat(parts)).split(cfg.batch_size)
        real_out, fake_out = outs[0], outs[1]
        d_loss = adversarial_d(real_out, fake_out)
        if spec.dlle:
            d_loss = d_loss + cfg.lambda_dlle * (L.dlle_from_outputs(real_out, outs[2])
                                                 + L.dlle_from_outputs(fake_out, outs[3]))
        if spec.disomap:
            d_loss = d_loss + cfg.lambda_disomap * L.disomap_from_outputs(outs[-1], real_out, fake_out, a,
                                                                          cfg.disomap_distance)
        _update(opt_d, _with_entropy(d_loss, real_out, buffers and buffers["real"], sigma))

        fake_out = disc(fake_graph)
        g_loss = _with_entropy(adversarial_g(fake_out), fake_out, buffers and buffers["fake"], sigma)
        _update(opt_g, g_loss)
        losses.append(torch.stack([d_loss.detach(), g_loss.detach()]))
        if progress is not None:
            progress(step, {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())})
    curves = torch.stack(losses).cpu() if losses else torch.zeros(0, 2)  # one host sync, at the end
    history = {"d_loss": curves[:, 0].tolist(), "g_loss": curves[:, 1].tolist(),
               "seconds": time.perf_counter() - start}
    return gen.eval(), history


def _with_entropy(loss: Tensor, embeddings: Tensor, buffer: L.ReplayBuffer | None, sigma: float) -> Tensor:
    """loss + the entropy term against `buffer`, which then takes this batch (no-op without one)."""
    if buffer is None:
        return loss
    loss = loss + L.entropy_loss(embeddings, buffer, sigma)
    buffer.push(embeddings)
    return loss


def _update(opt: torch.optim.Optimizer, loss: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


# ---- the measurements -------------------------------------------------------------------------

def setting(params, bench: str):
    from embedlab.methods.gan.parts import build_generator, disc_factory, gen_config, real_sampler

    images, labels = torch.rand(200, 1, 16, 16) * 2 - 1, torch.arange(200) % 10
    config = gen_config(params, bench, 16)
    return (lambda: build_generator(config)), disc_factory(params, bench, 16), real_sampler(params, bench, images, labels)


def same_numbers(params, trainer, steps: int, drift_steps: int) -> dict:
    """Stacked (every arm, two seeds, one stack) against each run alone in the per-run loop:
    the largest differences over the first `steps` steps, and per arm the first step (of
    `drift_steps`) whose D loss differs by more than 1e-4: a GAN amplifies 1-ulp differences
    (float order) until the runs part, as two identical runs on different hardware would."""
    from embedlab.methods.gan.arms import sample
    from embedlab.methods.gan.module import Run, train_runs
    from embedlab.methods.gan.parts import loop_config

    out = {}
    for bench in ("ring", "stacked_weak"):
        make_gen, make_disc, real = setting(params, bench)
        runs = [Run(arm, seed, replace(loop_config(params, bench, arm), steps=drift_steps)) for arm in ARMS for seed in (0, 1)]
        stacked = train_runs(runs, make_gen, make_disc, real, trainer)
        worst = {"losses": 0.0}
        parted: dict = {}
        for run, (_, hist) in zip(runs, stacked):
            _, ref = per_run_loop(run.arm, make_gen, make_disc, real, run.cfg, run.seed)
            gaps = [max(abs(hist[k][i] - ref[k][i]) for k in ("d_loss", "g_loss")) for i in range(drift_steps)]
            worst["losses"] = max(worst["losses"], max(gaps[:steps]))
            first = next((i for i, g in enumerate(gaps) if g > 1e-4), None)
            parted.setdefault(run.arm, []).append(first)
        # samples after `steps` steps: a short stack against the short runs alone
        short = [Run(r.arm, r.seed, replace(r.cfg, steps=steps)) for r in runs]
        worst["samples"] = 0.0
        for run, (state, _) in zip(short, train_runs(short, make_gen, make_disc, real, trainer)):
            alone, _ = per_run_loop(run.arm, make_gen, make_disc, real, run.cfg, run.seed)
            gen = make_gen()
            gen.load_state_dict(state)
            worst["samples"] = max(worst["samples"], (sample(gen.eval(), 256, 7) - sample(alone, 256, 7)).abs().max().item())
        out[bench] = {"runs": len(runs), "steps": steps, "max_abs_difference": {k: float(f"{v:.3g}") for k, v in worst.items()},
                      "first_step_losses_differ_by_1e-4": {"of_steps": drift_steps, **parted}}
        print(f"same numbers, {bench}: {out[bench]}", flush=True)
    return out


def speed(params, trainer, bench: str, jobs, steps: int | None) -> dict:
    from embedlab.methods.gan.method import stacks_of
    from embedlab.methods.gan.module import Run, train_runs
    from embedlab.methods.gan.parts import loop_config

    make_gen, make_disc, real = setting(params, bench)

    def cfg(job):
        c = loop_config(params, bench, job.arm, job.value)
        return replace(c, steps=steps) if steps else c

    start = time.perf_counter()
    for job in jobs:
        per_run_loop(job.arm, make_gen, make_disc, real, cfg(job), job.seed)
    per_run = time.perf_counter() - start
    groups = stacks_of(jobs, "cpu")
    start = time.perf_counter()
    for group in groups:
        train_runs([Run(j.arm, j.seed, cfg(j)) for j in group], make_gen, make_disc, real, trainer)
    stacked = time.perf_counter() - start
    row = {"runs": len(jobs), "steps": cfg(jobs[0]).steps, "stacks": [len(g) for g in groups],
           "per_run_seconds": round(per_run, 1), "stacked_seconds": round(stacked, 1),
           "speedup": round(per_run / stacked, 2)}
    print(f"speed, {bench}: {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--image-steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gan_stacking.json")
    args = parser.parse_args()

    import logging

    from embedlab.methods.gan.module import Run, train_runs
    from embedlab.methods.gan.parts import Job, loop_config
    from embedlab.params import load_params

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    params = load_params(REPO / "params.yaml")
    trainer = params.trainer.model_copy(update={"progress_bar": False, "accelerator": "cpu"})
    toy_steps = 20 if args.quick else None
    result = {
        "command": "python benchmarks/gan_stacking.py" + (" --quick" if args.quick else ""), "threads": 1,
        "same_numbers": same_numbers(params, trainer, 3 if args.quick else 10, 6 if args.quick else 120),
        "ring_all_arms_x_seeds": speed(params, trainer, "ring", [Job("ring", a, s) for a in params.gan.toy.arms
                                                                 for s in params.gan.toy.seeds], toy_steps),
    }
    image_steps = 5 if args.quick else args.image_steps
    image = speed(params, trainer, "stacked_weak", [Job("stacked_weak", "mee", s) for s in params.gan.image.seeds], image_steps)
    # The same three runs as one grouped-convolution stack (what a GPU does).
    make_gen, make_disc, real = setting(params, "stacked_weak")
    runs = [Run("mee", s, replace(loop_config(params, "stacked_weak", "mee"), steps=image_steps)) for s in params.gan.image.seeds]
    start = time.perf_counter()
    train_runs(runs, make_gen, make_disc, real, trainer)
    image["grouped_stack_seconds"] = round(time.perf_counter() - start, 1)
    image["grouped_speedup"] = round(image["per_run_seconds"] / image["grouped_stack_seconds"], 2)
    print(f"grouped image stack: {image['grouped_stack_seconds']} s", flush=True)
    result["stacked_weak_mee_seeds"] = image
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
