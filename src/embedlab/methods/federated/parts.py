"""The runs of the federated stage: what each (setting, algorithm, size or alpha, seed) job is,
the clients and configuration it trains with, and the trained runs on disk. Shared by the stage
(method.py) and the scoring (scoring.py), which import it and never each other."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from embedlab.data.partition import label_skew_setting
from embedlab.embedders import SOURCES, build_embedding
from embedlab.io import load_tensors
from embedlab.methods.federated.clients import (
    Embedder,
    embedding_clients,
    feature_shift_clients,
    feature_shift_subsets,
    ggeur_augment,
    pooled,
)
from embedlab.methods.federated.engine import RunConfig
from embedlab.methods.federated.params import TUNED_ARMS
from embedlab.params import Params, parse_params
from embedlab.paths import Paths

NAME = "federated"
PRIMARY_METRIC = "published.accuracy"  # the published feature-shift variant, test accuracy
FS_ALGOS_HEAD = ("fedavg_head", "ggeur")
CENTRAL = "central"  # label skew: one client holding every client's rows (the ceiling FedAvg is held to)
TUNED = TUNED_ARMS  # the arms with a val budget (federated.tuning), in tuning order
BASE = {"fraug": "fedbn"}  # FRAug tunes on top of FedBN's choice (the method it extends)


def tuned_arms(params: Params) -> list[str]:
    """The tuned arms this run trains (feature_shift.algorithms), in TUNED order."""
    return [a for a in TUNED if a in params.federated.feature_shift.algorithms]


def base_of(arm: str, arms: list[str]) -> str:
    """The arm whose choice `arm` tunes on top of ("" for none)."""
    base = BASE.get(arm, "")
    return base if base in arms else ""


@dataclass(frozen=True)
class Job:
    setting: str  # feature_shift | label_skew | label_skew_alpha<a>
    algorithm: str
    seed: int
    size: int = 0  # feature_shift: samples per client
    config: int = -1  # a tuning run: index into federated.tuning.<algorithm>; -1: a scored run

    @property
    def key(self) -> str:
        key = f"{self.setting}/{self.algorithm}/n{self.size}/s{self.seed}"
        return key if self.config < 0 else f"tuning/{key}/c{self.config}"


def label_skew_settings(params: Params) -> dict[str, float]:
    ls = params.partition.label_skew
    return {"label_skew": ls.alpha, **{label_skew_setting(a): a for a in ls.extra_alphas}}


def planned_jobs(params: Params) -> list[Job]:
    f = params.federated
    fs = f.feature_shift
    jobs = [Job("feature_shift", a, s, n) for n in fs.sizes for a in fs.algorithms for s in f.seeds]
    jobs += [Job("feature_shift", a, s, n) for n in fs.sizes for a in FS_ALGOS_HEAD for s in f.seeds]
    jobs += [Job(setting, a, s) for setting in label_skew_settings(params)
             for a in (CENTRAL, *f.label_skew.algorithms) for s in f.seeds]
    return jobs


def tuning_jobs(params: Params, arm: str) -> list[Job]:
    """The val-budget runs of one tuned arm: each configuration on each selection seed, at the
    default feature-shift size."""
    f = params.federated
    size = f.feature_shift.samples_per_client
    return [Job("feature_shift", arm, s, size, config=i) for i in range(len(getattr(f.tuning, arm))) for s in f.tuning.seeds]


def apply_choice(params: Params, arm: str, config: dict) -> Params:
    """`params` with one tuned configuration in place: a CNN arm's keys set the feature-shift
    training section its runs train with, fraug's its own section."""
    raw = params.model_dump(by_alias=True)
    section = raw["federated"]["fraug" if arm == "fraug" else "feature_shift"]
    section.update(config)
    return parse_params(raw)


# ---- one run ------------------------------------------------------------------------------

_CACHE: dict = {}


EMBEDDING_DIR = "embedding"  # models/federated/embedding: the frozen embedder's files, copied by train


