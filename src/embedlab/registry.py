"""MLflow model registry: publish with lineage, gate champion / challenger, load by alias.

A version is stored by MLflow's pytorch flavour as a `torch.export` program (`pt2`): the
graph is JSON and the weights raw tensor bytes, so no class has to be importable to load it.
The one pickled record in that archive (sample inputs) is dropped before torch reads it,
so `load_model` never runs an unpickler at all. mlflow and torch are imported inside the
functions: `import mlflow` alone costs seconds and light CLI stages must not pay it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import subprocess
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from embedlab.io import write_json_atomic
from embedlab.paths import Paths

if TYPE_CHECKING:
    import numpy as np
    import torch

    from embedlab.params import Params

CHAMPION, CHALLENGER = "champion", "challenger"
PREPARED_OUT = "data/prepared"
# Version tags the gate reads back, so comparing never has to load the champion's run.
METRIC_TAG, VALUE_TAG, DIRECTION_TAG = "primary_metric", "primary_metric_value", "higher_is_better"
# Records of a torch.export archive that are plain text, JSON or raw tensor bytes.
_PT2_TEXT = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_PT2_CONFIGS = {"models/model.json", "data/weights/model_weights_config.json",
                "data/constants/model_constants_config.json"}
_PT2_SAMPLE_INPUTS = "data/sample_inputs/model.pt"  # torch.save pickle: never handed to torch
_PT2_RAW = re.compile(r"data/(weights/weight_|constants/tensor_)\d+")
_MLFLOW_KEY = re.compile(r"[^\w.\- /:]")


@dataclass
class ModelBundle:
    module: torch.nn.Module
    input_example: np.ndarray
    primary_metric: str
    metrics: dict
    higher_is_better: bool = True
    params: dict = field(default_factory=dict)
    # Files beside the exported module (weights + config of parts torch.export cannot hold,
    # such as a sampler's prior), logged under the run's "bundle/" artifact folder.
    artifacts: list[Path] = field(default_factory=list)
    # Files made for the bundle alone, by name: a dict for "<name>.json", a tree of tensors for
    # "<name>.safetensors" (io.save_tensors). Written in a scratch folder while publishing,
    # so a stage's own outputs never change.
    files: dict[str, Any] = field(default_factory=dict)
    # Which variant this is (e.g. the algorithm and seed chosen on val) and why: the first line
    # of the version's model card.
    description: str = ""
    # The model card's last two sections: what the model is for, and where it stops.
    intended_use: str = ""
    limits: str = ""
    # A floor on what a user gets (e.g. the evaluator's confident share of a generator's samples
    # well above an untrained generator's): {"description", "value", "threshold", "met"}. A
    # version below it is registered, with the reason, but never becomes champion.
    quality: dict | None = None


class RegistryError(RuntimeError):
    """A model cannot be published or loaded as asked; the message says why."""


def _mlflow():
    # MLflow 3 starts a telemetry client at import that posts usage to the internet;
    # this project runs with no network, so switch it off unless the caller chose.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # noise in stage logs
    import mlflow

    return mlflow


def registered_name(name: str) -> str:
    return f"embedlab-{name}"


def tracking_uri(paths: Paths) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(paths.root / 'mlflow.db').resolve()}"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys, the way `dvc metrics diff` shows them."""
    if hasattr(tree, "model_dump"):
        tree = tree.model_dump()
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def git_commit(root: Path) -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def data_hash(paths: Paths) -> tuple[str, str]:
    """(hash, source) of the prepared data this model was trained on.

    dvc.lock is the identity DVC itself uses, so it is preferred; hashing the files is the
    fallback for runs outside `dvc repro` and is tagged as such, since the two never match.
    """
    try:
        lock = yaml.safe_load(paths.dvc_lock.read_text()) or {}
        for out in lock["stages"]["prepare"]["outs"]:
            if out["path"].rstrip("/") == PREPARED_OUT:
                return str(out["md5"]), "dvc.lock"
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        pass
    folder = paths.root / PREPARED_OUT
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if not files:
        return "unknown", "missing"
    digest = hashlib.md5()
    for file in files:
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        file_md5 = hashlib.md5()
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                file_md5.update(chunk)
        digest.update(file_md5.digest())
    return digest.hexdigest(), "files"


