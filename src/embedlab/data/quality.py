"""Great Expectations checks over the prepared dataset as a whole, with Data Docs.

pandera (schemas.py) checks each manifest row; this module checks what only the
whole dataset shows: enough rows, enough rows per split, split proportions,
every class in every split, class balance, intensity statistics.

GX has no rule for "share of a group", so two derived tables carry them: one
row per split and one row per (split, class), each checked with plain
column-value-between expectations. A Checkpoint hands the same batch_parameters
to every ValidationDefinition, so the manifest and both derived tables travel
as one long dataframe with a `table` column, and each suite picks its rows with
a row_condition. A `key` column names every row (sample_id, split, or
"split/class N") so failures say which rows broke.

The GX project is file-based under reports/validation/gx/ and rebuilt on every
run, so a run never reads state an earlier run left behind.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from embedlab.data.schemas import PIXEL_TOLERANCE, SHOWN, SPLIT_NAMES, CheckOutcome
from embedlab.params import Params

GX_DIRNAME = "gx"
CHECKPOINT_NAME = "prepared_data"
# What the derived tables are built from; without these the dataset-level checks say nothing.
MANIFEST_COLUMNS = ("sample_id", "label", "split", "mean", "std", "min", "max")


@dataclass
class QualityReport:
    checks: list[CheckOutcome]
    data_docs: Path | None  # Data Docs index.html, when it was built


def gx_root(report_dir: Path) -> Path:
    return Path(report_dir) / GX_DIRNAME


def data_docs_index(report_dir: Path) -> Path:
    return gx_root(report_dir) / "uncommitted" / "data_docs" / "local_site" / "index.html"


def expected_split_fractions(params: Params) -> dict[str, float]:
    val, test = params.data.val_fraction, params.data.test_fraction
    return {"train": 1.0 - val - test, "val": val, "test": test}


def split_table(manifest: pd.DataFrame, params: Params) -> pd.DataFrame:
    """One row per split (empty splits included): rows, fraction, deviation from params."""
    total = len(manifest)
    rows = manifest["split"].value_counts().reindex(SPLIT_NAMES, fill_value=0)
    expected = expected_split_fractions(params)
    table = pd.DataFrame({"key": list(SPLIT_NAMES), "rows": rows.to_numpy(dtype=np.int64)})
    table["fraction"] = table["rows"] / total if total else 0.0
    table["expected_fraction"] = [expected[s] for s in SPLIT_NAMES]
    table["fraction_deviation"] = table["fraction"] - table["expected_fraction"]
    return table


def class_table(manifest: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    """One row per (split, class) for classes 0..K-1, absent pairs as count 0.

    Labels outside 0..K-1 are pandera's finding; they do not count here."""
    index = pd.MultiIndex.from_product([SPLIT_NAMES, range(num_classes)], names=["split", "label"])
    counts = manifest.groupby(["split", "label"]).size().reindex(index, fill_value=0)
    table = counts.rename("count").reset_index()
    split_rows = manifest["split"].value_counts().reindex(SPLIT_NAMES, fill_value=0)
    per_split = table["split"].map(split_rows).to_numpy(dtype=np.float64)
    table["share"] = np.divide(table["count"], per_split, out=np.zeros(len(table)), where=per_split > 0)
    table.insert(0, "key", table["split"] + "/class " + table["label"].astype(str))
    return table.drop(columns=["split", "label"])


def quality_frame(manifest: pd.DataFrame, params: Params, num_classes: int) -> pd.DataFrame:
    """The manifest and both derived tables as one long frame (see the module docstring)."""
    images = manifest[["sample_id", "mean", "std", "min", "max"]].rename(columns={"sample_id": "key"})
    parts = {"manifest": images, "splits": split_table(manifest, params), "classes": class_table(manifest, num_classes)}
    frame = pd.concat([part.assign(table=name) for name, part in parts.items()], ignore_index=True)
    frame["key"] = frame["key"].astype(str)
    return frame


def _import_gx():
    # Analytics would try the network on import; there is none, and nothing should leave anyway.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    return gx