def copy_embedder(params: Params, root: Path) -> Path:
    """Copy the frozen network the linear-head runs classify (federated.embedding) into
    models/federated/embedding/, so every run, the scoring and the published bundle read that
    copy (evaluate@federated then depends on models/federated alone):
    `vq`: the given vq tokenizer, models/tokenizer (trained on images alone: no label shaped it);
    `backbone`: the supervised classifier (trained with the labels of the clients' images)."""
    import shutil

    e = params.federated.embedding
    paths = Paths(root)
    source = SOURCES[e.source]
    folder, names = paths.model_dir(source.model), ("config.json", source.weights)
    missing = [str(folder / n) for n in names if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"federated.embedding (source {e.source}): {', '.join(missing)} missing; {source.hint}")
    out = paths.model_dir(NAME) / EMBEDDING_DIR
    out.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(folder / n, out / n)
    (out / "source.json").write_text(json.dumps({**e.model_dump(), "from": str(folder.relative_to(paths.root))}))
    return out


def load_embedder(folder: Path, num_classes: int):
    """The frozen embedder copied by `copy_embedder`, batched (clients.Embedder)."""
    folder = Path(folder)
    if not (folder / "source.json").exists():
        raise FileNotFoundError(f"{folder / 'source.json'}: missing; run train@federated (it copies the embedder)")
    source = json.loads((folder / "source.json").read_text())["source"]
    weights = folder / SOURCES[source].weights
    module = build_embedding(source, json.loads((folder / "config.json").read_text()), weights)
    if source == "backbone" and module.net.head.out_features != num_classes:
        raise ValueError(f"{folder}: the backbone has {module.net.head.out_features} classes, the partition {num_classes}")
    return Embedder(module, module)


def _data(root: Path, setting: str, num_classes: int):
    """(partition arrays, frozen embeddings per split) for a setting, cached per process."""
    key = (str(root), setting)
    if key not in _CACHE:
        from embedlab.data.partition import load_partition

        arrays = load_partition(Paths(root).partitions, setting)
        embed = load_embedder(Paths(root).model_dir(NAME) / EMBEDDING_DIR, num_classes)
        _CACHE[key] = (arrays, {s: embed(arrays[f"{s}_images"]) for s in ("train", "val", "test")})
    return _CACHE[key]


def run_config(params: Params, job: Job, num_classes: int, image_size: int):
    if job.config >= 0:  # a tuning run: its configuration in place
        params = apply_choice(params, job.algorithm, getattr(params.federated.tuning, job.algorithm)[job.config])
    f = params.federated
    train = f.feature_shift if job.setting == "feature_shift" else f.label_skew
    algorithm = job.algorithm.replace("_ggeur", "").replace("_head", "")
    if algorithm in ("ggeur", CENTRAL):
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
    if job.setting == "feature_shift" and job.algorithm not in FS_ALGOS_HEAD:
        from embedlab.data.partition import load_partition

        arrays = load_partition(Paths(root).partitions, job.setting)
        source = Paths(root).partitions / f"{job.setting}.npz"
        return feature_shift_clients(arrays, job.size, job.seed, eval_split, source), 0
    arrays, features = _data(root, job.setting, num_classes)
    source = Paths(root).partitions / f"{job.setting}.npz"
    if job.setting == "feature_shift":
        # The same subsampled rows as the CNN runs of this seed, as frozen embeddings.
        clients = embedding_clients(arrays, features, eval_split)
        for c, keep in zip(clients, feature_shift_subsets(arrays, job.size, job.seed, source)):
            keep = torch.from_numpy(keep)
            c.x_train, c.y_train, c.num_samples = c.x_train[keep], c.y_train[keep], len(keep)
    else:
        clients = embedding_clients(arrays, features, eval_split)
    if job.algorithm == CENTRAL:
        return [pooled(clients)], 0
    if "ggeur" in job.algorithm:
        return ggeur_augment(clients, num_classes, params.federated.ggeur, job.seed,
                             prototypes=job.setting == "feature_shift")
    return clients, 0


def load_runs(model_dir: Path) -> tuple[dict, dict]:
    """(runs.json, {key: stacked states}) of a trained stage."""
    info = json.loads((model_dir / "runs.json").read_text())
    states = load_tensors(model_dir / "runs.safetensors")
    return info, states