def _numeric_metrics(metrics: dict) -> dict[str, float]:
    flat = {}
    for key, value in flatten(metrics).items():
        if isinstance(value, (int, float)):  # bools too: a passed check logs as 1.0
            flat[_MLFLOW_KEY.sub("_", key)] = float(value)
    return flat


def _current_champion(client, model: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model, CHAMPION)
    except MlflowException as exc:
        # No registered model yet, or no champion alias on it: both mean "no champion".
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def gate(value: float, champion_value: float | None, higher_is_better: bool, min_delta: float,
         interval: tuple[float, float] | None = None) -> str:
    """Champion only when the newcomer beats the champion by more than min_delta and, when its
    score carries a 95% interval, the champion's value lies outside that interval on the losing
    side: a gain inside the newcomer's own noise keeps the champion."""
    if champion_value is None:
        return CHAMPION
    gain = value - champion_value if higher_is_better else champion_value - value
    if gain <= min_delta:
        return CHALLENGER
    if interval is not None:
        lo, hi = interval
        beyond_noise = champion_value < lo if higher_is_better else champion_value > hi
        if not beyond_noise:
            return CHALLENGER
    return CHAMPION


def primary_score(metrics: dict, key: str) -> tuple[float, tuple[float, float] | None]:
    """(value, 95% interval or None) of the dotted `key` in a metrics tree: a plain number or a
    score in the settled format (evaluation.intervals)."""
    from embedlab.evaluation.intervals import interval_of, is_score

    node: Any = metrics
    for part in [key] if key in metrics else key.split("."):
        if not isinstance(node, dict) or part not in node:
            flat = sorted(k for k, v in _numeric_metrics(metrics).items())
            raise RegistryError(f"primary metric {key!r} is not in the metrics (numeric keys: {flat})")
        node = node[part]
    if is_score(node):
        if node["value"] is None:
            raise RegistryError(f"primary metric {key} has no value")
        return float(node["value"]), interval_of(node)
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise RegistryError(f"primary metric {key!r} is {type(node).__name__}, not a number or a score")
    return float(node), None


