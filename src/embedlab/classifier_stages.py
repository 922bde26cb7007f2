"""train / evaluate / export for the evaluator and the backbone (the method interface)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from embedlab.params import Params
from embedlab.io import write_json_atomic
from embedlab.paths import Paths


@dataclass(frozen=True)
class ClassifierModel:
    """One of the two classifiers; `name` is both its params section and its arch."""

    name: str
    primary_metric: str = "test_accuracy"
    needs_evaluator: bool = False

    def _kwargs(self, params: Params, meta: dict) -> dict:
        cfg = params.model_section(self.name)
        return {
            "num_classes": int(meta["num_classes"]),
            "image_size": int(meta["image_size"]),
            "width": cfg.width,
            "feature_dim": cfg.feature_dim,
            "dropout": cfg.dropout,
        }

    def train(self, params: Params, paths: Paths) -> None:
        from embedlab.classifier import build_classifier, save_classifier
        from embedlab.classifier_training import LitClassifier
        from embedlab.data.prepare import read_prepared
        from embedlab.training import TensorBatches, load_best_weights, make_trainer

        cfg = params.model_section(self.name)
        data = read_prepared(paths.prepared)
        model_dir = paths.model_dir(self.name)
        trainer, device = make_trainer(
            params.trainer,
            name=self.name,
            max_epochs=cfg.max_epochs,
            max_steps=cfg.max_steps,
            seed=cfg.seed,
            live_dir=paths.dvclive(self.name),
            checkpoint_dir=model_dir / "checkpoints",
            monitor="val_acc",
            patience=cfg.patience,
        )
        tensors = {}
        for split in ("train", "val"):
            x, y = data.split(split)
            tensors[split] = (torch.as_tensor(x, device=device), torch.as_tensor(y, device=device))
        kwargs = self._kwargs(params, data.meta)
        net = build_classifier(self.name, **kwargs)
        lit = LitClassifier(net, cfg, cfg.max_epochs)
        trainer.fit(
            lit,
            train_dataloaders=TensorBatches(*tensors["train"], batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed),
            val_dataloaders=TensorBatches(*tensors["val"], batch_size=1024),
        )
        load_best_weights(lit, trainer)
        save_classifier(lit.net, self.name, kwargs, model_dir, extra={"epochs_run": trainer.current_epoch})

    def evaluate(self, params: Params, paths: Paths, evaluator: torch.nn.Module | None) -> dict:
        from embedlab.classifier import load_classifier
        from embedlab.data.prepare import read_prepared
        from embedlab.evaluation import class_accuracy, confusion_matrix, predict
        from embedlab.evaluation.grids import save_confusion_png, save_grid

        data = read_prepared(paths.prepared)
        net = load_classifier(paths.model_dir(self.name))
        k = data.num_classes
        metrics: dict = {}
        for split in ("val", "test"):
            x, y = data.split(split)
            probs, _ = predict(net, x)
            metrics[f"{split}_accuracy"] = round(class_accuracy(probs, y), 4)
            if split == "test":
                pred = probs.argmax(1).numpy()
                nll = -torch.log(probs[torch.arange(len(y)), torch.as_tensor(y)].clamp_min(1e-12)).mean()
                metrics["test_nll"] = round(float(nll), 4)
                matrix = confusion_matrix(y, pred, k)
                per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
                metrics["per_class_accuracy"] = {str(c): round(float(a), 4) for c, a in enumerate(per_class)}
                metrics["test_samples"] = int(len(y))
                test_x, test_y, test_pred = x, y, pred
        metrics["num_params"] = int(sum(p.numel() for p in net.parameters()))

        if self.name == "evaluator":
            from embedlab.evaluation.fid import frechet_distance

            # The floor any generator is measured against: two real splits, same features.
            metrics["fd_val_test"] = round(frechet_distance(data.split("test")[0], data.split("val")[0], net), 4)

        plots = paths.plots(self.name)
        plots.mkdir(parents=True, exist_ok=True)
        import pandas as pd

        pd.DataFrame({"actual": test_y, "predicted": test_pred}).to_csv(plots / "confusion.csv", index=False)
        save_confusion_png(confusion_matrix(test_y, test_pred, k), plots / "confusion.png",
                           f"{self.name}: test accuracy {metrics['test_accuracy']:.3f}")
        wrong = np.flatnonzero(test_y != test_pred)[:32]
        save_grid(test_x[wrong] if len(wrong) else test_x[:0], plots / "misclassified.png", per_row=8)
        write_json_atomic(paths.metrics(self.name), metrics)
        return metrics

    def export(self, params: Params, paths: Paths):
        from embedlab.classifier import load_classifier
        from embedlab.data.prepare import read_prepared
        from embedlab.registry import ModelBundle

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
        )


EVALUATOR = ClassifierModel("evaluator")
BACKBONE = ClassifierModel("backbone")
