"""train@diffusion: the DDPMs, PPAP's experts, the supervised baseline, and each arm's scale.

Parts, trained in three phases on `workers` spawned processes (one thread each):
  1. the unconditional DDPM and the conditional one (label dropout, for cfg)
  2. PPAP's experts (data-free: unlabelled samples of the unconditional DDPM) and the
     supervised baseline (the backbone fine-tuned on labelled noisy images over all t)
  3. the guidance-scale sweep: per arm, samples at each scale, judged by the *backbone*
     (accuracy on the requested class; backbone-feature FD to the val split as a guard).
     The evaluator never sees them here.

Arms: unguided, naive (the clean backbone on x_t), supervised, ppap, cfg.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from embedlab.io import write_json_atomic
from embedlab.params import Params
from embedlab.paths import Paths

NAME = "diffusion"
GUIDED = ("naive", "supervised", "ppap", "cfg")
SELECTION_SEED = 100  # the sweep's sampling seed: never one of the reported seeds


def schedule_of(p):
    from embedlab.methods.diffusion.schedule import Schedule

    return Schedule(p.timesteps, p.schedule)


def build_unet(p, num_classes: int = 0):
    from embedlab.methods.diffusion.unet import UNet

    return UNet(tuple(p.channels), attention=p.attention, num_classes=num_classes)


def _data(paths: Paths, split: str):
    from embedlab.data.prepare import read_prepared

    data = read_prepared(paths.prepared)
    x, y = data.split(split)
    return torch.from_numpy(x), torch.from_numpy(y), data.num_classes


def _fit(module, params: Params, name: str, steps: int, seed: int, batches) -> None:
    from embedlab.training import make_trainer

    trainer, _ = make_trainer(params.trainer, name=name, max_epochs=1, max_steps=steps, seed=seed, monitor=None)
    trainer.fit(module, train_dataloaders=batches)


def _backbone(paths: Paths, device="cpu"):
    from embedlab.classifier import load_classifier

    return load_classifier(paths.model_dir("backbone"), device).eval()


# ---- phase 1 and 2: the parts ---------------------------------------------------------------

def train_ddpm(params: Params, paths: Paths, conditional: bool) -> dict:
    from embedlab.methods.diffusion.models import _Steps, ddpm_module

    p = params.diffusion
    x, y, classes = _data(paths, "train")
    torch.manual_seed(p.seed + int(conditional))
    unet = build_unet(p, classes if conditional else 0)
    module = ddpm_module(unet, schedule_of(p), p.lr, p.ema_decay, p.label_dropout, p.steps)
    start = time.perf_counter()
    _fit(module, params, f"ddpm_{'cond' if conditional else 'uncond'}", p.steps, p.seed,
         _Steps(x, y, batch_size=p.batch_size, steps=p.steps, seed=p.seed + int(conditional)))
    name = "ddpm_cond" if conditional else "ddpm_uncond"
    torch.save({k: v.cpu() for k, v in module.ema.state_dict().items()}, paths.model_dir(NAME) / f"{name}.pt")
    return {name: round(time.perf_counter() - start, 1)}


def kd_images(unet, params: Params, n: int, seed: int, image_size: int) -> tuple[torch.Tensor]:
    """PPAP's distillation set: `n` samples of the unconditional DDPM. Images only — a
    1-tuple, so no label can ride along (the experts' training step unpacks exactly one)."""
    from embedlab.methods.diffusion.schedule import ddim_sample

    p = params.diffusion
    gen = torch.Generator().manual_seed(seed)
    out = [ddim_sample(unet.eval(), schedule_of(p), (min(500, n - i), 1, image_size, image_size), p.ddim_steps, generator=gen)
           for i in range(0, n, 500)]
    return (torch.cat(out),)


def train_experts(params: Params, paths: Paths, which: list[int] | None = None) -> dict:
    """Experts `which` (default all), each saved as expert_<i>.pt; `collect_experts` joins them.
    Every worker draws the same distillation set (same seed)."""
    from embedlab.methods.diffusion.experts import expert_range
    from embedlab.methods.diffusion.lora import add_lora
    from embedlab.methods.diffusion.models import _Steps, expert_module

    p = params.diffusion
    model_dir = paths.model_dir(NAME)
    unet = build_unet(p)
    unet.load_state_dict(torch.load(model_dir / "ddpm_uncond.pt", weights_only=True))
    start = time.perf_counter()
    kd = kd_images(unet, params, p.ppap.kd_samples, p.seed, int(_data(paths, "val")[0].shape[-1]))
    assert len(kd) == 1, "the distillation set must hold images only"
    seconds = {"kd_sampling": round(time.perf_counter() - start, 1)}
    backbone = _backbone(paths)
    for i in (range(p.ppap.experts) if which is None else which):
        t0 = time.perf_counter()
        torch.manual_seed(p.seed * 100 + i)
        expert = add_lora(backbone, p.ppap.rank, p.ppap.alpha)
        module = expert_module(expert, backbone, schedule_of(p), expert_range(i, p.timesteps, p.ppap.experts),
                               p.ppap.lr, p.ppap.tau)
        _fit(module, params, f"expert_{i}", p.ppap.steps, p.seed + i,
             _Steps(*kd, batch_size=p.ppap.batch_size, steps=p.ppap.steps, seed=p.seed * 7 + i))
        torch.save({k: v.cpu() for k, v in expert.state_dict().items()}, model_dir / f"expert_{i}.pt")
        seconds[f"expert_{i}"] = round(time.perf_counter() - t0, 1)
    return seconds


def collect_experts(model_dir: Path, experts: int) -> None:
    """expert_<i>.pt files -> experts.pt (a list, in timestep order)."""
    states = [torch.load(model_dir / f"expert_{i}.pt", weights_only=True) for i in range(experts)]
    torch.save(states, model_dir / "experts.pt")
    for i in range(experts):
        (model_dir / f"expert_{i}.pt").unlink()


def train_supervised(params: Params, paths: Paths) -> dict:
    from embedlab.methods.diffusion.models import _Steps, supervised_module

    import copy

    p = params.diffusion
    x, y, _ = _data(paths, "train")
    net = copy.deepcopy(_backbone(paths)).train().requires_grad_(True)  # every weight trains
    start = time.perf_counter()
    _fit(supervised_module(net, schedule_of(p), p.supervised_lr), params, "supervised", p.supervised_steps, p.seed,
         _Steps(x, y, batch_size=p.batch_size, steps=p.supervised_steps, seed=p.seed + 11))
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, paths.model_dir(NAME) / "supervised.pt")
    return {"supervised": round(time.perf_counter() - start, 1)}


