"""The runs of the federated stage: what each (setting, algorithm, size or alpha, seed) job is,
the clients and configuration it trains with, and the trained runs on disk. Shared by the stage
(method.py) and the scoring (scoring.py), which import it and never each other."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from embedlab.io import load_tensors
from embedlab.params import Params
from embedlab.paths import Paths

NAME = "federated"
PRIMARY_METRIC = "published.accuracy"  # the published feature-shift variant, test accuracy
FS_ALGOS_HEAD = ("fedavg_head", "ggeur")
LS_ALGOS = ("fedavg", "fedavg_ggeur", "fedprox", "fedprox_ggeur")


@dataclass(frozen=True)
class Job:
    setting: str  # feature_shift | label_skew | label_skew_alpha<a>
    algorithm: str
    seed: int
    size: int = 0  # feature_shift: samples per client

    @property
    def key(self) -> str:
        return f"{self.setting}/{self.algorithm}/n{self.size}/s{self.seed}"


def label_skew_settings(params: Params) -> dict[str, float]:
    from embedlab.data.partition import label_skew_setting

    ls = params.partition.label_skew
    return {"label_skew": ls.alpha, **{label_skew_setting(a): a for a in ls.extra_alphas}}


def planned_jobs(params: Params) -> list[Job]:
    f = params.federated
    fs = f.feature_shift
    jobs = [Job("feature_shift", a, s, n) for n in fs.sizes for a in fs.algorithms for s in f.seeds]
    jobs += [Job("feature_shift", a, s, n) for n in fs.sizes for a in FS_ALGOS_HEAD for s in f.seeds]
    jobs += [Job(setting, a, s) for setting in label_skew_settings(params) for a in LS_ALGOS for s in f.seeds]
    return jobs


# ---- one run ------------------------------------------------------------------------------

_CACHE: dict = {}


def _data(root: Path, setting: str, num_classes: int):
    """(partition arrays, backbone features per split) for a setting, cached per process."""
    key = (str(root), setting)
    if key not in _CACHE:
        from embedlab.classifier import load_classifier
        from embedlab.data.partition import load_partition
        from embedlab.methods.federated.clients import embed

        arrays = load_partition(Paths(root).partitions, setting)
        backbone = load_classifier(Paths(root).model_dir("backbone"))
        if backbone.head.out_features != num_classes:
            raise ValueError(f"models/backbone has {backbone.head.out_features} classes, the partition {num_classes}")
        features = {s: embed(backbone, arrays[f"{s}_images"]) for s in ("train", "val", "test")}
        _CACHE[key] = (arrays, features)
    return _CACHE[key]


def run_config(params: Params, job: Job, num_classes: int, image_size: int):
    from embedlab.methods.federated.engine import RunConfig

    f = params.federated
    train = f.feature_shift if job.setting == "feature_shift" else f.label_skew
    algorithm = job.algorithm.replace("_ggeur", "").replace("_head", "")
    if algorithm == "ggeur":
        algorithm = "fedavg"
    head = job.setting != "feature_shift" or job.algorithm in FS_ALGOS_HEAD
    if head:
        model = {"kind": "head", "embedding_dim": None, "num_classes": num_classes}
    else:
        model = {"kind": "cnn", "image_size": image_size, "num_classes": num_classes,
                 "width": f.feature_shift.width, "embedding_dim": f.feature_shift.embedding_dim}
    rounds = f.feature_shift.ggeur_rounds if (job.setting == "feature_shift" and head) else train.rounds
    return RunConfig(
        algorithm=algorithm, seed=job.seed, rounds=rounds, local_steps=train.local_steps,
        batch_size=train.batch_size, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay,
        mu=train.fedprox_mu if algorithm == "fedprox" else 0.0, model=model,
        fraug=f.fraug.model_dump() if algorithm == "fraug" else None,
    )


def job_clients(params: Params, root: Path, job: Job, eval_split: str, num_classes: int):
    """The clients a run trains on (eval on `eval_split`), and the bytes GGEUR's statistics cost."""
    from embedlab.methods.federated.clients import (
        embedding_clients,
        feature_shift_clients,
        feature_shift_subsets,
        ggeur_augment,
    )

    arrays, features = _data(root, job.setting, num_classes)
    source = Paths(root).partitions / f"{job.setting}.npz"
    if job.setting == "feature_shift":
        if job.algorithm not in FS_ALGOS_HEAD:
            return feature_shift_clients(arrays, job.size, job.seed, eval_split, source), 0
        # The same subsampled rows as the CNN runs of this seed, as backbone embeddings.
        clients = embedding_clients(arrays, features, eval_split)
        for c, keep in zip(clients, feature_shift_subsets(arrays, job.size, job.seed, source)):
            keep = torch.from_numpy(keep)
            c.x_train, c.y_train, c.num_samples = c.x_train[keep], c.y_train[keep], len(keep)
    else:
        clients = embedding_clients(arrays, features, eval_split)
    if "ggeur" in job.algorithm:
        return ggeur_augment(clients, num_classes, params.federated.ggeur, job.seed,
                             prototypes=job.setting == "feature_shift")
    return clients, 0


def load_runs(model_dir: Path) -> tuple[dict, dict]:
    """(runs.json, {key: stacked states}) of a trained stage."""
    info = json.loads((model_dir / "runs.json").read_text())
    states = load_tensors(model_dir / "runs.safetensors")
    return info, states