def _suites(params: Params, num_classes: int) -> dict[str, list]:
    """Suite name -> expectations; meta names the check, the column and the unit reports use."""
    gx = _import_gx()
    from great_expectations.expectations.row_conditions import Column

    rules, expect = params.validate_, gx.expectations
    pixel = (-1.0 - PIXEL_TOLERANCE, 1.0 + PIXEL_TOLERANCE)
    k, tol = max(num_classes, 1), rules.class_balance_tolerance
    share = ((1 - tol) / k, (1 + tol) / k)
    deviation = (-rules.split_fraction_tolerance, rules.split_fraction_tolerance)

    def rule(kind, table: str, check: str, reported: str | None, unit: str, bounds=(None, None), **kwargs):
        # `reported` is the column a reader knows (label, split), not the derived one GX reads.
        meta = {"check": check, "column": reported, "unit": unit}
        on = Column("table") == table
        return kind(min_value=bounds[0], max_value=bounds[1], row_condition=on, meta=meta, **kwargs)

    values, mean = expect.ExpectColumnValuesToBeBetween, expect.ExpectColumnMeanToBeBetween
    pairs = "(split, class) pairs"
    return {
        "manifest": [
            rule(expect.ExpectTableRowCountToBeBetween, "manifest", "min_rows", None, "images", (rules.min_rows, None)),
            rule(mean, "manifest", "mean_intensity", "mean", "images", rules.mean_intensity_range, column="mean"),
            rule(mean, "manifest", "std_intensity", "std", "images", rules.std_intensity_range, column="std"),
            rule(values, "manifest", "pixel_min_in_range", "min", "images", pixel, column="min"),
            rule(values, "manifest", "pixel_max_in_range", "max", "images", pixel, column="max"),
        ],
        "splits": [
            rule(values, "splits", "min_rows_per_split", "split", "splits", (rules.min_rows_per_split, None), column="rows"),
            rule(values, "splits", "split_fractions", "split", "splits", deviation, column="fraction_deviation"),
        ],
        "classes": [
            rule(values, "classes", "class_in_every_split", "label", pairs, (1, None), column="count"),
            rule(values, "classes", "class_balance", "label", pairs, share, column="share"),
        ],
    }


def _fmt(value) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _bounds(kwargs: dict) -> str:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is not None and hi is not None:
        return f"[{_fmt(lo)}, {_fmt(hi)}]"
    return f">= {_fmt(lo)}" if lo is not None else f"<= {_fmt(hi)}"


def _describe(result) -> str:
    config = result.expectation_config
    meta, kwargs, outcome = config.meta or {}, config.kwargs, result.result or {}
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return f"GX could not evaluate it: {info.get('exception_message')}"
    if "observed_value" in outcome:
        what = "rows" if "column" not in kwargs else f"mean of per-image {kwargs['column']}"
        return f"{what} = {_fmt(outcome['observed_value'])}; expected {_bounds(kwargs)}"
    bad, total = outcome.get("unexpected_count", 0), outcome.get("element_count", 0)
    column = kwargs.get("column")
    text = f"{bad} of {total} {meta.get('unit', 'rows')} outside {_bounds(kwargs)} ({column})"
    if bad:
        listed = outcome.get("partial_unexpected_index_list") or []
        shown = ", ".join(f"{row.get('key')}: {_fmt(row.get(column))}" for row in listed[:SHOWN])
        text += f": {shown}{', …' if bad > SHOWN else ''}"
    return text


def _quiet_context(root: Path):
    gx = _import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(root))
    # Progress bars would flood DVC and pytest logs with one line per metric batch.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.variables.save()
    return context


def run_quality_checks(manifest: pd.DataFrame, params: Params, num_classes: int, report_dir: Path) -> QualityReport:
    """Run the one Checkpoint over `manifest`; Data Docs land at `data_docs_index(report_dir)`."""
    gx = _import_gx()
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(gx_root(report_dir), ignore_errors=True)
    context = _quiet_context(report_dir)

    frame = quality_frame(manifest, params, num_classes)
    asset = context.data_sources.add_pandas("prepared").add_dataframe_asset("dataset")
    batch = asset.add_batch_definition_whole_dataframe("whole")
    definitions = []
    for name, expectations in _suites(params, num_classes).items():
        suite = context.suites.add(gx.ExpectationSuite(name=name))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definition = gx.ValidationDefinition(name=name, data=batch, suite=suite)
        definitions.append(context.validation_definitions.add(definition))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=CHECKPOINT_NAME,
            validation_definitions=definitions,
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "SUMMARY", "unexpected_index_column_names": ["key"]},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})

    checks = []
    for suite_result in result.run_results.values():
        for expectation in suite_result.results:
            meta = expectation.expectation_config.meta or {}
            check = meta.get("check", expectation.expectation_config.type)
            checks.append(CheckOutcome(check, meta.get("column"), bool(expectation.success), _describe(expectation)))
    index = data_docs_index(report_dir)
    return QualityReport(checks, index if index.is_file() else None)
