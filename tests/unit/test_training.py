"""Trainer factory, tensor batches, and a real (tiny) classifier fit end to end."""

import json

import pytest
import torch

from embedlab.params import EvaluatorParams, Params, TrainerParams
from embedlab.paths import Paths
from embedlab.training import TensorBatches, random_shift, resolve_device, resolve_precision


def test_tensor_batches_cover_each_sample_once_per_epoch():
    x = torch.arange(10)
    batches = TensorBatches(x, x * 2, batch_size=4, shuffle=True, seed=3)
    assert len(batches) == 3
    first = torch.cat([b[0] for b in batches])
    second = torch.cat([b[0] for b in batches])
    assert sorted(first.tolist()) == list(range(10)) == sorted(second.tolist())
    assert first.tolist() != second.tolist()  # a new order each epoch
    assert all((b[1] == b[0] * 2).all() for b in batches)
    again = TensorBatches(x, batch_size=4, shuffle=True, seed=3)
    assert torch.cat([b[0] for b in again]).tolist() == first.tolist()
    assert len(TensorBatches(x, batch_size=4, drop_last=True)) == 2


def test_random_shift_moves_content_and_fills_background():
    img = -torch.ones(64, 1, 8, 8)
    img[:, :, 3:5, 3:5] = 1.0
    out = random_shift(img, 2, torch.Generator().manual_seed(0))
    assert out.shape == img.shape
    assert torch.allclose((out == 1).sum((1, 2, 3)).float(), torch.full((64,), 4.0))  # nothing lost
    assert set(out.unique().tolist()) <= {-1.0, 1.0}
    assert (out != img).any()
    assert torch.equal(random_shift(img, 0), img)


def test_cpu_resolution():
    cpu = TrainerParams(accelerator="cpu")
    assert resolve_device(cpu).type == "cpu"
    assert resolve_precision(cpu, torch.device("cpu")) == "32-true"
    assert resolve_precision(TrainerParams(), torch.device("cuda")) == "bf16-mixed"


def test_tiny_classifier_fit_saves_loadable_weights(tmp_path, digits_prepared):
    from embedlab.classifiers.method import EVALUATOR
    from embedlab.classifiers.nets import load_classifier
    from embedlab.data.prepare import write_prepared

    paths = Paths(tmp_path)
    write_prepared(digits_prepared, paths.prepared)
    params = Params(
        trainer=TrainerParams(progress_bar=False),
        evaluator=EvaluatorParams(seed=1, width=8, feature_dim=16, max_epochs=2, batch_size=32, lr=0.005),
    )
    EVALUATOR.train(params, paths)
    model_dir = paths.model_dir("evaluator")
    net = load_classifier(model_dir)
    assert json.loads((model_dir / "config.json").read_text())["kwargs"]["width"] == 8
    # Two epochs on digits already beat chance by far: the loop really trained.
    x, y = digits_prepared.split("val")
    acc = float((net(torch.as_tensor(x)).argmax(1).numpy() == y).mean())
    assert acc > 0.5
    assert (paths.dvclive("evaluator") / "plots" / "metrics" / "val" / "acc.tsv").exists()
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]  # what git holds
    params = params.model_copy(update={"evaluation": params.evaluation.model_copy(update={"samples": 50, "bootstrap": 20})})
    metrics = EVALUATOR.evaluate(params, paths, None)
    acc = metrics["test_accuracy"]
    assert 0.5 < acc["value"] <= 1.0 and acc["lo"] < acc["value"] < acc["hi"] and acc["n"] == len(digits_prepared.split("test")[1])
    # The real floor at the pipeline's N: train images (outside the reference val + test), read by the evaluator.
    floor = metrics["real_floor"]
    assert floor["fd"]["n"] == 50 and floor["fd"]["lo"] <= floor["fd"]["value"] <= floor["fd"]["hi"]
    assert len(metrics["weights"]["sha256"]) == 16
    assert json.loads(paths.metrics("evaluator").read_text())["test_accuracy"] == metrics["test_accuracy"]
    assert (paths.plots("evaluator") / "confusion.csv").exists()


def test_resume_keeps_a_checkpoint_only_for_its_own_key(tmp_path):
    """Resume (embedlab.training): nothing kept -> fresh; a checkpoint of another key (other
    params, data or code) -> set aside with a message, fresh; its own -> resumed from, said with
    the step; unreadable -> refused before any work, never unpickled; done() removes it."""
    from embedlab.training import Resume, ResumeError

    said = []
    first = Resume(tmp_path, "evaluator", {"lr": 0.001})
    assert first.ckpt_path(said.append) is None and first.dir.is_dir() and not said
    torch.save({"epoch": 2, "global_step": 30, "state_dict": {"w": torch.ones(2)}}, first.last)
    same = Resume(tmp_path, "evaluator", {"lr": 0.001})
    assert same.ckpt_path(said.append) == str(same.last)
    assert said[-1].endswith("3 epoch(s), step 30 done")
    other = Resume(tmp_path, "evaluator", {"lr": 0.002})
    assert other.ckpt_path(said.append) is None and not other.last.exists()
    assert "other params, data or code: starting evaluator fresh" in said[-1]

    torch.save({"epoch": 0, "global_step": 1, "state_dict": {"w": torch.ones(1)}}, other.last)
    other.last.write_bytes(other.last.read_bytes()[:20])  # truncated
    with pytest.raises(ResumeError, match=r"last\.ckpt: not a readable checkpoint.*delete .*evaluator"):
        Resume(tmp_path, "evaluator", {"lr": 0.002}).ckpt_path(said.append)

    class Payload:  # a pickle that would run code if unpickled
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled')",))

    torch.save({"epoch": 0, "global_step": 1, "state_dict": Payload()}, other.last)
    with pytest.raises(ResumeError, match="not a readable checkpoint"):
        Resume(tmp_path, "evaluator", {"lr": 0.002}).ckpt_path(said.append)
    other.done()
    assert not other.dir.exists()
