"""Registry against a real sqlite MLflow store: gate decisions, receipts, lineage, loading.

One store serves the whole module (each test publishes under its own model name), because
creating an MLflow database costs about a second per test.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from embedlab import registry
from embedlab.methods.base import ModelBundle
from embedlab.params import Params, RegistryParams
from embedlab.paths import Paths
from embedlab.registry import load_model, publish

PREPARED_MD5 = "0123456789abcdef0123456789abcdef.dir"


class TinyCNN(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.features(x))


def bundle(value: float, *, metric: str = "accuracy", higher_is_better: bool = True, seed: int = 0):
    return ModelBundle(
        module=TinyCNN(seed).eval(),
        input_example=np.random.default_rng(seed).standard_normal((4, 1, 16, 16), dtype=np.float32),
        primary_metric=metric,
        metrics={metric: value, "per_class": {"zero": 0.9, "one": 0.8}, "passed": True},
        higher_is_better=higher_is_better,
        params={"width": 4, "optim": {"lr": 1e-3}},
    )


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  prepare:\n    cmd: embedlab prepare\n    outs:\n"
        f"    - path: data/prepared\n      hash: md5\n      md5: {PREPARED_MD5}\n"
        "      size: 1234\n      nfiles: 3\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield Paths(root=root)


def params(min_delta: float = 0.0) -> Params:
    return Params(registry=RegistryParams(min_delta=min_delta, experiment="embedlab-test"))


def champion_version(paths: Paths, name: str) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.tracking_uri(paths))
    return int(client.get_model_version_by_alias(registry.registered_name(name), "champion").version)


def test_tracking_uri_defaults_to_sqlite_at_root_and_obeys_env(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert registry.tracking_uri(Paths(root=tmp_path)) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert registry.tracking_uri(Paths(root=tmp_path)) == "http://mlflow.internal:5000"


def test_gate_needs_more_than_min_delta_in_the_right_direction():
    assert registry.gate(0.5, None, True, 0.1) == "champion"
    assert registry.gate(0.91, 0.90, True, 0.0) == "champion"
    assert registry.gate(0.90, 0.90, True, 0.0) == "challenger"
    assert registry.gate(0.95, 0.90, True, 0.05) == "challenger"
    assert registry.gate(10.0, 12.0, False, 1.0) == "champion"
    assert registry.gate(12.5, 12.0, False, 0.0) == "challenger"


def test_gate_keeps_the_champion_when_the_gain_is_inside_the_newcomers_interval():
    # 0.91 beats 0.90, but the newcomer's own interval [0.88, 0.94] holds the champion's value.
    assert registry.gate(0.91, 0.90, True, 0.0, interval=(0.88, 0.94)) == "challenger"
    assert registry.gate(0.95, 0.90, True, 0.0, interval=(0.92, 0.98)) == "champion"
    assert registry.gate(10.0, 12.0, False, 0.0, interval=(9.0, 12.5)) == "challenger"  # lower is better
    assert registry.gate(10.0, 12.0, False, 0.0, interval=(9.0, 11.0)) == "champion"


def test_primary_score_reads_plain_numbers_and_scores_with_intervals():
    metrics = {"a": {"b": 0.5}, "s": {"value": 0.9, "lo": 0.85, "hi": 0.95, "n": 100}, "flag": True}
    assert registry.primary_score(metrics, "a.b") == (0.5, None)
    assert registry.primary_score(metrics, "s") == (0.9, (0.85, 0.95))
    with pytest.raises(registry.RegistryError, match="'a.c' is not in the metrics"):
        registry.primary_score(metrics, "a.c")
    with pytest.raises(registry.RegistryError, match="not a number"):
        registry.primary_score(metrics, "flag")


def test_first_publish_is_champion_with_full_receipt(paths):
    receipt = publish("first", bundle(0.80), params(), paths)

    assert receipt["alias"] == "champion" and receipt["version"] == 1
    assert receipt["name"] == "embedlab-first" and receipt["model"] == "first"
    assert receipt["metric"] == "accuracy" and receipt["value"] == 0.80
    assert receipt["previous_champion_value"] is None and receipt["previous_champion_version"] is None
    assert receipt["tracking_uri"] == registry.tracking_uri(paths)
    assert receipt["git_commit"] == "unknown"  # the tmp root is no git repository
    assert (receipt["data_hash"], receipt["data_hash_source"]) == (PREPARED_MD5, "dvc.lock")
    assert json.loads(paths.receipt("first").read_text()) == receipt
    assert not list(paths.receipt("first").parent.glob(".*.tmp"))
    # publish must not leave its store exported: the next call may be for another root.
    assert "MLFLOW_TRACKING_URI" not in os.environ

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=receipt["tracking_uri"])
    run = client.get_run(receipt["run_id"])
    assert run.data.metrics["per_class.zero"] == 0.9 and run.data.metrics["passed"] == 1.0
    assert run.data.params == {"width": "4", "optim.lr": "0.001"}
    assert run.data.tags["data_hash"] == PREPARED_MD5 and run.data.tags["git_commit"] == "unknown"
    version = client.get_model_version("embedlab-first", "1")
    assert version.tags["primary_metric_value"] == "0.8" and version.run_id == receipt["run_id"]
    # Artifacts live next to the database, not in whatever the cwd was.
    assert (paths.root / "mlartifacts").is_dir()


def test_worse_then_better_model_moves_champion_only_when_beaten(paths):
    publish("race", bundle(0.80, seed=1), params(), paths)

    worse = publish("race", bundle(0.70, seed=2), params(), paths)
    assert worse["alias"] == "challenger" and worse["version"] == 2
    assert worse["previous_champion_value"] == 0.80 and worse["previous_champion_version"] == 1
    assert champion_version(paths, "race") == 1
    assert json.loads(paths.receipt("race").read_text())["alias"] == "challenger"

    better = publish("race", bundle(0.90, seed=3), params(min_delta=0.05), paths)
    assert better["alias"] == "champion" and better["previous_champion_version"] == 1
    assert champion_version(paths, "race") == 3


def test_min_delta_keeps_equal_and_slightly_better_as_challengers(paths):
    publish("delta", bundle(0.80), params(min_delta=0.02), paths)
    assert publish("delta", bundle(0.80), params(min_delta=0.02), paths)["alias"] == "challenger"
    assert publish("delta", bundle(0.81), params(min_delta=0.02), paths)["alias"] == "challenger"
    assert champion_version(paths, "delta") == 1
    assert publish("delta", bundle(0.83), params(min_delta=0.02), paths)["alias"] == "champion"


def test_lower_is_better_metric(paths):
    def fid(value):
        return bundle(value, metric="fid.test", higher_is_better=False)

    publish("lower", fid(30.0), params(min_delta=1.0), paths)
    higher = publish("lower", fid(25.0 + 10), params(min_delta=1.0), paths)
    assert higher["alias"] == "challenger"
    lower = publish("lower", fid(20.0), params(min_delta=1.0), paths)
    assert lower["alias"] == "champion" and lower["previous_champion_value"] == 30.0


def test_champion_on_another_metric_is_replaced_not_compared(paths):
    publish("switch", bundle(0.99), params(), paths)
    switched = publish("switch", bundle(50.0, metric="fid", higher_is_better=False), params(), paths)
    assert switched["alias"] == "champion" and switched["previous_champion_value"] is None
    assert switched["previous_champion_version"] == 1


def test_load_by_alias_matches_module_without_unpickling(paths, monkeypatch, tmp_path):
    original = bundle(0.5, seed=7)
    publish("loadme", original, params(), paths)

    def refuse(*args, **kwargs):
        raise AssertionError("load_model tried to unpickle")

    # Every path torch and Python use to unpickle; the loader must need none of them.
    # From a fresh cwd: MLflow's global default store (./mlflow.db) must play no part.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.serialization, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = load_model("loadme", "champion", paths)
    monkeypatch.undo()
    assert not (tmp_path / "mlflow.db").exists()

    assert loaded.version == 1
    batch = torch.randn(7, 1, 16, 16)  # batch size unlike the example: the export is dynamic
    with torch.no_grad():
        expected = original.module(batch)
    assert torch.allclose(loaded(batch), expected, atol=1e-6)
    assert torch.allclose(loaded(batch.numpy()), expected, atol=1e-6)

    # Other consumers can use MLflow's own loader with its pickle-free check switched on.
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with registry.global_tracking_uri(mlflow, registry.tracking_uri(paths)):
        by_mlflow = mlflow.pytorch.load_model("models:/embedlab-loadme@champion")
    assert torch.allclose(by_mlflow(batch), expected, atol=1e-6)


def test_batch_of_one_example_still_loads_for_any_batch(paths):
    single = bundle(0.5, seed=8)
    single.input_example = single.input_example[:1]
    publish("single", single, params(), paths)
    batch = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(load_model("single", paths=paths)(batch), single.module(batch), atol=1e-6)


def test_pickled_version_is_refused(paths):
    import mlflow

    uri = registry.tracking_uri(paths)
    client = mlflow.MlflowClient(tracking_uri=uri)
    # The test experiment keeps artifacts under tmp; "Default" would write ./mlruns in the cwd.
    experiment_id = registry.experiment_id(client, "embedlab-test", uri)
    with registry.global_tracking_uri(mlflow, uri), mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.pytorch.log_model(TinyCNN().eval(), name="model", serialization_format="pickle",
                                        pip_requirements=["torch"], registered_model_name="embedlab-pickled")
    client.set_registered_model_alias("embedlab-pickled", "champion", info.registered_model_version)
    with pytest.raises(registry.RegistryError, match="not a torch.export"):
        load_model("pickled", paths=paths)


def test_missing_alias_and_missing_metric_fail_loudly(paths):
    with pytest.raises(registry.RegistryError, match="embedlab-nobody@champion"):
        load_model("nobody", paths=paths)
    with pytest.raises(registry.RegistryError, match="primary metric 'recall'"):
        publish("nometric", ModelBundle(TinyCNN().eval(), np.zeros((2, 1, 16, 16), np.float32),
                                        "recall", {"accuracy": 1.0}), params(), paths)


def test_data_hash_falls_back_to_prepared_files(tmp_path):
    assert registry.data_hash(Paths(root=tmp_path)) == ("unknown", "missing")
    prepared = tmp_path / "data" / "prepared"
    prepared.mkdir(parents=True)
    (prepared / "train.npz").write_bytes(b"train")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  validate:\n    cmd: x\n")
    first, source = registry.data_hash(Paths(root=tmp_path))
    assert source == "files" and len(first) == 32
    (prepared / "train.npz").write_bytes(b"changed")
    assert registry.data_hash(Paths(root=tmp_path))[0] != first


def test_git_commit_reads_head(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert registry.git_commit(tmp_path) == head


def test_every_version_carries_a_model_card_readable_by_alias(paths, tmp_path):
    """The card: what the model is, data hash, params, metrics with intervals, claims' verdicts,
    the evaluator that read them, intended use and limits; as the description and an artifact."""
    from mlflow import MlflowClient

    card_bundle = bundle(0.0)
    card_bundle.primary_metric = "published.accuracy"
    card_bundle.metrics = {
        "published": {"accuracy": {"value": 0.82, "lo": 0.77, "hi": 0.86, "n": 250, "method": "wilson"}},
        "fd": {"ours": {"value": 12.5, "lo": 11.0, "hi": 14.0, "n": 500, "method": "bootstrap"}},
        "claims": {"ours_vs_base": {"claim": "ours beats base", "verdict": "inconclusive",
                                    "difference": {"value": 0.01, "lo": -0.02, "hi": 0.04, "n": 3}}},
        "evaluator": {"sha256": "abc123", "file": "models/evaluator/model.safetensors"},
    }
    card_bundle.description = "seed 0, chosen on val"
    card_bundle.limits = "Only 16x16 digits."
    receipt = publish("carded", card_bundle, params(), paths)

    card = registry.model_card_of("carded", "champion", paths)
    assert card.startswith("# embedlab-carded\n\nseed 0, chosen on val")
    assert f"data hash `{PREPARED_MD5}`" in card
    assert "`published.accuracy` = 0.82 [0.77, 0.86]" in card
    assert "| `fd.ours` | 12.5 [11, 14] (n = 500) |" in card
    assert "| ours beats base | **inconclusive** | 0.01 [-0.02, 0.04] (n = 3) |" in card
    assert "evaluator weights sha256 `abc123`" in card and "optim:\n  lr: 0.001" in card
    assert "## Known limits\nOnly 16x16 digits." in card and "## Intended use" in card
    client = MlflowClient(tracking_uri=receipt["tracking_uri"])
    artifact = client.download_artifacts(receipt["run_id"], "model_card.md", str(tmp_path))
    assert open(artifact).read() == card


def test_a_version_below_its_quality_floor_is_registered_but_never_champion(paths):
    import dataclasses

    noise = dataclasses.replace(bundle(0.9), quality={"description": "confident share >= 0.5", "value": 0.1,
                                                      "threshold": 0.5, "met": False})
    first = publish("quality_floor", noise, params(), paths)
    assert first["version"] == 1 and first["alias"] == "challenger"  # no champion at all beats noise
    assert first["quality"]["met"] is False
    with pytest.raises(registry.RegistryError, match="champion"):
        load_model("quality_floor", "champion", paths=paths)
    card = registry.model_card_of("quality_floor", "challenger", paths)
    assert "quality floor" in card and "never champion" in card

    readable = dataclasses.replace(bundle(0.5, seed=1), quality={**noise.quality, "value": 0.7, "met": True})
    second = publish("quality_floor", readable, params(), paths)
    assert second["alias"] == "champion" and champion_version(paths, "quality_floor") == 2
