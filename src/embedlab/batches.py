"""What a train stage's numbers depend on besides its own package: minibatch order, shift
augmentation and the shared optimiser. A dependency of every train and reference stage in
dvc.yaml (training.py, the Trainer factory's plumbing, is not: its result-bearing keys are the
`trainer.*` params those stages list)."""

from __future__ import annotations

import torch


class TensorBatches:
    """Minibatches sliced from tensors that already live on the training device.

    No DataLoader workers, no per-sample Python: one permutation per epoch,
    seeded by (seed, epoch) so a rerun sees the same order."""

    def __init__(self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorBatches needs tensors of one common length")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.tensors[0])
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=gen).to(self.tensors[0].device)
        else:
            order = torch.arange(n, device=self.tensors[0].device)
        self.epoch += 1
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield tuple(t[idx] for t in self.tensors)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by up to +-max_shift pixels (background -1 fills in), batched."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).to(images.device, images.dtype)
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * shifts[:, 0] / w
    theta[:, 1, 2] = -2.0 * shifts[:, 1] / h
    grid = torch.nn.functional.affine_grid(theta, images.shape, align_corners=False)
    shifted = torch.nn.functional.grid_sample(images + 1.0, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return shifted - 1.0


def adamw_cosine(parameters, lr: float, weight_decay: float, max_epochs: int) -> dict:
    """AdamW with a per-epoch cosine decay: what every model here returns from configure_optimizers."""
    opt = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, max_epochs))}
