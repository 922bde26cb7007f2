"""The `partition` stage: federated client datasets for the federated method.

Two settings, each written to data/partitions/<setting>.npz with arrays
`{split}_images`, `{split}_labels`, `{split}_client` for split in train/val/test
and `client_names`:

- feature_shift: one client per domain (embedlab.data.domains): the source images
  pooled over the prepared splits, dealt out in stratified shards (one per
  source-derived domain), each shard transformed and split per class into train /
  val / test (`synth` renders its own). All clients share one label distribution
  and differ only in how their images look; reports/partition/domains.png shows them.
- label_skew: Dirichlet(alpha) class proportions over K clients (and one more file,
  label_skew_alpha<a>.npz, per entry of `label_skew.extra_alphas`). Each sample is
  sent to a client drawn from its own class's proportions (not a cumulative-sum
  cut that hands the last client the leftovers); val/test use the same
  proportions, so every client is scored on data shaped like its own.

Per-client sizes and label histograms go to reports/partition/summary.json,
checked by a pandera schema before anything is written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from embedlab.data.domains import COLOUR_ONLY, DOMAINS, GENERATED, GREY_ONLY, apply_domain, auto_domains, generate_domain, is_digit_source
from embedlab.data.domains import domain_statistics as image_statistics
from embedlab.data.prepare import SPLITS, PreparedData
from embedlab.params import LabelSkewParams, PartitionParams


class PartitionError(RuntimeError):
    """A partition that breaks its contract (an empty client, a bad report)."""


def stratified_shards(labels: np.ndarray, num_shards: int, rng: np.random.Generator) -> np.ndarray:
    """Client id per sample: each class dealt round-robin over shards after a shuffle."""
    client = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        # Rotate the starting shard per class so no shard collects every class's remainder.
        client[idx] = (np.arange(len(idx)) + offset) % num_shards
        offset += len(idx)
    return client


def dirichlet_proportions(num_classes: int, num_clients: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """(num_classes, num_clients): row c is class c's share for each client."""
    return rng.dirichlet(np.full(num_clients, alpha), size=num_classes)


