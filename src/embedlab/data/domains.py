"""Feature-shifted domains for the federated clients: fixed transforms, digit-dataset look-alikes,
and synthetic digits rendered from fonts.

Every domain works on a batch (N, C, S, S) in [-1, 1] (ink bright, background dark) and keeps
it there; what draws at random takes a generator seeded by the caller, so a partition is
reproducible. Made offline, from what installed packages ship:

- transforms of the source images: `original`, `inverted`, `rotated`, `blurred_noise`, `contrast`;
- look-alikes of the digit datasets FRAug's benchmark uses (MNIST-M, SVHN, USPS), built from
  the source images: `mnistm` (the stroke blended with a crop of scikit-learn's sample photos,
  |photo - digit| as MNIST-M is made), `svhn` (a coloured digit on a coloured, textured
  background, with parts of two neighbouring digits at the edges), `usps` (strokes dilated,
  the digit cropped tight and stretched to fill the frame);
- `synth` (SynthDigits-like): digits rendered from the TrueType fonts matplotlib ships, with a
  random font, size, stroke width, affine warp, position and colours. It makes its own images
  for any labels, so it takes no source image;
- colour shifts, for colour sources: `hue_rotated`, `channel_swap`, `greyscale`.

Colour composites are turned to grey *after* compositing (ITU-R 601 luma), so their texture
stays in the grey image: the pipeline carries one channel.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from embedlab.data.sources import LUMA


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


# --- digit-dataset look-alikes --------------------------------------------------------------

def _grey(rgb: np.ndarray, dtype) -> np.ndarray:
    """(N, 3, S, S) in [0, 1] -> (N, 1, S, S) in [-1, 1]."""
    grey = np.einsum("nchw,c->nhw", rgb, LUMA)[:, None]
    return np.clip(grey * 2.0 - 1.0, -1.0, 1.0).astype(dtype)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One (H, W) or (H, W, 3) float image in [0, 1] to `size` (width, height), bilinear."""
    from PIL import Image

    channels = [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[-1])]
    out = [np.asarray(Image.fromarray(c.astype(np.float32)).resize(size, Image.BILINEAR)) for c in channels]
    return out[0] if image.ndim == 2 else np.stack(out, axis=-1)


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's two bundled sample photos (china, flower), (H, W, 3) in [0, 1]."""
    from sklearn.datasets import load_sample_images

    return tuple(p.astype(np.float64) / 255.0 for p in load_sample_images().images)


def photo_crops(n: int, size: int, rng: np.random.Generator, scale: tuple[float, float] = (0.05, 0.3)) -> np.ndarray:
    """n random square crops of the sample photos (side: `scale` of the short side), resized to
    size x size: (n, 3, size, size) in [0, 1]."""
    photos = _photos()
    out = np.empty((n, 3, size, size))
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        side = max(size, int(rng.uniform(*scale) * min(photo.shape[:2])))
        y, x = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        out[i] = _resize(photo[y:y + side, x:x + side], (size, size)).transpose(2, 0, 1)
    return out


