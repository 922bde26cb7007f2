"""Scoring generated images, the one way every method does it.

`SampleScorer` holds the fixed evaluator and the real data. For a set of N generated images
it reports, each with a 95% interval:

- ``fd`` and ``kid`` against the reference set, val + test together (features of the
  evaluator, `distances.py`);
- ``confident_share``: the share the evaluator reads with top probability >= threshold;
- ``accuracy`` on the requested class, for class-conditional samples.

`floor(n, labels)` scores N *real* images the same way: train images (not in the reference),
drawn without replacement with the same class counts as the arm. That is the value a perfect
generator would reach at that N; an arm is read against it, never against a bare number.
When an arm asks for more images than the floor pool holds, both are scored at the pool size
and the metrics say so (`n`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from embedlab.evaluation.distances import distance_scores, features
from embedlab.evaluation.intervals import proportion
from embedlab.evaluation.scores import predict


def weights_id(net: torch.nn.Module) -> str:
    """Which network read the scores: sha256 of its weights (state-dict tensors in key order),
    the same for the committed file and the loaded module, on any machine."""
    digest = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        digest.update(key.encode() + b"\0")
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def evaluator_id(net: torch.nn.Module) -> dict:
    return {"sha256": weights_id(net), "weights": "models/evaluator/model.safetensors"}


class SampleScorer:
    def __init__(self, evaluator: torch.nn.Module, data, threshold: float = 0.9, bootstrap: int = 500,
                 seed: int = 0):
        """`data`: the prepared data (`data.prepare.Prepared`)."""
        self.net, self.threshold, self.bootstrap, self.seed = evaluator, threshold, bootstrap, seed
        val, test = data.split("val"), data.split("test")
        self.reference = features(evaluator, np.concatenate([val[0], test[0]]))
        self.pool_x, self.pool_y = (torch.as_tensor(a) for a in data.split("train"))
        self.test_x, self.test_y = (torch.as_tensor(a) for a in test)
        self._floors: dict = {}

    @property
    def pool_size(self) -> int:
        return len(self.pool_x)

    def cap(self, n: int) -> int:
        """The N both an arm and its floor can be scored at."""
        return min(int(n), self.pool_size)

    def score(self, images, requested=None, seed: int | None = None) -> dict:
        """FD, KID, confident share (and accuracy on `requested`) of N generated images."""
        images = torch.as_tensor(images, dtype=torch.float32)
        probs, feats = predict(self.net, images)
        out = distance_scores(self.reference, feats.double(), self.bootstrap, self.seed if seed is None else seed)
        out["confident_share"] = proportion(probs.max(1).values >= self.threshold)
        if requested is not None:
            out["accuracy"] = proportion(probs.argmax(1) == torch.as_tensor(requested))
        return out

    def floor_images(self, n: int, labels=None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """N real train images: the same class counts as `labels` when given, else at random."""
        gen = torch.Generator().manual_seed(seed)
        if labels is None:
            idx = torch.randperm(self.pool_size, generator=gen)[: self.cap(n)]
        else:
            labels = torch.as_tensor(labels)
            picks = []
            for c, count in zip(*torch.unique(labels, return_counts=True)):
                rows = torch.nonzero(self.pool_y == c).flatten()
                if len(rows) < count:
                    raise ValueError(f"the real floor needs {int(count)} train images of class {int(c)}, "
                                     f"the train split holds {len(rows)}; sample fewer per class")
                picks.append(rows[torch.randperm(len(rows), generator=gen)[:count]])
            idx = torch.cat(picks)
        return self.pool_x[idx], self.pool_y[idx]

    def floor(self, n: int, labels=None, seed: int = 0) -> dict:
        """The real-data floor at the same N (and class counts) as an arm; cached per (n, classes)."""
        key = (self.cap(n), None if labels is None else tuple(torch.bincount(torch.as_tensor(labels)).tolist()), seed)
        if key not in self._floors:
            x, y = self.floor_images(n, labels, seed)
            self._floors[key] = self.score(x, y if labels is not None else None, seed)
        return self._floors[key]

    def real_test_share(self) -> dict:
        """The confident share of the real test split (held out from the evaluator's training)."""
        probs, _ = predict(self.net, self.test_x)
        return proportion(probs.max(1).values >= self.threshold)
