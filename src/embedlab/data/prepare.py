"""The `prepare` stage: resize, scale to [-1, 1], stratified split, manifest.

data/prepared/ holds
  images.npy     float32 (N, C, S, S) in [-1, 1]; C = 1 (grey) or 3 (RGB): `data.channels`, or
                 what the source has (the bundled digits: 1)
  labels.npy     int64 (N,)
  manifest.parquet  one row per image, same order: sample_id, label, split, source,
                 mean, std, min, max  (checked by `validate`)
  meta.json      num_classes, image_size, class_names, source, pixel_range,
                 ingest_problems (files the source could not read)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from embedlab.data.sources import IngestProblem, RawDataset, is_colour, load_source, to_gray, to_rgb
from embedlab.params import DataParams, ParamsError

SPLITS = ("train", "val", "test")


@dataclass
class PreparedData:
    images: np.ndarray  # (N, C, S, S) float32, C 1 or 3
    labels: np.ndarray  # (N,) int64
    manifest: pd.DataFrame
    meta: dict

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = (self.manifest["split"] == name).to_numpy()
        return self.images[mask], self.labels[mask]

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])


def harmonise(raw: RawDataset, channels: int | None) -> tuple[RawDataset, int]:
    """Every image with the same channel count: `channels` (1: colour to grey by luma; 3: grey
    repeated into RGB), or with None what the source has. A source of grey and colour images
    mixed, with channels None, keeps the majority kind and reports each image of the other kind
    as an ingest problem (validate then fails, naming them). channels 3 on a source with no
    colour image at all is refused before anything is written (ParamsError naming the key)."""
    colour = [is_colour(img) for img in raw.images]
    n_colour = sum(colour)
    if channels == 3 and raw.images and n_colour == 0:
        raise ParamsError(f"data.channels: 3, but {raw.source} has no colour image (all {len(raw.images)} are grey); "
                          "set data.channels: 1 or null")
    if channels is None:
        channels = 3 if 2 * n_colour > len(raw.images) else 1
        odd = [i for i, c in enumerate(colour) if c != (channels == 3)]
        if odd:
            kind, other = ("grey", "colour") if channels == 3 else ("colour", "grey")
            problems = [IngestProblem(raw.ids[i], f"a {kind} image among {len(raw.images) - len(odd)} {other} ones: "
                                                 f"set data.channels: {1 if channels == 3 else 3} to convert every image, "
                                                 f"or convert this file") for i in odd]
            dropped = set(odd)
            keep = [i for i in range(len(raw.images)) if i not in dropped]
            raw = replace(raw, images=[raw.images[i] for i in keep], labels=raw.labels[keep],
                          ids=[raw.ids[i] for i in keep], problems=raw.problems + problems)
    convert = to_rgb if channels == 3 else to_gray
    return replace(raw, images=[convert(img) for img in raw.images]), channels


def resize(images: list[np.ndarray], size: int, channels: int = 1) -> np.ndarray:
    """Antialiased bilinear resize of (H, W) grey or (H, W, 3) colour arrays of any sizes to
    (N, channels, size, size) float32, each channel alone.

    NaN stays NaN, so `validate` can point at the image it came from."""
    import torch
    import torch.nn.functional as F

    out = np.empty((len(images), channels, size, size), dtype=np.float32)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    for shape, idx in by_shape.items():
        stacked = np.stack([images[i] for i in idx])
        batch = torch.as_tensor(stacked if len(shape) == 2 else np.moveaxis(stacked, -1, 1), dtype=torch.float32)
        if len(shape) == 2:
            batch = batch[:, None]
        if shape[:2] != (size, size):
            batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[idx] = batch.numpy()
    return out


def infer_pixel_range(raw: RawDataset, declared: tuple[float, float] | None) -> tuple[float, float]:
    if declared is not None:
        return tuple(map(float, declared))
    if raw.pixel_range is not None:
        return raw.pixel_range
    if not raw.images:
        return (0.0, 1.0)
    lo = float(min(np.nanmin(img) for img in raw.images))
    hi = float(max(np.nanmax(img) for img in raw.images))
    return (lo, hi if hi > lo else lo + 1.0)


def scale(images: np.ndarray, pixel_range: tuple[float, float]) -> np.ndarray:
    lo, hi = pixel_range
    return ((images - lo) / (hi - lo) * 2.0 - 1.0).astype(np.float32)


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Per class: shuffle, then round(n * fraction) to test and to val, the rest to train.

    A class too small for a split is left out of it (not forced in), so `validate`
    reports it instead of the data silently leaking between splits."""
    rng = np.random.default_rng(seed)
    split = np.empty(len(labels), dtype=object)
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        split[idx[:n_test]] = "test"
        split[idx[n_test : n_test + n_val]] = "val"
        split[idx[n_test + n_val :]] = "train"
    return split.astype(str)


