"""The trained parts of one diffusion training seed, and how an arm samples from them: shared by
the train stage (method.py) and the scoring (scoring.py), which import it and never each other."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from embedlab.classifiers.nets import load_classifier
from embedlab.io import load_tensors
from embedlab.methods.diffusion.experts import MultiExpert
from embedlab.methods.diffusion.given import build_unet, load_ddpm, schedule_of
from embedlab.methods.diffusion.lora import add_lora
from embedlab.methods.diffusion.schedule import classifier_grad, ddim_sample
from embedlab.params import Params
from embedlab.paths import Paths

NAME = "diffusion"
PRIMARY_METRIC = "published.guided_accuracy"  # the published seed's PPAP, guided accuracy
GUIDED = ("naive", "supervised", "ppap", "cfg")


def seed_dir(paths: Paths, seed: int) -> Path:
    return paths.model_dir(NAME) / f"seed{seed}"


def _backbone(paths: Paths, device="cpu"):
    return load_classifier(paths.model_dir("backbone"), device).eval()


class Parts:
    """Every trained part of one training seed, with the given DDPM they guide (`ddpm`: its UNet
    and params, from models/ddpm or a bundle's copy), loaded for sampling: from a stage's seed
    folder, or from a downloaded registry bundle (`scoring.load_bundle`). The cfg arm exists where
    the conditional DDPM was trained (`cfg_seeds`)."""

    def __init__(self, p, model_dir: Path, backbone: torch.nn.Module, image_size: int, ddpm: tuple, device="cpu"):
        import copy

        self.p, self.device = p, torch.device(device)
        self.uncond, d = ddpm
        self.schedule = schedule_of(d)  # the given DDPM's: the experts' ranges and the cfg DDPM follow it
        self.backbone = backbone.to(self.device).eval()
        self.num_classes = int(self.backbone.head.out_features)
        self.image_size = image_size
        model_dir = Path(model_dir)
        self.cond = None
        if (model_dir / "ddpm_cond.safetensors").exists():
            self.cond = build_unet(d, self.num_classes, self.uncond.stem.in_channels)
            self.cond.load_state_dict(load_tensors(model_dir / "ddpm_cond.safetensors"))
        supervised = []
        for state in load_tensors(model_dir / "supervised.safetensors"):
            net = copy.deepcopy(self.backbone)
            net.load_state_dict(state)
            supervised.append(net)
        self.supervised = MultiExpert(supervised, d.timesteps)
        experts = []
        for state in load_tensors(model_dir / "experts.safetensors"):
            e = add_lora(self.backbone, p.ppap.rank, p.ppap.alpha)
            e.load_state_dict(state)
            experts.append(e)
        self.ppap = MultiExpert(experts, d.timesteps)
        for m in (self.uncond, self.cond, self.supervised, self.ppap):
            if m is not None:
                m.to(self.device).eval()

    @property
    def arms(self) -> tuple[str, ...]:
        return ("unguided",) + tuple(a for a in GUIDED if a != "cfg" or self.cond is not None)

    @classmethod
    def from_stage(cls, params: Params, paths: Paths, seed: int, device="cpu") -> Parts:
        meta = json.loads((paths.prepared / "meta.json").read_text())
        return cls(params.diffusion, seed_dir(paths, seed), _backbone(paths, device), int(meta["image_size"]),
                   load_ddpm(paths.model_dir("ddpm"), device), device)

    def classifier(self, arm: str):
        return {"naive": lambda x, t: self.backbone(x), "supervised": self.supervised, "ppap": self.ppap}[arm]

    @torch.no_grad()
    def sample(self, arm: str, labels: torch.Tensor, scale: float, seed: int, batch: int = 500) -> torch.Tensor:
        """Images (N, C, S, S) in [-1, 1] for the requested `labels`, by DDIM at ddim_steps."""
        if arm == "cfg" and self.cond is None:
            raise ValueError("the cfg arm needs the conditional DDPM, trained only for diffusion.cfg_seeds")
        gen = torch.Generator().manual_seed(seed)
        out = []
        steps, clip = self.p.ddim_steps, self.p.ddim_clip
        for start in range(0, len(labels), batch):
            y = labels[start:start + batch].to(self.device)
            shape = (len(y), self.uncond.stem.in_channels, self.image_size, self.image_size)
            x_T = torch.randn(shape, generator=gen)
            if arm == "cfg":
                null = torch.full_like(y, self.num_classes)

                def model(x, t, y=y, null=null):
                    both = self.cond(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
                    c, u = both.chunk(2)
                    return (1 + scale) * c - scale * u

                out.append(ddim_sample(model, self.schedule, shape, steps, x_T=x_T, device=self.device, clip=clip).cpu())
            elif arm == "unguided":
                out.append(ddim_sample(self.uncond, self.schedule, shape, steps, x_T=x_T, device=self.device,
                                       clip=clip).cpu())
            else:
                grad = classifier_grad(self.classifier(arm), y)
                out.append(ddim_sample(self.uncond, self.schedule, shape, steps, x_T=x_T, grad_fn=grad,
                                       scale=scale, device=self.device, clip=clip).cpu())
        return torch.cat(out)


def requested_labels(num_classes: int, per_class: int) -> torch.Tensor:
    return torch.arange(num_classes).repeat_interleave(per_class)