def _experiment_id(client, name: str, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # MLflow's default artifact root is ./mlruns under whatever the cwd is; keep the
        # artifacts next to the database so the registry stays one movable folder.
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a concurrent publish
        return client.get_experiment_by_name(name).experiment_id


@contextmanager
def _global_tracking_uri(mlflow, uri: str):
    """log_model only speaks through MLflow's global client, and set_tracking_uri also
    exports MLFLOW_TRACKING_URI, which tracking_uri() obeys: left set, the next publish or
    load for another root would silently use this store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets both the global and the variable


def _export_ready(bundle: ModelBundle):
    import copy

    import numpy as np

    module = bundle.module
    if module.training or any(t.device.type != "cpu" for t in module.state_dict().values()):
        # Exporting in train mode would bake dropout / batch statistics into the graph, and
        # device-bound weights could not be loaded on a CPU host; fix a copy, not the caller's.
        module = copy.deepcopy(module).cpu().eval()
    example = np.ascontiguousarray(bundle.input_example, dtype=np.float32)
    if example.shape[0] == 1:
        # torch.export turns a size-1 dimension into a constant: a batch of one would give a
        # model that accepts nothing but batches of one.
        example = np.concatenate([example, example])
    return module, example


def _log_files(mlflow, files: dict[str, Any]) -> None:
    from embedlab.io import save_tensors

    with tempfile.TemporaryDirectory(prefix="embedlab-bundle-") as scratch:
        for name, content in files.items():
            target = Path(scratch) / name
            if name.endswith(".json"):
                target.write_text(json.dumps(content, indent=2) + "\n")
            elif name.endswith(".safetensors"):
                save_tensors(content, target)
            else:
                raise RegistryError(f"bundle file {name!r}: only .json and .safetensors are made here")
            mlflow.log_artifact(str(target), artifact_path="bundle")


def _score_text(node: Any) -> str:
    from embedlab.evaluation.intervals import is_score

    if is_score(node):
        lo, hi = node.get("lo"), node.get("hi")
        ci = f" [{lo:.6g}, {hi:.6g}]" if lo is not None and hi is not None else ""
        return f"{node['value']:.6g}{ci}" + (f" (n = {node['n']})" if node.get("n") is not None else "")
    return f"{node:.6g}" if isinstance(node, float) else str(node)


def model_card(name: str, bundle: ModelBundle, lineage: dict, value: float, interval, alias: str) -> str:
    """The markdown card of one registered version: what it is, data, params, metrics with their
    intervals, the claims' verdicts, the evaluator that read them, intended use and limits."""
    from embedlab.evaluation.intervals import is_score

    m = bundle.metrics
    ci = f" [{interval[0]:.6g}, {interval[1]:.6g}]" if interval is not None else ""
    lines = [f"# {registered_name(name)}", "", bundle.description or f"The `{name}` model of embedlab.", "",
             "## What it is",
             f"- registered program: a `torch.export` module (`registry.load_model(\"{name}\")`); "
             f"bundle files: {', '.join(sorted({Path(a).name for a in bundle.artifacts} | set(bundle.files))) or 'none'} "
             f"(`get_model(\"{name}\").load_bundle(registry.download_bundle(...))`)",
             f"- gated on `{bundle.primary_metric}` = {value:.6g}{ci} "
             f"({'higher' if bundle.higher_is_better else 'lower'} is better); alias at publish: `{alias}`",
             *([f"- quality floor: {bundle.quality['description']}: {bundle.quality['value']} against "
                f"{bundle.quality['threshold']}, **{'met' if bundle.quality['met'] else 'not met: never champion'}**"]
               if bundle.quality is not None else []),
             f"- git commit `{lineage['git_commit']}`", "",
             "## Data",
             f"- data hash `{lineage['data_hash']}` ({lineage['data_hash_source']})", ""]
    if bundle.params:
        lines += ["## Params", "", "```yaml", yaml.safe_dump(bundle.params, sort_keys=True).rstrip(), "```", ""]
    rows = []

    def walk(node: Any, prefix: str) -> None:
        if is_score(node) or isinstance(node, (int, float)) and not isinstance(node, bool):
            rows.append(f"| `{prefix}` | {_score_text(node)} |")
        elif isinstance(node, dict):
            for k, v in node.items():
                if k not in ("claims", "per_seed", "tuning", "training", "intervals", "evaluator", "weights"):
                    walk(v, f"{prefix}.{k}" if prefix else str(k))

    walk(m, "")
    if rows:
        lines += ["## Metrics (95% intervals where the pipeline has one)", "", "| metric | value |", "| --- | --- |",
                  *rows[:60], *(["| ... | see metrics/" + name + ".json |"] if len(rows) > 60 else []), ""]
    claims = m.get("claims") or {}
    if claims:
        lines += ["## Claims", "", "| claim | verdict | paired difference [95% CI] |", "| --- | --- | --- |"]
        for c in claims.values():
            d = c.get("difference", {})
            lines.append(f"| {c.get('claim', '')} | **{c.get('verdict', '')}** | {_score_text(d) if d else '-'} |")
        lines.append("")
    reader = m.get("evaluator") or m.get("weights")
    if reader:
        lines += ["## Read by", f"- evaluator weights sha256 `{reader.get('sha256', 'unknown')}`"
                  f"{' (' + reader['file'] + ')' if reader.get('file') else ''}", ""]
    lines += ["## Intended use", bundle.intended_use or "Research and teaching on small images; not for decisions "
              "about people.", "", "## Known limits", bundle.limits or "Trained and scored on the pipeline's data "
              "only; the scores above hold for that data, at the sample sizes stated.", ""]
    return "\n".join(lines)


def model_card_of(name: str, alias: str = CHAMPION, paths: Paths | None = None) -> str:
    """The model card of `embedlab-<name>@<alias>` (the version's description)."""
    _, _, _, found = _version_by_alias(name, alias, paths)
    return found.description or ""


def publish(name: str, bundle: ModelBundle, params: Params, paths: Paths) -> dict:
    mlflow = _mlflow()
    import torch
    from mlflow import MlflowClient

    metrics = _numeric_metrics(bundle.metrics)
    try:
        value, interval = primary_score(bundle.metrics, bundle.primary_metric)
    except RegistryError as exc:
        raise RegistryError(f"{name}: {exc}") from None
    if not math.isfinite(value):
        raise RegistryError(f"{name}: primary metric {bundle.primary_metric} is {value}")

    uri = tracking_uri(paths)
    client = MlflowClient(tracking_uri=uri)
    model = registered_name(name)
    commit = git_commit(paths.root)
    data_md5, data_source = data_hash(paths)
    lineage = {"embedlab.model": name, "git_commit": commit, "data_hash": data_md5,
               "data_hash_source": data_source, METRIC_TAG: bundle.primary_metric,
               DIRECTION_TAG: str(bundle.higher_is_better)}

    champion = _current_champion(client, model)
    champion_value = None
    if champion is not None and champion.tags.get(METRIC_TAG) == bundle.primary_metric and \
            champion.tags.get(DIRECTION_TAG) == str(bundle.higher_is_better):
        champion_value = float(champion.tags[VALUE_TAG])
    # A champion scored on another metric or direction cannot be compared: the newcomer,
    # measured the way the pipeline now measures, takes over.
    alias = gate(value, champion_value, bundle.higher_is_better, params.registry.min_delta,
                 interval if params.registry.gate_on_interval else None)
    if bundle.quality is not None and not bundle.quality["met"]:
        alias = CHALLENGER  # below the quality floor: registered, never champion

    module, example = _export_ready(bundle)
    experiment_id = _experiment_id(client, params.registry.experiment, uri)
    with _global_tracking_uri(mlflow, uri), \
            mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=lineage) as run:
        model_params = {_MLFLOW_KEY.sub("_", k): str(v)[:6000] for k, v in flatten(bundle.params).items()}
        if model_params:
            mlflow.log_params(model_params)
        mlflow.log_metrics(metrics)
        logged = mlflow.pytorch.log_model(
            module, name="model", input_example=example, serialization_format="pt2",
            registered_model_name=model,
            # Explicit requirements: MLflow's inference reloads the model in a subprocess
            # (slow); serving validation would reload it again, pickled sample inputs included.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
            validate_serving_input=False,
        )
        for artifact in bundle.artifacts:
            mlflow.log_artifact(str(artifact), artifact_path="bundle")
        _log_files(mlflow, bundle.files)
        version = str(logged.registered_model_version)
        tags = {**lineage, VALUE_TAG: repr(value), "run_id": run.info.run_id}
        if interval is not None:
            tags["primary_metric_interval"] = json.dumps([interval[0], interval[1]])
        card = model_card(name, bundle, lineage, value, interval, alias)
        mlflow.log_text(card, "model_card.md")
        client.update_model_version(model, version, description=card)
        for key, tag in tags.items():
            client.set_model_version_tag(model, version, key, tag)
        client.set_registered_model_alias(model, alias, version)

    receipt = {
        "name": model, "model": name, "version": int(version), "alias": alias, "metric": bundle.primary_metric,
        "value": value, "interval": list(interval) if interval is not None else None,
        "higher_is_better": bundle.higher_is_better,
        "gate_on_interval": params.registry.gate_on_interval,
        "min_delta": params.registry.min_delta,
        "previous_champion_value": champion_value,
        "previous_champion_version": int(champion.version) if champion is not None else None,
        "tracking_uri": uri, "git_commit": commit, "data_hash": data_md5,
        "data_hash_source": data_source, "run_id": run.info.run_id,
    }
    if bundle.quality is not None:
        receipt["quality"] = bundle.quality
    write_json_atomic(paths.receipt(name), receipt)
    return receipt