def assign_by_proportions(labels: np.ndarray, proportions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each sample independently goes to a client drawn from its class's proportions."""
    client = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        client[idx] = rng.choice(proportions.shape[1], size=len(idx), p=proportions[label])
    return client


def dirichlet_partition(
    labels: np.ndarray, num_classes: int, cfg: LabelSkewParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Redraw the proportions until every client has at least min_client_size samples."""
    for _ in range(cfg.max_retries):
        proportions = dirichlet_proportions(num_classes, cfg.num_clients, cfg.alpha, rng)
        client = assign_by_proportions(labels, proportions, rng)
        if np.bincount(client, minlength=cfg.num_clients).min() >= cfg.min_client_size:
            return client, proportions
    raise PartitionError(
        f"partition.label_skew: no Dirichlet(alpha={cfg.alpha}) draw in {cfg.max_retries} tries gave all "
        f"{cfg.num_clients} clients >= min_client_size={cfg.min_client_size} of {len(labels)} train samples; "
        "raise alpha, lower num_clients or min_client_size"
    )


def _histogram(labels: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(labels, minlength=num_classes)[:num_classes].astype(int).tolist()


def split_per_class(labels: np.ndarray, counts: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """0 (train), 1 (val) or 2 (test) per sample: `counts` = (train, val) of each class, drawn
    at random; the rest of the class is test."""
    split = np.full(len(labels), 2, dtype=np.int64)
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        split[idx[:counts[0]]] = 0
        split[idx[counts[0]:counts[0] + counts[1]]] = 1
    return split


def resolve_domains(data: PreparedData, params: PartitionParams) -> tuple[tuple[str, ...], str]:
    """(the feature-shift domains, how they were chosen): `auto` picks by the source
    (`embedlab.data.domains.auto_domains`), a list is taken as given."""
    domains = params.feature_shift.domains
    if domains != "auto":
        return tuple(domains), "partition.feature_shift.domains as listed"
    chosen, why = auto_domains(data.meta.get("class_names") or [], data.num_classes, data.channels)
    return chosen, f"auto: {why}"


def feature_shift(data: PreparedData, params: PartitionParams) -> dict[str, np.ndarray]:
    """One client per domain. Source-derived domains share the source images, pooled over the
    prepared splits and dealt out stratified (no image serves two domains, nor two splits);
    `synth` renders its own, as many as its splits take."""
    fs = params.feature_shift
    domains = list(resolve_domains(data, params)[0])
    rng = np.random.default_rng(params.seed)
    images = np.concatenate([data.split(s)[0] for s in SPLITS])
    labels = np.concatenate([data.split(s)[1] for s in SPLITS])
    derived = [d for d in domains if d not in GENERATED]
    shard = stratified_shards(labels, max(len(derived), 1), rng)
    classes = np.arange(data.num_classes)
    grey_only = [d for d in domains if d in GREY_ONLY]
    if data.channels == 3 and grey_only:
        raise PartitionError(
            f"partition.feature_shift.domains: {grey_only} make grey images (the digit-dataset look-alikes), but "
            f"data/prepared holds colour images (3 channels); for a colour source keep the transforms of its own "
            f"images ({', '.join(d for d in DOMAINS if d not in GREY_ONLY)}), or set data.channels: 1")
    colour_only = [d for d in domains if d in COLOUR_ONLY]
    if data.channels == 1 and colour_only:
        raise PartitionError(
            f"partition.feature_shift.domains: {colour_only} shift colours, but data/prepared holds grey images "
            f"(1 channel), where they change nothing; drop them or use auto")
    if any(d in GENERATED for d in domains):
        names = data.meta.get("class_names") or []
        if not is_digit_source(names, data.num_classes):
            raise PartitionError(
                f"partition.feature_shift.domains: 'synth' renders the digits 0-9, but the source's classes are "
                f"{names[:12]}; drop 'synth' for a source that is not digits")
    need = fs.train_per_class + fs.val_per_class + 1
    parts = {split: {"images": [], "labels": [], "client": []} for split in SPLITS}
    for k, domain in enumerate(domains):
        seed = params.seed * 1000 + k
        if domain in GENERATED:
            own = np.repeat(classes, fs.train_per_class + fs.val_per_class + fs.synth_test_per_class)
            own_images = generate_domain(domain, own, images.shape[-1], seed)
        else:
            mask = shard == derived.index(domain)
            own = labels[mask]
            short = [int(c) for c in classes if (own == c).sum() < need]
            if short:
                raise PartitionError(
                    f"partition.feature_shift: domain {domain!r} holds {int(mask.sum())} source images "
                    f"({len(derived)} domains share {len(labels)}), fewer than train_per_class + val_per_class + 1 "
                    f"= {need} for classes {short}; lower train_per_class / val_per_class or use fewer domains")
            own_images = apply_domain(domain, images[mask], seed=seed)
        split = split_per_class(own, (fs.train_per_class, fs.val_per_class), np.random.default_rng(seed))
        for s, name in enumerate(SPLITS):
            parts[name]["images"].append(own_images[split == s].astype(np.float32))
            parts[name]["labels"].append(own[split == s])
            parts[name]["client"].append(np.full((split == s).sum(), k, dtype=np.int64))
    arrays: dict[str, np.ndarray] = {"client_names": np.asarray(domains)}
    for name, part in parts.items():
        for key, values in part.items():
            arrays[f"{name}_{key}"] = np.concatenate(values)
    return arrays


def domain_statistics(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per feature-shift client (domain), its images' mean, std and edge energy, over all splits."""
    out = {}
    for k, name in enumerate(arrays["client_names"]):
        images = np.concatenate([arrays[f"{s}_images"][arrays[f"{s}_client"] == k] for s in SPLITS])
        out[str(name)] = {key: round(value, 4) for key, value in image_statistics(images).items()}
    return out


def plot_domains(arrays: dict[str, np.ndarray], num_classes: int, out: Path, per_class: int = 2) -> None:
    """reports/partition/domains.png: train images of every domain, a row each, by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(n) for n in arrays["client_names"]]
    cols = num_classes * per_class
    fig, axes = plt.subplots(len(names), cols, figsize=(0.55 * cols, 0.62 * len(names) + 0.3), squeeze=False)
    for k, name in enumerate(names):
        mine = arrays["train_client"] == k
        for c in range(num_classes):
            picks = np.flatnonzero(mine & (arrays["train_labels"] == c))[:per_class]
            for j in range(per_class):
                ax = axes[k, c * per_class + j]
                if j < len(picks):
                    image = arrays["train_images"][picks[j]]
                    if len(image) == 3:  # colour: (3, S, S) in [-1, 1] -> (S, S, 3) in [0, 1]
                        ax.imshow(np.clip((image.transpose(1, 2, 0) + 1) / 2, 0, 1))
                    else:
                        ax.imshow(image[0], cmap="gray", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
        axes[k, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("feature-shift clients: train images by class (partition.feature_shift.domains)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def label_skew_setting(alpha: float) -> str:
    """The setting (file) name of a label-skew split: `label_skew` for the default alpha."""
    return f"label_skew_alpha{alpha:g}"


def label_skew(data: PreparedData, params: PartitionParams, alpha: float | None = None) -> dict[str, np.ndarray]:
    cfg = params.label_skew
    if alpha is not None:
        cfg = cfg.model_copy(update={"alpha": alpha})
    rng = np.random.default_rng(params.seed)
    train_images, train_labels = data.split("train")
    client, proportions = dirichlet_partition(train_labels, data.num_classes, cfg, rng)
    arrays: dict[str, np.ndarray] = {
        "client_names": np.asarray([f"client_{k}" for k in range(cfg.num_clients)]),
        "proportions": proportions,
        "train_images": train_images,
        "train_labels": train_labels,
        "train_client": client,
    }
    for split in ("val", "test"):
        images, labels = data.split(split)
        arrays.update(
            {
                f"{split}_images": images,
                f"{split}_labels": labels,
                f"{split}_client": assign_by_proportions(labels, proportions, rng),
            }
        )
    return arrays


def report_table(setting: str, arrays: dict[str, np.ndarray], num_classes: int) -> pd.DataFrame:
    """Long table: one row per (setting, client, split, label) with its count."""
    rows = []
    for k, name in enumerate(arrays["client_names"]):
        for split in SPLITS:
            labels = arrays[f"{split}_labels"][arrays[f"{split}_client"] == k]
            for label, count in enumerate(_histogram(labels, num_classes)):
                rows.append((setting, k, str(name), split, label, count))
    return pd.DataFrame(rows, columns=["setting", "client", "client_name", "split", "label", "count"]).astype(
        {"client": "int64", "label": "int64", "count": "int64"}
    )


def check_report(table: pd.DataFrame, num_classes: int, min_train: dict[str, int]) -> pd.DataFrame:
    import pandera.errors

    from embedlab.data.schemas import partition_report_schema

    try:
        partition_report_schema(num_classes).validate(table, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases[["check", "column", "failure_case"]].head(10).to_string(index=False)
        raise PartitionError(f"partition report fails its schema:\n{cases}") from None
    train = table[table.split == "train"].groupby(["setting", "client_name"])["count"].sum()
    short = [f"{s}/{c}: {n} train samples (< {min_train[s]})" for (s, c), n in train.items() if n < min_train[s]]
    if short:
        raise PartitionError("partition leaves clients too small: " + "; ".join(short))
    return table


def summarise(table: pd.DataFrame) -> dict:
    summary: dict = {}
    for (setting, client, name), rows in table.groupby(["setting", "client", "client_name"], sort=True):
        entry = {"client": int(client), "name": name}
        for split, split_rows in rows.groupby("split"):
            hist = split_rows.sort_values("label")["count"].tolist()
            entry[f"{split}_size"] = int(sum(hist))
            entry[f"{split}_histogram"] = hist
        summary.setdefault(setting, {"clients": []})["clients"].append(entry)
    return summary


def plot_histograms(table: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted(table.setting.unique())
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 3.2), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        train = table[(table.setting == setting) & (table.split == "train")]
        grid = train.pivot_table(index="client_name", columns="label", values="count", sort=False)
        im = ax.imshow(grid.to_numpy(), cmap="viridis", aspect="auto")
        ax.set_yticks(range(len(grid.index)), grid.index)
        ax.set_xticks(range(len(grid.columns)), grid.columns)
        ax.set_xlabel("label")
        ax.set_title(f"{setting}: train samples per client")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run_partition(data: PreparedData, params: PartitionParams, out_dir: Path, report_dir: Path) -> dict:
    settings = {"feature_shift": feature_shift(data, params), "label_skew": label_skew(data, params)}
    for alpha in params.label_skew.extra_alphas:
        settings[label_skew_setting(alpha)] = label_skew(data, params, alpha)
    table = pd.concat([report_table(s, a, data.num_classes) for s, a in settings.items()], ignore_index=True)
    min_train = {s: params.label_skew.min_client_size for s in settings}
    check_report(table, data.num_classes, {**min_train, "feature_shift": 1})
    summary = summarise(table)
    summary["feature_shift"]["domains"] = domain_statistics(settings["feature_shift"])
    summary["feature_shift"]["domains_chosen"] = resolve_domains(data, params)[1]

    # Build both outputs beside their final place, then swap in: a failure leaves nothing half-written.
    staged = []
    for final in (Path(out_dir), Path(report_dir)):
        final.parent.mkdir(parents=True, exist_ok=True)
        staged.append((Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent)), final))
    try:
        (tmp_data, _), (tmp_report, _) = staged
        for setting, arrays in settings.items():
            np.savez_compressed(tmp_data / f"{setting}.npz", **arrays)
        (tmp_report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        table.to_csv(tmp_report / "clients.csv", index=False)
        plot_histograms(table, tmp_report / "label_histograms.png")
        plot_domains(settings["feature_shift"], data.num_classes, tmp_report / "domains.png")
        for tmp, final in staged:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                shutil.rmtree(tmp)
    return summary


def load_partition(partitions_dir: Path, setting: str) -> dict[str, np.ndarray]:
    path = Path(partitions_dir) / f"{setting}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run `embedlab partition` (or `dvc repro partition`) first")
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}
