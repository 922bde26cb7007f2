"""Raw image sources named by `data.source`: bundled digits, an .npz file, an image folder.

A source never stops on bad data: whatever it cannot read becomes an
`IngestProblem` (file + what is wrong), and the `validate` stage turns the list
into its failure report, beside every other broken rule, so a user sees all of
it at once.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@dataclass
class IngestProblem:
    file: str
    problem: str

    def as_dict(self) -> dict:
        return {"file": self.file, "problem": self.problem}


@dataclass
class RawDataset:
    """Images as a list of float arrays, (H, W) grey or (H, W, 3) colour (sizes may differ),
    with one label and id each. `notes`: conversions done on the way in (RGBA -> RGB, palette
    -> RGB), logged by `prepare`; `problems`: files that could not be used."""

    images: list[np.ndarray]
    labels: np.ndarray
    ids: list[str]
    source: str
    class_names: list[str] | None = None
    pixel_range: tuple[float, float] | None = None
    problems: list[IngestProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def _empty(source: str, problems: list[IngestProblem]) -> RawDataset:
    return RawDataset([], np.zeros(0, dtype=np.int64), [], source, problems=problems)


LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601: RGB -> grey, here and in data.domains


def is_colour(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[-1] == 3


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) grey -> (H, W, 3), the grey in every channel; colour as it is."""
    return image if is_colour(image) else np.repeat(np.asarray(image, dtype=np.float64)[..., None], 3, axis=-1)


def to_gray(image: np.ndarray, channels_last: bool = True) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) -> (H, W) float64; RGB(A) by ITU-R 601 luma."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        return image
    if not channels_last:
        image = np.moveaxis(image, 0, -1)
    if image.shape[-1] == 1:
        return image[..., 0]
    return image[..., :3] @ LUMA


def load_digits_source() -> RawDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [img.astype(np.float64) for img in digits.images]
    ids = [f"digits-{i:04d}" for i in range(len(images))]
    names = [str(c) for c in digits.target_names]
    return RawDataset(images, digits.target.astype(np.int64), ids, "sklearn-digits", names, (0.0, 16.0))


def _npz_image_layout(shape: tuple[int, ...]) -> str | None:
    """'nhw', 'nhwc' or 'nchw' for the layouts we accept, else None."""
    if len(shape) == 3 and min(shape[1:]) >= 2:
        return "nhw"
    if len(shape) == 4 and shape[3] in (1, 3, 4) and min(shape[1:3]) >= 2:
        return "nhwc"
    if len(shape) == 4 and shape[1] in (1, 3) and min(shape[2:]) >= 2:
        return "nchw"
    return None