# ---- the arms ------------------------------------------------------------------------------

class Parts:
    """Every trained part, loaded for sampling: from a stage's model_dir, or from a
    downloaded registry bundle (`scoring.load_bundle`)."""

    def __init__(self, p, model_dir: Path, backbone: torch.nn.Module, image_size: int, device="cpu"):
        import copy

        from embedlab.methods.diffusion.experts import MultiExpert
        from embedlab.methods.diffusion.lora import add_lora

        self.p, self.device = p, torch.device(device)
        self.schedule = schedule_of(p)
        self.backbone = backbone.to(self.device).eval()
        self.num_classes = int(self.backbone.head.out_features)
        self.image_size = image_size
        self.uncond = build_unet(p)
        self.uncond.load_state_dict(torch.load(model_dir / "ddpm_uncond.pt", weights_only=True))
        self.cond = build_unet(p, self.num_classes)
        self.cond.load_state_dict(torch.load(model_dir / "ddpm_cond.pt", weights_only=True))
        self.supervised = copy.deepcopy(self.backbone)
        self.supervised.load_state_dict(torch.load(model_dir / "supervised.pt", weights_only=True))
        experts = []
        for state in torch.load(model_dir / "experts.pt", weights_only=True):
            e = add_lora(self.backbone, p.ppap.rank, p.ppap.alpha)
            e.load_state_dict(state)
            experts.append(e)
        self.ppap = MultiExpert(experts, p.timesteps)
        for m in (self.uncond, self.cond, self.supervised, self.ppap):
            m.to(self.device).eval()

    @classmethod
    def from_stage(cls, params: Params, paths: Paths, device="cpu") -> "Parts":
        meta = json.loads((paths.prepared / "meta.json").read_text())
        return cls(params.diffusion, paths.model_dir(NAME), _backbone(paths, device), int(meta["image_size"]), device)

    def classifier(self, arm: str):
        return {"naive": lambda x, t: self.backbone(x), "supervised": lambda x, t: self.supervised(x),
                "ppap": self.ppap}[arm]

    @torch.no_grad()
    def sample(self, arm: str, labels: torch.Tensor, scale: float, seed: int, batch: int = 500) -> torch.Tensor:
        """Images (N, 1, S, S) in [-1, 1] for the requested `labels`, by DDIM at ddim_steps."""
        from embedlab.methods.diffusion.schedule import classifier_grad, ddim_sample

        gen = torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, len(labels), batch):
            y = labels[start:start + batch].to(self.device)
            shape = (len(y), 1, self.image_size, self.image_size)
            x_T = torch.randn(shape, generator=gen)
            if arm == "cfg":
                null = torch.full_like(y, self.num_classes)

                def model(x, t, y=y, null=null):
                    both = self.cond(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
                    c, u = both.chunk(2)
                    return (1 + scale) * c - scale * u

                out.append(ddim_sample(model, self.schedule, shape, self.p.ddim_steps, x_T=x_T, device=self.device).cpu())
            elif arm == "unguided":
                out.append(ddim_sample(self.uncond, self.schedule, shape, self.p.ddim_steps, x_T=x_T, device=self.device).cpu())
            else:
                grad = classifier_grad(self.classifier(arm), y)
                out.append(ddim_sample(self.uncond, self.schedule, shape, self.p.ddim_steps, x_T=x_T, grad_fn=grad,
                                       scale=scale, device=self.device).cpu())
        return torch.cat(out)


def requested_labels(num_classes: int, per_class: int) -> torch.Tensor:
    return torch.arange(num_classes).repeat_interleave(per_class)


def sweep(params: Params, paths: Paths, arms: list[str]) -> dict:
    """Phase 3: each arm's scale, chosen by the backbone on samples at SELECTION_SEED: the
    highest backbone accuracy on the requested class among scales whose backbone-feature FD
    to the val split stays within `fd_guard` x the unguided samples' FD."""
    from embedlab.evaluation import class_accuracy, predict
    from embedlab.evaluation.fid import frechet_distance

    p = params.diffusion
    parts = Parts.from_stage(params, paths)
    val, _, _ = _data(paths, "val")
    labels = requested_labels(parts.num_classes, p.sweep_per_class)
    unguided = parts.sample("unguided", labels, 0.0, SELECTION_SEED)
    fd_unguided = frechet_distance(val, unguided, parts.backbone)
    out = {}
    for arm in arms:
        rows = []
        for scale in (p.cfg_scales if arm == "cfg" else p.scales):
            t0 = time.perf_counter()
            images = parts.sample(arm, labels, scale, SELECTION_SEED)
            acc = class_accuracy(predict(parts.backbone, images)[0], labels)
            fd = frechet_distance(val, images, parts.backbone)
            rows.append({"scale": scale, "backbone_accuracy": round(acc, 4), "backbone_fd_val": round(fd, 2),
                         "seconds": round(time.perf_counter() - t0, 1)})
            np.save(paths.model_dir(NAME) / f"sweep_{arm}_{scale:g}.npy", ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy())
        allowed = [r for r in rows if r["backbone_fd_val"] <= p.fd_guard * fd_unguided] or rows
        best = max(allowed, key=lambda r: (r["backbone_accuracy"], -r["scale"]))
        out[arm] = {"chosen": best["scale"], "sweep": rows}
    out["_unguided_backbone_fd_val"] = round(fd_unguided, 2)
    return out


# ---- the stage -----------------------------------------------------------------------------

def _worker_init() -> None:
    torch.set_num_threads(1)


def _run_part(name: str, raw: dict, root: str, arg=None):
    from embedlab.params import parse_params

    params, paths = parse_params(raw), Paths(Path(root))
    if name == "ddpm":
        return train_ddpm(params, paths, conditional=arg)
    if name == "experts":
        return train_experts(params, paths, arg)
    if name == "supervised":
        return train_supervised(params, paths)
    if name == "sweep":
        return sweep(params, paths, arg)
    raise ValueError(name)


def train(params: Params, paths: Paths) -> None:
    from embedlab.training import resolve_device

    p = params.diffusion
    model_dir = paths.model_dir(NAME)
    model_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    raw, root = params.model_dump(by_alias=True), str(paths.root)
    # Phase 2 balances the two workers: the supervised run (shorter) then the later experts on
    # one, the earlier experts on the other.
    n = p.ppap.experts
    first = list(range(n - n // 2))
    rest = [i for i in range(n) if i not in first]
    phase_2 = [("experts", first), ("supervised", None)] + ([("experts", rest)] if rest else [])
    phases = [[("ddpm", False), ("ddpm", True)], phase_2,
              [("sweep", ["naive", "ppap"]), ("sweep", ["supervised", "cfg"])]]
    results: dict = {"seconds": {}, "scales": {}}
    parallel = resolve_device(params.trainer).type == "cpu" and p.workers > 1
    if parallel:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(min(2, p.workers), mp_context=mp.get_context("spawn"), initializer=_worker_init)
    try:
        for i, phase in enumerate(phases):
            t0 = time.perf_counter()
            if parallel:
                outs = [f.result() for f in [pool.submit(_run_part, n, raw, root, a) for n, a in phase]]
            else:
                outs = [_run_part(n, raw, root, a) for n, a in phase]
            for (name, _), out in zip(phase, outs):
                if name == "sweep":
                    results["scales"].update({k: v for k, v in out.items() if not k.startswith("_")})
                    results["unguided_backbone_fd_val"] = out["_unguided_backbone_fd_val"]
                else:
                    results["seconds"].update(out)
            if i == 1:
                collect_experts(model_dir, n)
            results["seconds"][f"phase_{i + 1}"] = round(time.perf_counter() - t0, 1)
    finally:
        if parallel:
            pool.shutdown(cancel_futures=True)
    results["seconds"]["train"] = round(time.perf_counter() - start, 1)
    results["config"] = p.model_dump()
    write_json_atomic(model_dir / "train.json", results)
    log_live(paths.dvclive(NAME), results)


def log_live(live_dir: Path, results: dict) -> None:
    """dvclive/diffusion/: the scale sweep (backbone accuracy and backbone FD to val per arm,
    one step per scale index) and the chosen scales."""
    from dvclive import Live

    with Live(str(live_dir), save_dvc_exp=False, dvcyaml=False, report=None) as live:
        live.summary["chosen_scale"] = {arm: v["chosen"] for arm, v in results["scales"].items()}
        length = max(len(v["sweep"]) for v in results["scales"].values())
        for i in range(length):
            live.step = i
            for arm, v in results["scales"].items():
                if i < len(v["sweep"]):
                    live.log_metric(f"sweep/{arm}/backbone_accuracy", v["sweep"][i]["backbone_accuracy"])
                    live.log_metric(f"sweep/{arm}/backbone_fd_val", v["sweep"][i]["backbone_fd_val"])


from embedlab.methods.diffusion.scoring import evaluate, export  # noqa: E402,F401  (the method interface)
