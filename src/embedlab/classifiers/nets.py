"""The two classifiers every method leans on, and their weights-only storage.

- EvaluatorNet: a plain VGG-style CNN. It only *scores* (class probabilities,
  penultimate features for Fréchet distance, mode counts).
- BackboneNet: a small BatchNorm ResNet, a different architecture on purpose:
  the "off-the-shelf" classifier that methods may guide with, distil from or
  embed with. It never scores anything.

Both map (N, C, S, S) images in [-1, 1] (C = `channels`: 1 grey, 3 colour) to logits and
expose `features(x)`.
Stored as model.safetensors + config.json: loading never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from embedlab.io import load_weights, save_weights


class EvaluatorNet(nn.Module):
    def __init__(self, num_classes: int = 10, image_size: int = 16, width: int = 32, feature_dim: int = 128, dropout: float = 0.3,
                 channels: int = 1):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.conv = nn.Sequential(block(channels, width), block(width, 2 * width))
        spatial = image_size // 4
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * spatial * spatial, feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)
        self.num_features = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(h)) + self.skip(x))


class BackboneNet(nn.Module):
    def __init__(self, num_classes: int = 10, image_size: int = 16, width: int = 16, feature_dim: int = 64, dropout: float = 0.0,
                 channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(ResBlock(width, width), ResBlock(width, 2 * width, 2), ResBlock(2 * width, 4 * width, 2))
        self.embed = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)
        self.num_features = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


ARCHITECTURES = {"evaluator": EvaluatorNet, "backbone": BackboneNet}


def build_classifier(arch: str, **kwargs) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown classifier architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**kwargs)


def save_classifier(net: nn.Module, arch: str, kwargs: dict, model_dir: Path, extra: dict | None = None) -> None:
    model_dir = Path(model_dir)
    save_weights(net, model_dir / "model.safetensors")
    config = {"arch": arch, "kwargs": kwargs, **(extra or {})}
    (model_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_classifier(model_dir: Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild from config.json and load safetensors weights; eval mode, grads off."""
    model_dir = Path(model_dir)
    for name in ("config.json", "model.safetensors"):
        if not (model_dir / name).exists():
            raise FileNotFoundError(f"{model_dir / name}: missing; train it first "
                                    f"(`dvc repro reference@{model_dir.name}`; the committed weights are in git)")
    config = json.loads((model_dir / "config.json").read_text())
    net = build_classifier(config["arch"], **config["kwargs"])
    return load_weights(net, model_dir / "model.safetensors", device).requires_grad_(False)
