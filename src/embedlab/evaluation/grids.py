"""Pictures a person looks at: sample grids and confusion matrices as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_grid(images: np.ndarray, path: Path, per_row: int, scale: int = 4, pad: int = 1) -> Path:
    """Tile (N, C, S, S) images in [-1, 1], C = 1 (grey) or 3 (RGB, e.g. stacked digits), into
    rows of `per_row`, upscaled `scale`x (nearest)."""
    from PIL import Image

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"save_grid expects (N, 1, S, S) or (N, 3, S, S) images, got {images.shape}")
    n, channels, h, w = images.shape
    ncol = max(1, -(-n // per_row)) if n else 1
    cells = np.full((ncol * (h + pad) + pad, per_row * (w + pad) + pad, channels), 0.25, dtype=np.float32)
    pixels = (np.clip(np.nan_to_num(images, nan=-1.0), -1, 1) + 1) / 2
    for i in range(n):
        r, c = divmod(i, per_row)
        cells[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = \
            pixels[i].transpose(1, 2, 0)
    img = Image.fromarray((cells * 255).round().astype(np.uint8).squeeze(-1) if channels == 1
                          else (cells * 255).round().astype(np.uint8), mode="L" if channels == 1 else "RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def class_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """Rows = classes, columns = the first `per_class` images of that class (blank if fewer)."""
    channels, size = images.shape[1], images.shape[-1]
    rows = np.full((num_classes, per_class, channels, size, size), -1.0, dtype=np.float32)
    for c in range(num_classes):
        chosen = images[np.asarray(labels) == c][:per_class]
        rows[c, : len(chosen)] = chosen
    return rows.reshape(-1, channels, size, size)


def save_confusion_png(matrix: np.ndarray, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(0.45 * k + 2, 0.45 * k + 1.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
