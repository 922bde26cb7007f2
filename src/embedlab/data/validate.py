"""The `validate` stage: the data gate between `prepare` and everything that trains.

Four engines run in order and every one reports all it finds, so a user fixes
everything in one pass instead of one error per run:

  ingest              the prepared bundle reads, and the source had no unreadable files
  arrays              images.npy / labels.npy agree with the manifest and meta.json
  pandera             per-row manifest contract (schemas.py)
  great_expectations  dataset-level rules and Data Docs (quality.py)

reports/validation/summary.json is written on every run, pass or fail; a failure
then raises DataValidationError listing each failed check on its own line.
"""

from __future__ import annotations

import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedlab.data import quality
from embedlab.data.prepare import PreparedData, read_prepared
from embedlab.data.schemas import PIXEL_TOLERANCE, SHOWN, check_manifest
from embedlab.io import write_json_atomic
from embedlab.params import Params
from embedlab.paths import Paths

SUMMARY_NAME = "summary.json"


class DataValidationError(RuntimeError):
    """The prepared data broke at least one check; the message lists every failed one."""


@dataclass
class Check:
    check: str
    engine: str  # ingest | arrays | pandera | great_expectations
    success: bool
    column: str | None
    details: str

    def line(self) -> str:
        column = f" [{self.column}]" if self.column else ""
        return f"FAILED {self.engine} {self.check}{column}: {self.details}"


def _quote(values) -> str:
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    return f"[{', '.join(map(repr, values[:SHOWN]))}{', …' if len(values) > SHOWN else ''}]"


def ingest_checks(meta: dict) -> list[Check]:
    problems = meta.get("ingest_problems") or []
    if not problems:
        return [Check("source_files", "ingest", True, None, f"{meta.get('source', 'source')}: every file read")]
    return [
        Check("source_files", "ingest", False, None, f"{p.get('file', '?')}: {p.get('problem', 'unknown problem')}")
        for p in problems
    ]


def _ids_at(manifest, positions: np.ndarray) -> str:
    """sample_ids of row positions, or the positions when the manifest cannot name them."""
    if "sample_id" in manifest.columns and len(manifest) and positions.max(initial=-1) < len(manifest):
        return f"sample_ids {_quote(manifest['sample_id'].to_numpy()[positions])}"
    return f"rows {_quote(positions)}"


def array_checks(data: PreparedData) -> list[Check]:
    """images.npy / labels.npy against the manifest and meta.json."""
    images, labels, manifest, meta = data.images, data.labels, data.manifest, data.meta
    rows, size = len(manifest), meta.get("image_size")
    checks: list[Check] = []

    def add(check: str, ok: bool, details: str, column: str | None = None) -> None:
        checks.append(Check(check, "arrays", bool(ok), column, details))

    add("rows_present", rows > 0, f"{rows} rows" if rows else "prepared data has 0 rows: nothing was ingested")
    num_classes = meta.get("num_classes")
    add(
        "num_classes",
        isinstance(num_classes, int) and (num_classes >= 2 or rows == 0),
        f"meta.json num_classes = {num_classes!r}; expected an integer >= 2",
    )
    # C: 1 (grey) or 3 (colour), what prepare made of the source (data.channels)
    channels = images.shape[1] if images.ndim == 4 and images.shape[1] in (1, 3) else 1
    add("images_ndim", images.ndim == 4,
        f"images.npy has {images.ndim} dims {images.shape}; expected 4 (N, {channels}, S, S)")
    expected = (rows, channels, size, size)
    add(
        "images_shape",
        images.shape == expected,
        f"images.npy shape {images.shape}; expected {expected} (N = manifest rows, S = meta image_size)",
    )
    add("images_dtype", images.dtype == np.float32, f"images.npy dtype {images.dtype}; expected float32")
    labels_ok = labels.ndim == 1 and len(labels) == rows
    add("labels_shape", labels_ok, f"labels.npy shape {labels.shape}; expected ({rows},) to match the manifest")
    if labels_ok and "label" in manifest.columns:
        differ = np.flatnonzero(labels != manifest["label"].to_numpy())
        add(
            "labels_match_manifest",
            len(differ) == 0,
            f"{len(differ)} of {rows} labels differ from manifest.label"
            + (f": {_ids_at(manifest, differ)}" if len(differ) else ""),
            "label",
        )

    if images.ndim >= 1 and images.size and np.issubdtype(images.dtype, np.number):
        flat = images.reshape(len(images), -1)
        nan_per_image, inf_per_image = np.isnan(flat).sum(axis=1), np.isinf(flat).sum(axis=1)
        bad = np.flatnonzero(nan_per_image + inf_per_image)
        details = (
            f"{int(nan_per_image.sum())} NaN and {int(inf_per_image.sum())} inf pixels in {len(bad)} image(s): "
            f"{_ids_at(manifest, bad)}"
            if len(bad)
            else "all pixels finite"
        )
        add("pixels_finite", len(bad) == 0, details)
        finite = np.where(np.isfinite(flat), flat, 0.0)
        low, high = finite.min(axis=1), finite.max(axis=1)
        outside = np.flatnonzero((low < -1 - PIXEL_TOLERANCE) | (high > 1 + PIXEL_TOLERANCE))
        add(
            "pixel_range",
            len(outside) == 0,
            f"finite pixels span [{low.min():.4g}, {high.max():.4g}]; expected within [-1, 1]"
            + (f"; {len(outside)} image(s) outside: {_ids_at(manifest, outside)}" if len(outside) else ""),
        )
        if images.ndim == 4 and images.shape[1] == 3:  # colour: per-channel statistics, no dead channel
            per = finite.reshape(images.shape).transpose(1, 0, 2, 3).reshape(3, -1)
            means, stds = per.mean(axis=1), per.std(axis=1)
            dead = [name for name, sd in zip("RGB", stds) if sd < 0.01]
            add("channel_spread", not dead,
                "per channel (R, G, B) mean " + ", ".join(f"{m:.3f}" for m in means) + "; std "
                + ", ".join(f"{sd:.3f}" for sd in stds)
                + (f"; channel(s) {', '.join(dead)} constant over the data set (std < 0.01)" if dead else ""))
    return checks