def mnistm(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MNIST-M's recipe: |photo crop - digit| per colour channel, then grey."""
    digit = (images[:, :1] + 1.0) / 2.0
    return _grey(np.abs(photo_crops(len(images), images.shape[-1], rng) - digit), images.dtype)


def _contrasting_colours(n: int, rng: np.random.Generator, min_gap: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) foreground and background colours whose luma differs by >= min_gap, either way
    round (SVHN has dark-on-light and light-on-dark)."""
    fg, bg = rng.uniform(0, 1, (n, 3)), rng.uniform(0, 1, (n, 3))
    for _ in range(100):
        close = np.abs((fg - bg) @ LUMA) < min_gap
        if not close.any():
            break
        fg[close], bg[close] = rng.uniform(0, 1, (close.sum(), 3)), rng.uniform(0, 1, (close.sum(), 3))
    return fg, bg


def svhn(images: np.ndarray, rng: np.random.Generator, margin: float = 0.3) -> np.ndarray:
    """House-number crops: the digit between parts of two other digits of the batch, in a
    random colour on a coloured, photo-textured background, then grey."""
    n, size = len(images), images.shape[-1]
    ink = (images[:, 0] + 1.0) / 2.0
    others = [(np.arange(n) + rng.integers(1, max(n, 2), n)) % max(n, 1) for _ in range(2)]
    pad = int(round(margin * size))
    strip = np.concatenate([ink[others[0]][..., -pad:], ink, ink[others[1]][..., :pad]], axis=-1)
    mask = np.stack([_resize(s, (size, size)) for s in strip])[:, None]  # the row squeezed into the frame
    fg, bg = _contrasting_colours(n, rng, min_gap=0.45)
    texture = photo_crops(n, size, rng)
    background = 0.7 * bg[:, :, None, None] + 0.3 * texture
    rgb = mask * fg[:, :, None, None] + (1.0 - mask) * background
    return _grey(np.clip(rgb + rng.normal(0.0, 0.03, rgb.shape), 0.0, 1.0), images.dtype)


def usps(images: np.ndarray, rng: np.random.Generator, threshold: float = 0.25) -> np.ndarray:
    """USPS's look: thicker strokes (2x2 grey dilation), the digit cropped to its ink's bounding
    box and scaled, aspect kept, until its longer side fills the frame."""
    size = images.shape[-1]
    ink = (images[:, 0] + 1.0) / 2.0
    padded = np.pad(ink, ((0, 0), (0, 1), (0, 1)))
    dilated = np.max([padded[:, i:i + size, j:j + size] for i in range(2) for j in range(2)], axis=0)
    out = np.zeros_like(dilated)
    for k, image in enumerate(dilated):
        rows, cols = np.flatnonzero(image.max(1) > threshold), np.flatnonzero(image.max(0) > threshold)
        if not (len(rows) and len(cols)):
            out[k] = image
            continue
        image = image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        scale = size / max(image.shape)
        h, w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
        top, left = (size - h) // 2, (size - w) // 2
        out[k, top:top + h, left:left + w] = np.clip(_resize(image, (w, h)), 0.0, 1.0)
    return (out[:, None] * 2.0 - 1.0).astype(images.dtype)


# --- synthetic digits from fonts --------------------------------------------------------------

def _render(font_path: str, text: str, px: int = 40, canvas: int = 64, stroke: int = 0) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, px)
    image = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(image).text((canvas / 2, canvas / 2), text, fill=255, font=font, anchor="mm",
                               stroke_width=stroke, stroke_fill=255)
    return np.asarray(image, dtype=np.float64) / 255.0


def _glyph_shape(ink: np.ndarray, size: int = 16) -> np.ndarray:
    """A rendered glyph cropped to its ink and stretched to size x size, zero-mean, unit norm."""
    rows, cols = np.flatnonzero(ink.max(1) > 0.5), np.flatnonzero(ink.max(0) > 0.5)
    shape = _resize(ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], (size, size)).ravel()
    shape = shape - shape.mean()
    return shape / (np.linalg.norm(shape) + 1e-12)


@lru_cache(maxsize=1)
def digit_fonts(reference: str = "DejaVuSans.ttf") -> tuple[str, ...]:
    """matplotlib's bundled TrueType fonts whose glyphs for '0'-'9' are those digits, checked per
    glyph: each leaves ink and differs from the font's missing-glyph box, and at least 8 of the 10
    look more like the same digit of DejaVu Sans than like any other (a symbol font such as
    cmsy10 maps '0'-'9' to symbols: 1 of 10)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    references = np.stack([_glyph_shape(_render(str(folder / reference), str(d))) for d in range(10)])
    fonts = []
    for path in sorted(folder.glob("*.ttf")):
        try:
            glyphs = [_render(str(path), str(d)) for d in range(10)]
            missing = _render(str(path), "\u0378") > 0.5  # an unassigned code point: the .notdef box
        except OSError:
            continue
        if not all((g > 0.5).sum() >= 20 and ((g > 0.5) != missing).sum() >= 20 for g in glyphs):
            continue
        likeness = np.stack([_glyph_shape(g) for g in glyphs]) @ references.T  # (font digit, reference digit)
        # Two confusions allowed: Computer Modern's 3 reads as DejaVu's 8, an oblique 1 as a 7.
        if (likeness.argmax(1) == np.arange(10)).sum() >= 8:
            fonts.append(str(path))
    return tuple(fonts)


def _affine(image: np.ndarray, rng: np.random.Generator, degrees: float = 15.0, shear: float = 0.25,
            scale: tuple[float, float] = (0.85, 1.1), shift: float = 0.08) -> np.ndarray:
    """A random rotation, shear, scale and shift about the centre of a square (C, H, W) image."""
    from PIL import Image

    size = image.shape[-1]
    angle = np.deg2rad(rng.uniform(-degrees, degrees))
    s, k = rng.uniform(*scale), rng.uniform(-shear, shear)
    forward = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array([[1, k], [0, 1]]) * s
    inverse = np.linalg.inv(forward)  # PIL maps output pixels back to input pixels
    centre = np.array([size / 2, size / 2])
    offset = centre - inverse @ (centre + rng.uniform(-shift, shift, 2) * size)
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return np.stack([np.asarray(Image.fromarray(c.astype(np.float32)).transform(
        (size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR)) for c in image])


def synth(labels: np.ndarray, size: int, rng: np.random.Generator, canvas: int = 64) -> np.ndarray:
    """SynthDigits-like: one rendered digit per label, (N, 1, size, size) in [-1, 1]."""
    fonts = digit_fonts()
    if not fonts:
        raise RuntimeError("no bundled matplotlib font renders the digits 0-9")
    fg, bg = _contrasting_colours(len(labels), rng)
    out = np.empty((len(labels), 1, size, size), dtype=np.float32)
    for i, label in enumerate(labels):
        font = fonts[rng.integers(len(fonts))]
        ink = _render(font, str(int(label)), px=int(rng.integers(44, 58)), canvas=canvas, stroke=int(rng.integers(0, 3)))
        ink = np.clip(_affine(ink[None], rng)[0], 0.0, 1.0)
        rgb = ink[None] * fg[i][:, None, None] + (1.0 - ink[None]) * bg[i][:, None, None]
        small = _resize(rgb.transpose(1, 2, 0), (size, size)).transpose(2, 0, 1)
        out[i] = _grey(np.clip(small, 0.0, 1.0)[None], np.float32)[0]
    return out


# --- colour shifts (colour images only) -----------------------------------------------------

def hue_rotated(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 120-degree hue rotation, exact on RGB: R -> G -> B -> R (luma and saturation change
    little; every hue moves by a third of the wheel)."""
    return np.ascontiguousarray(images[:, [2, 0, 1]])


def channel_swap(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Red and blue swapped (BGR read as RGB: a common pipeline slip, a real domain shift)."""
    return np.ascontiguousarray(images[:, [2, 1, 0]])


def greyscale(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The colour taken out: ITU-R 601 luma in all three channels."""
    luma = np.tensordot(np.asarray(LUMA, dtype=np.float32), images, axes=([0], [1]))
    return np.repeat(luma[:, None], 3, axis=1).astype(images.dtype)


DOMAINS = {f.__name__: f for f in (original, inverted, rotated, blurred_noise, contrast, mnistm, svhn, usps,
                                   hue_rotated, channel_swap, greyscale)}
GENERATED = {"synth": synth}  # domains that make their own images for given labels
# Domains that make grey images whatever they are given (composited, then turned to grey); the
# transforms above them work on every channel alike, colour included.
GREY_ONLY = ("mnistm", "svhn", "usps", "synth")
COLOUR_ONLY = ("hue_rotated", "channel_swap", "greyscale")  # no shift at all on a grey image
# `partition.feature_shift.domains: auto`: FRAug's digit domains (look-alikes of MNIST-M, SVHN,
# USPS and SynthDigits) for grey sources of the digits 0-9; for any other source, transforms
# of its own images, colour shifts among them for a colour source.
AUTO_DIGITS = ("original", "synth", "mnistm", "svhn", "usps", "inverted")
AUTO_GREY = ("original", "inverted", "rotated", "blurred_noise", "contrast")
AUTO_COLOUR = ("original", "hue_rotated", "channel_swap", "greyscale", "inverted", "blurred_noise")


def is_digit_source(class_names: list, num_classes: int) -> bool:
    """The source's classes are the digits 0-9 (what `synth` renders and the look-alikes mimic)."""
    return num_classes == 10 and [str(n) for n in class_names] == [str(c) for c in range(10)]


def auto_domains(class_names: list, num_classes: int, channels: int) -> tuple[tuple[str, ...], str]:
    """The feature-shift domains `auto` picks for a source, and why (reports/partition says it)."""
    digits = is_digit_source(class_names, num_classes)
    if digits and channels == 1:
        return AUTO_DIGITS, "grey digits 0-9: the digit-dataset look-alikes FRAug's benchmark uses"
    kind = "colour" if channels == 3 else "grey"
    what = "digits" if digits else "not the digits 0-9"
    chosen = AUTO_COLOUR if channels == 3 else AUTO_GREY
    return chosen, f"a {kind} source ({what}): transforms of its own images"


def apply_domain(name: str, images: np.ndarray, seed: int) -> np.ndarray:
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; allowed: {sorted(DOMAINS)}")
    return DOMAINS[name](images, np.random.default_rng(seed))


def generate_domain(name: str, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    if name not in GENERATED:
        raise ValueError(f"unknown generated domain {name!r}; allowed: {sorted(GENERATED)}")
    return GENERATED[name](labels, size, np.random.default_rng(seed))


def domain_statistics(images: np.ndarray) -> dict[str, float]:
    """What tells the domains apart, measured: pixel mean and std, and edge energy (mean squared
    difference between neighbouring pixels)."""
    x = images.astype(np.float64)
    edges = (np.diff(x, axis=-1) ** 2).mean() + (np.diff(x, axis=-2) ** 2).mean()
    return {"mean": float(x.mean()), "std": float(x.std()), "edge_energy": float(edges)}