def _pickle_free_archive(archive: Path) -> io.BytesIO:
    """A copy of a pt2 archive that torch can load without unpickling anything.

    Every record must be text, JSON, or a raw tensor that its JSON config marks as such;
    anything else (pickled or custom weights, AOTInductor libraries, extra files) is refused.
    The sample inputs, the one pickle torch.export always writes, become an empty record,
    which torch reads as "no sample inputs".
    """
    out = io.BytesIO()
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        records = {info.filename: info for info in src.infolist() if not info.is_dir()}
        prefixes = {name.split("/", 1)[0] for name in records}
        if len(prefixes) != 1 or not all("/" in name for name in records):
            raise RegistryError(f"{archive}: not a torch.export archive")
        prefix = prefixes.pop() + "/"
        raw_allowed: set[str] = set()
        for config in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
            if prefix + config in records:
                entries = json.loads(src.read(prefix + config)).get("config", {})
                for entry in entries.values():
                    if entry.get("use_pickle") is not False:
                        raise RegistryError(f"{archive}: {config} stores a pickled tensor")
                    raw_allowed.add(f"{config.rsplit('/', 1)[0]}/{entry['path_name']}")
        for full, info in records.items():
            rel = full[len(prefix):]
            if rel == _PT2_SAMPLE_INPUTS:
                dst.writestr(full, b"")
                continue
            data = src.read(info)
            if rel in _PT2_CONFIGS:
                json.loads(data)  # must parse: a config or graph that is not JSON is not ours
            elif not (rel in _PT2_TEXT or (rel in raw_allowed and _PT2_RAW.fullmatch(rel))):
                raise RegistryError(f"{archive}: record {rel!r} is not plain data; refusing to load")
            dst.writestr(full, data)
    out.seek(0)
    return out