def build_manifest(images: np.ndarray, labels: np.ndarray, ids: list[str], split: np.ndarray, source: str) -> pd.DataFrame:
    flat = images.reshape(len(images), int(np.prod(images.shape[1:]))).astype(np.float64)
    with np.errstate(invalid="ignore"):
        stats = {
            "mean": flat.mean(axis=1) if len(flat) else np.zeros(0),
            "std": flat.std(axis=1) if len(flat) else np.zeros(0),
            "min": flat.min(axis=1) if len(flat) else np.zeros(0),
            "max": flat.max(axis=1) if len(flat) else np.zeros(0),
        }
    return pd.DataFrame(
        {
            "sample_id": pd.Series(ids, dtype=str),
            "label": pd.Series(labels, dtype="int64"),
            "split": pd.Series(split, dtype=str),
            "source": pd.Series([source] * len(ids), dtype=str),
            **{k: pd.Series(v, dtype="float64") for k, v in stats.items()},
        }
    )


def prepare_dataset(raw: RawDataset, params: DataParams) -> PreparedData:
    size = params.image_size
    raw, channels = harmonise(raw, params.channels)
    pixel_range = infer_pixel_range(raw, params.pixel_range)
    images = (scale(resize(raw.images, size, channels), pixel_range) if len(raw)
              else np.zeros((0, channels, size, size), np.float32))
    split = stratified_split(raw.labels, params.val_fraction, params.test_fraction, params.seed)
    manifest = build_manifest(images, raw.labels, raw.ids, split, raw.source)
    if params.num_classes is not None:
        num_classes = params.num_classes
    else:
        num_classes = int(raw.labels.max()) + 1 if len(raw.labels) else 0
        if raw.class_names is not None:
            num_classes = max(num_classes, len(raw.class_names))
    meta = {
        "source": raw.source,
        "image_size": size,
        "num_classes": num_classes,
        "class_names": raw.class_names or [str(c) for c in range(num_classes)],
        "pixel_range": list(pixel_range),
        "num_samples": len(raw),
        "ingest_problems": [p.as_dict() for p in raw.problems],
    }
    return PreparedData(images, raw.labels.astype(np.int64), manifest, meta)


def write_prepared(data: PreparedData, out_dir: Path) -> None:
    """Write all four files into a sibling temp dir, then swap it in: never half-written."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        np.save(tmp / "images.npy", data.images)
        np.save(tmp / "labels.npy", data.labels)
        data.manifest.to_parquet(tmp / "manifest.parquet", index=False)
        (tmp / "meta.json").write_text(json.dumps(data.meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_prepared(in_dir: Path) -> PreparedData:
    in_dir = Path(in_dir)
    missing = [f for f in ("images.npy", "labels.npy", "manifest.parquet", "meta.json") if not (in_dir / f).exists()]
    if missing:
        raise FileNotFoundError(f"{in_dir}: missing {missing}; run `embedlab prepare` (or `dvc repro prepare`) first")
    return PreparedData(
        np.load(in_dir / "images.npy", allow_pickle=False),
        np.load(in_dir / "labels.npy", allow_pickle=False),
        pd.read_parquet(in_dir / "manifest.parquet"),
        json.loads((in_dir / "meta.json").read_text()),
    )


def run_prepare(params: DataParams, out_dir: Path, root: Path = Path("."), log=print) -> PreparedData:
    raw = load_source(params.source, root)
    for note in raw.notes:  # conversions done on the way in (RGBA -> RGB, ...)
        log(f"converted: {note}")
    data = prepare_dataset(raw, params)
    write_prepared(data, out_dir)
    return data
