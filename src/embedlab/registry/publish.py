"""Publishing: a model's bundle logged with its lineage (git commit, data hash, params,
metrics), registered, gated and aliased; the receipt registry/<name>.json.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from embedlab.io import save_tensors, write_json_atomic
from embedlab.methods.base import ModelBundle
from embedlab.paths import Paths
from embedlab.registry.archive import export_ready
from embedlab.registry.card import model_card
from embedlab.registry.gate import current_champion, gate, numeric_metrics, primary_score
from embedlab.registry.store import (
    CHALLENGER,
    DIRECTION_TAG,
    METRIC_TAG,
    MLFLOW_KEY,
    VALUE_TAG,
    RegistryError,
    experiment_id,
    flatten,
    global_tracking_uri,
    import_mlflow_pytorch,
    registered_name,
    tracking_uri,
)

if TYPE_CHECKING:
    from embedlab.params import Params


PREPARED_OUT = "data/prepared"


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


def _log_files(mlflow, files: dict[str, Any]) -> None:
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


def publish(name: str, bundle: ModelBundle, params: Params, paths: Paths) -> dict:
    mlflow = import_mlflow_pytorch()
    import torch
    from mlflow import MlflowClient

    metrics = numeric_metrics(bundle.metrics)
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

    champion = current_champion(client, model)
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

    module, example = export_ready(bundle)
    experiment = experiment_id(client, params.registry.experiment, uri)
    with global_tracking_uri(mlflow, uri), \
            mlflow.start_run(experiment_id=experiment, run_name=name, tags=lineage) as run:
        model_params = {MLFLOW_KEY.sub("_", k): str(v)[:6000] for k, v in flatten(bundle.params).items()}
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