def load_npz_source(path: Path) -> RawDataset:
    source = f"npz:{path}"
    name = str(path)
    if not path.is_file():
        return _empty(source, [IngestProblem(name, "file not found")])
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        return _empty(source, [IngestProblem(name, f"cannot read npz ({type(exc).__name__}: {exc})")])

    problems = [IngestProblem(name, f"missing array {key!r}") for key in ("images", "labels") if key not in arrays]
    if problems:
        return _empty(source, problems + [IngestProblem(name, f"arrays present: {sorted(arrays)}")])

    images, labels = arrays["images"], arrays["labels"]
    layout = _npz_image_layout(images.shape)
    if layout is None:
        problems.append(
            IngestProblem(name, f"array 'images' has shape {images.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
        )
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(images.dtype, np.complexfloating):
        problems.append(IngestProblem(name, f"array 'images' has dtype {images.dtype}; expected a real number type"))
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        problems.append(
            IngestProblem(name, f"array 'labels' has shape {labels.shape} and dtype {labels.dtype}; expected (N,) integers")
        )
    elif layout is not None and len(labels) != len(images):
        problems.append(IngestProblem(name, f"{len(images)} images but {len(labels)} labels"))
    ids = [f"{path.stem}-{i:06d}" for i in range(len(images))]
    if "ids" in arrays:
        if arrays["ids"].shape != (len(images),):
            problems.append(IngestProblem(name, f"array 'ids' has shape {arrays['ids'].shape}; expected ({len(images)},)"))
        else:
            ids = [str(v) for v in arrays["ids"]]
    if problems:
        return _empty(source, problems)

    pixel_range = (0.0, 255.0) if images.dtype == np.uint8 else None
    notes = []
    channels = 1 if layout == "nhw" else images.shape[1] if layout == "nchw" else images.shape[3]
    if layout == "nchw":
        images = np.moveaxis(images, 1, -1)
    if channels == 4:
        notes.append(f"{name}: RGBA images (N, H, W, 4): the alpha channel dropped, RGB kept")
    if channels == 1:
        kept = [np.asarray(img, dtype=np.float64).reshape(img.shape[0], img.shape[1]) for img in images]
    else:
        kept = [np.asarray(img[..., :3], dtype=np.float64) for img in images]
    return RawDataset(kept, labels.astype(np.int64), ids, source, None, pixel_range, notes=notes)


def load_folder_source(path: Path) -> RawDataset:
    from PIL import Image, UnidentifiedImageError

    source = f"folder:{path}"
    if not path.is_dir():
        return _empty(source, [IngestProblem(str(path), "folder not found")])
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    images, labels, ids, problems, converted = [], [], [], [], {}
    for label, class_dir in enumerate(class_dirs):
        files = sorted(f for f in class_dir.rglob("*") if f.is_file() and not f.name.startswith("."))
        for file in files:
            rel = file.relative_to(path).as_posix()
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                problems.append(IngestProblem(rel, f"not an image file (suffix {file.suffix or 'none'!r})"))
                continue
            try:
                with Image.open(file) as img:
                    img.load()
                    pixels, how = _pixels(img)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                problems.append(IngestProblem(rel, f"unreadable image ({type(exc).__name__}: {exc})"))
                continue
            if how:
                converted.setdefault(how, []).append(rel)
            images.append(pixels)
            labels.append(label)
            ids.append(rel)
    if not images and not problems:
        found = [d.name for d in class_dirs]
        problems.append(
            IngestProblem(str(path), f"no images found (class sub-folders: {found or 'none'}); expected <folder>/<class>/<image>")
        )
    names = [d.name for d in class_dirs]
    notes = [f"{source}: {len(files)} image(s) {how} (e.g. {files[0]})" for how, files in sorted(converted.items())]
    return RawDataset(images, np.asarray(labels, dtype=np.int64), ids, source, names, (0.0, 255.0), problems, notes)


# PIL modes: grey ones read as (H, W) (PIL's own conversion to 8-bit grey, as before colour),
# RGB as (H, W, 3) on 0..255. The others are converted where the intent is plain, and the
# conversion is reported: alpha dropped, a palette looked up, CMYK / YCbCr / LAB / HSV to RGB.
_GREY_MODES = {"L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _pixels(img) -> tuple[np.ndarray, str | None]:
    mode = img.mode
    if mode in _GREY_MODES:
        return np.asarray(img.convert("L"), dtype=np.float64), None
    if mode == "RGB":
        return np.asarray(img, dtype=np.float64), None
    if mode == "LA":
        return np.asarray(img.convert("L"), dtype=np.float64), "grey with alpha -> grey (alpha dropped)"
    if mode in ("P", "PA") and _palette_is_grey(img):
        return np.asarray(img.convert("L"), dtype=np.float64), "palette of greys -> grey"
    how = {"RGBA": "RGBA -> RGB (alpha dropped)", "P": "palette -> RGB", "PA": "palette -> RGB (alpha dropped)"}
    return np.asarray(img.convert("RGB"), dtype=np.float64), how.get(mode, f"{mode} -> RGB")


def _palette_is_grey(img) -> bool:
    palette = img.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


RAW_DIR = Path("data/raw")


def source_location(spec: str, root: Path = Path(".")) -> Path | None:
    """The file or folder an `npz:`/`folder:` source names (relative to root); None for bundled data."""
    if spec == "sklearn-digits":
        return None
    location = Path(spec.partition(":")[2]).expanduser()
    return location if location.is_absolute() else root / location


def untracked_source_problem(spec: str, root: Path = Path(".")) -> str | None:
    """Why DVC cannot version this source, or None.

    The `prepare` stage depends on data/raw/ (dvc.yaml), so a change to any byte under it
    reruns prepare; data anywhere else would be read without DVC seeing it change.
    """
    location = source_location(spec, root)
    if location is None:
        return None
    raw = (root / RAW_DIR).resolve()
    if location.resolve().is_relative_to(raw):
        return None
    return (
        f"data.source {spec!r} points outside {RAW_DIR}/ ({location.resolve()}): the prepare stage depends on "
        f"{RAW_DIR}/, so DVC would not see that data change. Put it under {RAW_DIR}/ and track it: "
        f"`dvc add {RAW_DIR}/<name>` (or `dvc import <repo> <path> -o {RAW_DIR}/<name>`, "
        f"or `dvc import-url <url> {RAW_DIR}/<name>`), then set data.source: "
        f"{spec.partition(':')[0]}:{RAW_DIR}/<name>"
    )


def load_source(spec: str, root: Path = Path(".")) -> RawDataset:
    location = source_location(spec, root)
    if location is None:
        return load_digits_source()
    kind = spec.partition(":")[0]
    if kind == "npz":
        return load_npz_source(location)
    if kind == "folder":
        return load_folder_source(location)
    raise ValueError(f"data.source: unknown source {spec!r}")
