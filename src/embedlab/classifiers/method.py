"""train / evaluate / export / load_bundle for the evaluator and the backbone (methods/base.py's
`Method` interface, as objects: one class, two instances).

The classifiers are a package laid out like a method's: nets.py (the networks and their
weights-only storage), training.py (the fit `reference@<name>` runs), method.py (this file)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embedlab.classifiers.nets import load_classifier
from embedlab.data.prepare import read_prepared
from embedlab.evaluation import confusion_matrix, predict
from embedlab.evaluation.grids import save_confusion_png, save_grid
from embedlab.evaluation.intervals import proportion
from embedlab.evaluation.samples import weights_id
from embedlab.io import write_json_atomic
from embedlab.methods.base import ModelBundle
from embedlab.params import Params, ParamsError
from embedlab.paths import Paths


@dataclass(frozen=True)
class ClassifierModel:
    """One of the two classifiers; `name` is both its params section and its arch."""

    name: str
    primary_metric: str = "test_accuracy"
    needs_evaluator: bool = False

    def _kwargs(self, params: Params, meta: dict, channels: int = 1) -> dict:
        cfg = params.model_section(self.name)
        return {
            "num_classes": int(meta["num_classes"]),
            "image_size": int(meta["image_size"]),
            "width": cfg.width,
            "feature_dim": cfg.feature_dim,
            "dropout": cfg.dropout,
            # colour data: 3 input channels (a grey net's config leaves the key out: its default, 1)
            **({"channels": channels} if channels != 1 else {}),
        }

    def train(self, params: Params, paths: Paths) -> None:
        from embedlab.classifiers.training import fit_classifier

        data = read_prepared(paths.prepared)
        self.check_budget(params, len(data.split("train")[1]))
        fit_classifier(self.name, self._kwargs(params, data.meta, data.channels), params, paths)

    def check_budget(self, params: Params, train_size: int) -> None:
        """Refuse, before any work, a step budget that ends inside the first epoch: validation
        (early stopping, the best checkpoint) runs at an epoch's end, so it would never run."""
        cfg = params.model_section(self.name)
        per_epoch = -(-train_size // cfg.batch_size)
        if 0 <= cfg.max_steps < per_epoch:
            raise ParamsError(
                f"{self.name}.max_steps: {cfg.max_steps} ends inside the first epoch ({per_epoch} batches of "
                f"{self.name}.batch_size {cfg.batch_size} over {train_size} train images), before any validation; "
                f"use -1 (max_epochs decides) or at least {per_epoch}")

    def evaluate(self, params: Params, paths: Paths, evaluator: torch.nn.Module | None) -> dict:
        data = read_prepared(paths.prepared)
        net = load_classifier(paths.model_dir(self.name))
        k = data.num_classes
        metrics: dict = {"weights": {"sha256": weights_id(net), "file": f"models/{self.name}/model.safetensors"}}
        for split in ("val", "test"):
            x, y = data.split(split)
            probs, _ = predict(net, x)
            metrics[f"{split}_accuracy"] = proportion(probs.argmax(1).numpy() == y)
            if split == "test":
                pred = probs.argmax(1).numpy()
                nll = -torch.log(probs[torch.arange(len(y)), torch.as_tensor(y)].clamp_min(1e-12)).mean()
                metrics["test_nll"] = round(float(nll), 4)
                matrix = confusion_matrix(y, pred, k)
                per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
                metrics["per_class_accuracy"] = {str(c): round(float(a), 4) for c, a in enumerate(per_class)}
                metrics["test_samples"] = int(len(y))
                metrics["confident_share_test"] = proportion(probs.max(1).values.numpy() >= params.evaluation.confidence)
                test_x, test_y, test_pred = x, y, pred
        metrics["train_accuracy"] = proportion(predict(net, data.split("train")[0])[0].argmax(1).numpy()
                                               == data.split("train")[1])
        metrics["num_params"] = int(sum(p.numel() for p in net.parameters()))

        if self.name == "evaluator":
            from embedlab.evaluation.samples import SampleScorer

            # What real images score at the pipeline's N: train images (outside the reference
            # set val + test) read by this evaluator. Every method reports its own floor beside
            # its arms; this one is the reference point for the whole project.
            e = params.evaluation
            scorer = SampleScorer(net, data, e.confidence, e.bootstrap, e.seed)
            metrics["real_floor"] = scorer.floor(e.samples, seed=e.seed)

        plots = paths.plots(self.name)
        plots.mkdir(parents=True, exist_ok=True)
        import pandas as pd

        pd.DataFrame({"actual": test_y, "predicted": test_pred}).to_csv(plots / "confusion.csv", index=False)
        save_confusion_png(confusion_matrix(test_y, test_pred, k), plots / "confusion.png",
                           f"{self.name}: test accuracy {metrics['test_accuracy']['value']:.3f}")
        wrong = np.flatnonzero(test_y != test_pred)[:32]
        save_grid(test_x[wrong] if len(wrong) else test_x[:0], plots / "misclassified.png", per_row=8)
        write_json_atomic(paths.metrics(self.name), metrics)
        return metrics

    def export(self, params: Params, paths: Paths):
        metrics = json.loads(paths.metrics(self.name).read_text())
        net = load_classifier(paths.model_dir(self.name))
        data = read_prepared(paths.prepared)
        return ModelBundle(
            module=net,
            input_example=data.split("test")[0][:4].astype(np.float32),
            primary_metric=self.primary_metric,
            metrics=metrics,
            higher_is_better=True,
            params=params.model_section(self.name).model_dump(),
            # The rebuildable weights ride along: `load_bundle` on a downloaded bundle.
            artifacts=[paths.model_dir(self.name) / f for f in ("config.json", "model.safetensors")],
            description=f"The {self.name}: the committed reference network (models/{self.name}, cache: false).",
            limits="Classifies the pipeline's images only (16x16 greyscale digits by default)."
                   + (" It is the fixed instrument every generated-sample score is read by." if self.name == "evaluator"
                      else " Methods select with it (never with the evaluator)."),
        )

    def load_bundle(self, bundle_dir: Path, device="cpu") -> torch.nn.Module:
        """The classifier from a downloaded bundle (`registry.download_bundle`) or models/<name>/:
        eval mode, grads off (`load_model` gives the exported program instead)."""
        return load_classifier(bundle_dir, device)


EVALUATOR = ClassifierModel("evaluator")
BACKBONE = ClassifierModel("backbone")
