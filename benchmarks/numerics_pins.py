"""What the numerics pins (embedlab/numerics.py) cost, and what each of them changes.

Side by side in one run, each setting in a fresh process (the pins must be set before torch
loads its kernels): a conv-net step (the DDPM / federated CNN shape: 16x16 images, 16-32
channels, GroupNorm, batch 128), an MLP step (the 2-D GAN shape), and a transformer step (the
vq priors' shape), each timed over `--steps` steps after a warm-up, one thread. Then the final
weights of a short seeded training are hashed: a setting whose hash differs from "pinned"
computes different numbers on this very machine, which is what a host with another instruction
set does to an unpinned run.

    python benchmarks/numerics_pins.py            # ~1 min; prints a table, writes results/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    # the host's own kernels (AVX-512 here; AMX on an Intel host)
    "native": {"EMBEDLAB_NATIVE_KERNELS": "1"},
    # everything embedlab.numerics pins (the default of every stage)
    "pinned": {},
    # the pins but one, to see what each one changes
    "pinned, ATen native": {"ATEN_CPU_CAPABILITY": "avx512"},
    "pinned, oneDNN native": {"ONEDNN_MAX_CPU_ISA": "ALL", "DNNL_MAX_CPU_ISA": "ALL"},
    "pinned, MKL native": {"MKL_CBWR": "AUTO"},
}


def _nets(torch):
    nn = torch.nn
    conv = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.GroupNorm(8, 32), nn.SiLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
        nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.SiLU(), nn.Conv2d(16, 1, 3, padding=1),
    )
    mlp = nn.Sequential(nn.Linear(8, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2),
                        nn.Linear(64, 64), nn.LeakyReLU(0.2), nn.Linear(64, 2))
    layer = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True)
    transformer = nn.Sequential(nn.TransformerEncoder(layer, 4, enable_nested_tensor=False), nn.Linear(128, 64))
    return {
        "conv": (conv, lambda g: torch.randn(128, 1, 16, 16, generator=g)),
        "mlp": (mlp, lambda g: torch.randn(128, 8, generator=g)),
        "transformer": (transformer, lambda g: torch.randn(32, 64, 128, generator=g)),
    }


def child(steps: int) -> dict:
    import embedlab.numerics as numerics
    from embedlab.host import host

    numerics.pin_environment()
    import torch

    numerics.pin_threads()
    torch.set_num_threads(1)
    out = {"host": host(), "seconds_per_step": {}, "weights_sha": {}}
    for name, (_, batch) in _nets(torch).items():
        torch.manual_seed(0)
        net = _nets(torch)[name][0]
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        xs = [batch(g) for _ in range(8)]

        def step(x, net=net, opt=opt):
            opt.zero_grad(set_to_none=True)
            y = net(x)
            loss = (y.float() ** 2).mean()
            loss.backward()
            opt.step()

        for x in xs[:3]:
            step(x)
        start = time.perf_counter()
        for i in range(steps):
            step(xs[i % len(xs)])
        out["seconds_per_step"][name] = (time.perf_counter() - start) / steps
        digest = hashlib.sha256()
        for p in net.parameters():
            digest.update(p.detach().numpy().tobytes())
        out["weights_sha"][name] = digest.hexdigest()[:12]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "numerics_pins.json")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.steps)))
        return
    rows = {}
    for label, env in SETTINGS.items():
        full = {k: v for k, v in os.environ.items() if k != "EMBEDLAB_NATIVE_KERNELS"} | env
        proc = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps)], env=full,
                              capture_output=True, text=True, check=True)
        rows[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = rows["pinned"]
    print(f"{'setting':24s} " + " ".join(f"{n:>22s}" for n in base["seconds_per_step"]))
    for label, row in rows.items():
        cells = []
        for n, sec in row["seconds_per_step"].items():
            same = "same" if row["weights_sha"][n] == base["weights_sha"][n] else "DIFF"
            cells.append(f"{1000 * sec:7.1f} ms x{sec / base['seconds_per_step'][n]:4.2f} {same:>4s}")
        print(f"{label:24s} " + " ".join(f"{c:>22s}" for c in cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": args.steps, "settings": SETTINGS, "rows": rows}, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