class LoadedModel:
    """A registry version, callable on a float32 batch (numpy or torch) like the module was."""

    def __init__(self, module, name: str, version: int, alias: str):
        self.module, self.name, self.version, self.alias = module, name, version, alias

    def __call__(self, batch):
        import numpy as np
        import torch

        if not isinstance(batch, torch.Tensor):
            batch = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            return self.module(batch)

    def __repr__(self) -> str:
        return f"LoadedModel({registered_name(self.name)} v{self.version} @{self.alias})"


@contextmanager
def _missing_is_registry_error(model: str, alias: str, uri: str):
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise RegistryError(f"{model}@{alias} not found in {uri}: {exc.message}") from None


def _version_by_alias(name: str, alias: str, paths: Paths | None):
    """(client, tracking uri, registered name, ModelVersion) for `embedlab-<name>@<alias>`,
    resolved once (the alias may move meanwhile); a missing one is a RegistryError."""
    _mlflow()
    from mlflow import MlflowClient

    uri = tracking_uri(paths or Paths())
    model = registered_name(name)
    client = MlflowClient(tracking_uri=uri)
    with _missing_is_registry_error(model, alias, uri):
        return client, uri, model, client.get_model_version_by_alias(model, alias)


def load_model(name: str, alias: str = CHAMPION, paths: Paths | None = None) -> LoadedModel:
    mlflow = _mlflow()
    import torch

    client, uri, model, found = _version_by_alias(name, alias, paths)
    version = found.version
    with _missing_is_registry_error(model, alias, uri):
        # A models:/ URI would be resolved against MLflow's global registry URI, not `uri`.
        source = client.get_model_version_download_uri(model, version)
    with tempfile.TemporaryDirectory(prefix="embedlab-registry-") as scratch:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=scratch,
                                                         tracking_uri=uri))
        archive = local / "data" / "model.pt2"
        if not archive.is_file():
            raise RegistryError(f"{model} v{version} is not a torch.export (pt2) model; "
                                "pickled formats are never loaded")
        program = torch.export.load(_pickle_free_archive(archive))
    return LoadedModel(program.module(), name, int(version), alias)


def download_bundle(name: str, dst: Path, alias: str = CHAMPION, paths: Paths | None = None) -> Path:
    """The files a bundle carried beside its program (e.g. the vq method's config and weights
    for tokenizer and priors: enough to encode, decode and sample), fetched from the run that
    registered `embedlab-<name>@<alias>` into `dst`; returns the folder holding them."""
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    _, uri, model, found = _version_by_alias(name, alias, paths)
    run_id = found.run_id
    Path(dst).mkdir(parents=True, exist_ok=True)
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle", dst_path=str(dst),
                                                        tracking_uri=uri))
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"{model}@{alias} (run {run_id}) carries no bundle files: {exc}") from None
