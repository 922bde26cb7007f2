"""Fixed image transforms that turn one dataset into several feature-shifted domains.

Each works on a batch (N, 1, S, S) in [-1, 1] and keeps it there; the noisy one
draws from a generator seeded by the caller, so a partition is reproducible.
"""

from __future__ import annotations

import numpy as np


def original(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return images.copy()


def inverted(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return -images


def rotated(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # A quarter turn is exact on the pixel grid: no interpolation blur mixed into the shift.
    return np.ascontiguousarray(np.rot90(images, k=1, axes=(-2, -1)))


def blurred_noise(images: np.ndarray, rng: np.random.Generator, noise_std: float = 0.2) -> np.ndarray:
    kernel = np.array([1.0, 2.0, 1.0]) / 4.0
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    rows = sum(w * padded[..., i : i + images.shape[-2], :] for i, w in enumerate(kernel))
    blurred = sum(w * rows[..., :, i : i + images.shape[-1]] for i, w in enumerate(kernel))
    noisy = blurred + rng.normal(0.0, noise_std, size=images.shape)
    return np.clip(noisy, -1.0, 1.0).astype(images.dtype)


def contrast(images: np.ndarray, rng: np.random.Generator, factor: float = 0.4) -> np.ndarray:
    # Squeeze towards mid-grey (0): the digit is still there, with 40% of its dynamic range.
    return (images * factor).astype(images.dtype)


DOMAINS = {f.__name__: f for f in (original, inverted, rotated, blurred_noise, contrast)}


def apply_domain(name: str, images: np.ndarray, seed: int) -> np.ndarray:
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; allowed: {sorted(DOMAINS)}")
    return DOMAINS[name](images, np.random.default_rng(seed))
