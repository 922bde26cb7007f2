"""What a PPAP expert's training step costs, before and after the two changes that train@diffusion
now makes (experts.teacher_logits, lora.py's merged weight).

Side by side in one process, one thread (the pinned numerics of every stage), on the committed
backbone with LoRA as train@diffusion builds it (rank and alpha from params.yaml), batch
`diffusion.ppap.batch_size`, 16 x 16 images:

- "before": the teacher (the frozen backbone) reads the clean batch every step, and each LoRA
  layer runs as two branches (base conv + rank-r conv + 1 x 1 conv);
- "teacher cached": the teacher's logits read from a table made once per distillation set
  (the set is fixed per training seed: 1,024 images, read once instead of 128 x 600 times);
- "teacher cached + merged LoRA" (what train@diffusion runs): as above, each LoRA layer one
  conv of the merged weight W + (alpha / r) B A (the same function by linearity; gradients
  reach A and B through the merge).

Each variant is timed over `--steps` steps after a warm-up, the three interleaved in rounds so
that load on the machine hits them alike; the table gives the median ms per step.

    python benchmarks/ppap_expert_step.py            # ~2 min; prints a table, writes results/
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import embedlab  # noqa: F401  (the numerics pins: torch loads after, inside the functions)

ROOT = Path(__file__).resolve().parents[1]


def two_branch(expert):
    """A copy of `expert` whose LoRA layers run as base layer + rank-r branch (the form before)."""
    import torch.nn.functional as F

    from embedlab.methods.diffusion.lora import LoRAConv2d, LoRALinear

    out = copy.deepcopy(expert)

    def conv_forward(self, x):
        b = self.base
        low = F.conv2d(x, self.lora_a, None, b.stride, b.padding, b.dilation)
        return b(x) + self.scale * F.conv2d(low, self.lora_b)

    def linear_forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)

    for module in out.modules():
        if isinstance(module, LoRAConv2d):
            module.forward = conv_forward.__get__(module)
        elif isinstance(module, LoRALinear):
            module.forward = linear_forward.__get__(module)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import torch

    from embedlab.classifiers.nets import load_classifier
    from embedlab.methods.diffusion.experts import distillation_loss
    from embedlab.methods.diffusion.given import schedule_of
    from embedlab.methods.diffusion.lora import add_lora
    from embedlab.params import load_params

    params = load_params(ROOT / "params.yaml")
    p = params.diffusion
    backbone = load_classifier(ROOT / "models/backbone").eval().requires_grad_(False)
    schedule = schedule_of(p.ddpm)
    g = torch.Generator().manual_seed(0)
    kd = torch.rand(p.ppap.kd_samples, 1, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        table = torch.cat([backbone(kd[i:i + 256]) for i in range(0, len(kd), 256)])

    torch.manual_seed(0)
    lora = add_lora(backbone, p.ppap.rank, p.ppap.alpha)
    experts = {"before": two_branch(lora), "teacher cached": two_branch(lora),
               "teacher cached + merged LoRA": copy.deepcopy(lora)}
    optims = {k: torch.optim.Adam([q for q in e.parameters() if q.requires_grad], lr=p.ppap.lr)
              for k, e in experts.items()}
    bs = p.ppap.batch_size

    def step(name: str) -> None:
        idx = torch.randint(0, len(kd), (bs,), generator=g)
        x0 = kd[idx]
        t = torch.randint(0, p.ddpm.timesteps // p.ppap.experts, (bs,), generator=g)
        xt = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=g))
        if name == "before":
            with torch.no_grad():
                target = backbone(x0)
        else:
            target = table[idx]
        expert = experts[name].train()
        loss = distillation_loss(target, expert(xt), p.ppap.tau)
        optims[name].zero_grad(set_to_none=True)
        loss.backward()
        optims[name].step()

    # The merged expert computes what the two-branch expert computes (before any step changes them;
    # B is zero at the start, so perturb it to make the check mean something).
    x = kd[:8]
    probe = copy.deepcopy(lora)
    with torch.no_grad():
        for q in probe.parameters():
            if q.requires_grad:
                q.add_(0.01 * torch.randn(q.shape, generator=g))
    same = torch.allclose(probe.eval()(x), two_branch(probe).eval()(x), atol=1e-4)
    for name in experts:  # warm-up
        for _ in range(3):
            step(name)
    times: dict[str, list[float]] = {k: [] for k in experts}
    for _ in range(args.rounds):
        for name in experts:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            times[name].append((time.perf_counter() - start) * 1000 / args.steps)
    median = {k: round(statistics.median(v), 2) for k, v in times.items()}
    base = median["before"]
    rows = {k: {"ms_per_step": v, "speedup": round(base / v, 3)} for k, v in median.items()}
    result = {"batch_size": bs, "rank": p.ppap.rank, "steps_per_round": args.steps, "rounds": args.rounds,
              "threads": torch.get_num_threads(), "merged_equals_lora": bool(same), "variants": rows,
              "teacher_reads_per_seed": {"before": bs * p.ppap.steps * p.ppap.experts,
                                         "teacher cached": p.ppap.kd_samples}}
    print(f"{'variant':<30} {'ms / step':>10} {'speedup':>8}")
    for k, v in rows.items():
        print(f"{k:<30} {v['ms_per_step']:>10.2f} {v['speedup']:>8.3f}")
    print(f"merged LoRA computes the same function: {same}")
    out = ROOT / "benchmarks/results/ppap_expert_step.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