def _gx_skip_reason(data: PreparedData, arrays: list[Check]) -> str | None:
    if len(data.manifest) == 0:
        return "prepared data has 0 rows"
    missing = [c for c in quality.MANIFEST_COLUMNS if c not in data.manifest.columns]
    if missing:
        return f"manifest lacks columns {missing}"
    broken = [c.check for c in arrays if not c.success and c.check in ("num_classes", "images_ndim", "images_shape")]
    if broken:
        return f"the manifest no longer describes the arrays ({', '.join(broken)} failed)"
    return None


def _crashed(engine: str, exc: BaseException) -> Check:
    # A gate that cannot finish must still fail loudly and leave its summary behind.
    return Check("crashed", engine, False, None, "".join(traceback.format_exception_only(type(exc), exc)).strip())


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


@dataclass
class _Run:
    checks: list[Check] = field(default_factory=list)
    num_rows: int = 0
    num_classes: int = 0
    data_docs: str | None = None

    def summary(self) -> dict:
        failed = sum(not c.success for c in self.checks)
        return {
            "success": bool(self.checks) and not failed,
            "num_rows": int(self.num_rows),
            "num_classes": int(self.num_classes),
            "failed": failed,
            "checks": [
                {"check": c.check, "engine": c.engine, "success": c.success, "column": c.column, "details": c.details}
                for c in self.checks
            ],
            "data_docs": self.data_docs,
        }


def _run_engines(params: Params, paths: Paths, run: _Run) -> None:
    try:
        data = read_prepared(paths.prepared)
    except Exception as exc:  # a missing or corrupt bundle is a finding, not a crash
        details = str(exc) if isinstance(exc, FileNotFoundError) else f"cannot read {paths.prepared}: {exc!r}"
        run.checks.append(Check("read_prepared", "ingest", False, None, details))
        return
    run.num_rows = len(data.manifest)
    num_classes = data.meta.get("num_classes")
    run.num_classes = num_classes if isinstance(num_classes, int) else 0
    run.checks.extend(ingest_checks(data.meta))
    try:
        arrays = array_checks(data)
    except Exception as exc:
        arrays = [_crashed("arrays", exc)]
    run.checks.extend(arrays)
    try:
        outcomes = check_manifest(data.manifest, run.num_classes)
        run.checks.extend(Check(c.check, "pandera", c.success, c.column, c.details) for c in outcomes)
    except Exception as exc:
        run.checks.append(_crashed("pandera", exc))

    skip = _gx_skip_reason(data, arrays)
    if skip:
        # Counted as a failure: the dataset-level gate did not pass, it did not run.
        run.checks.append(Check("checkpoint", "great_expectations", False, None, f"not run: {skip}"))
        return
    try:
        report = quality.run_quality_checks(data.manifest, params, run.num_classes, paths.validation_report)
    except Exception as exc:
        run.checks.append(_crashed("great_expectations", exc))
        return
    run.checks.extend(Check(c.check, "great_expectations", c.success, c.column, c.details) for c in report.checks)
    run.data_docs = _relative(report.data_docs, paths.root) if report.data_docs else None


def validate_prepared(params: Params, paths: Paths) -> dict:
    """Check paths.prepared, write reports/validation/summary.json (always) and return it.

    Raises DataValidationError, one "FAILED <engine> <check> [column]: details" line per
    failed check, when anything failed."""
    report_dir = paths.validation_report
    # A stale Data Docs site from an earlier run must not outlive a run that skips GX.
    shutil.rmtree(quality.gx_root(report_dir), ignore_errors=True)
    run = _Run()
    try:
        _run_engines(params, paths, run)
    finally:
        summary = run.summary()
        write_json_atomic(report_dir / SUMMARY_NAME, summary)

    failed = [c for c in run.checks if not c.success]
    if failed:
        header = f"data validation failed: {len(failed)} of {len(run.checks)} checks (see {report_dir / SUMMARY_NAME})"
        raise DataValidationError("\n".join([header] + [c.line() for c in failed]))
    return summary


def format_summary(summary: dict) -> str:
    """summary.json as markdown: a status line and one table row per check."""
    status = "passed" if summary.get("success") else f"FAILED ({summary.get('failed', '?')} checks)"
    lines = [
        f"**Data validation {status}** — {summary.get('num_rows', 0)} rows, {summary.get('num_classes', 0)} classes",
        "",
        "| engine | check | column | result | details |",
        "|---|---|---|---|---|",
    ]
    for c in summary.get("checks", []):
        result = "ok" if c.get("success") else "**FAILED**"
        cells = [c.get("engine", ""), c.get("check", ""), c.get("column") or "", result, c.get("details", "")]
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    if summary.get("data_docs"):
        lines += ["", f"Data Docs: `{summary['data_docs']}`"]
    return "\n".join(lines) + "\n"
