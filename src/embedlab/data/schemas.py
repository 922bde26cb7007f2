"""pandera contracts for the prepared manifest (one row per image, see `prepare`).

`manifest_schema(num_classes)` binds the one dynamic rule (label < num_classes)
onto the static `ManifestSchema`. `check_manifest` validates lazily, so every
broken rule is collected, and turns pandera's failure cases into one readable
`CheckOutcome` per (column, rule): what failed, how often, on which values and
which rows' sample_ids. The rules that held are listed too (one line per
column), so a report shows what was checked, not only what broke.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

SPLIT_NAMES = ("train", "val", "test")
# Pixels are scaled to [-1, 1] in float32; float32 rounding may step just past the edge.
PIXEL_TOLERANCE = 1e-4
SHOWN = 5  # failing values / sample_ids quoted per check; the count says how many in all


class ManifestSchema(pa.DataFrameModel):
    """Static rules; use `manifest_schema(num_classes)` for the bound on `label`."""

    sample_id: Series[str] = pa.Field(unique=True)
    label: Series[np.int64] = pa.Field(ge=0)
    split: Series[str] = pa.Field(isin=list(SPLIT_NAMES))
    source: Series[str]
    mean: Series[np.float64] = pa.Field(ge=-1.0 - PIXEL_TOLERANCE, le=1.0 + PIXEL_TOLERANCE)
    std: Series[np.float64] = pa.Field(ge=0.0)
    min: Series[np.float64] = pa.Field(ge=-1.0 - PIXEL_TOLERANCE)
    max: Series[np.float64] = pa.Field(le=1.0 + PIXEL_TOLERANCE)

    # NaN is already caught by `nullable=False`; this adds +-inf. The function is named as the
    # check because pandera pops `name=` on first use, so subclasses would report "_finite".
    @pa.check("mean", "std", "min", "max")
    def finite(cls, column: pd.Series) -> pd.Series:
        return pd.Series(np.isfinite(column.to_numpy(dtype=np.float64, na_value=np.nan)), index=column.index)

    class Config:
        strict = False  # extra columns are harmless to every later stage
        coerce = False  # a wrong dtype is a finding, not something to paper over


_SCHEMAS: dict[int, type[ManifestSchema]] = {}


def manifest_schema(num_classes: int) -> type[ManifestSchema]:
    """ManifestSchema with `label < num_classes`; one class per count, cached."""
    num_classes = int(num_classes)
    if num_classes not in _SCHEMAS:

        class BoundedManifestSchema(ManifestSchema):
            label: Series[np.int64] = pa.Field(ge=0, lt=num_classes)

        BoundedManifestSchema.__name__ = f"ManifestSchema(num_classes={num_classes})"
        _SCHEMAS[num_classes] = BoundedManifestSchema
    return _SCHEMAS[num_classes]


@dataclass
class CheckOutcome:
    """One rule and how it went; `validate` adds the engine that ran it."""

    check: str
    column: str | None
    success: bool
    details: str


def _rule_names(schema: pa.DataFrameSchema) -> list[tuple[str | None, str]]:
    """(column, check) for every rule the schema applies, named as pandera names failures."""
    rules: list[tuple[str | None, str]] = []
    for name, column in schema.columns.items():
        rules.append((name, "column_in_dataframe"))
        if column.dtype is not None:
            rules.append((name, f"dtype('{column.dtype}')"))
        if not column.nullable:
            rules.append((name, "not_nullable"))
        if column.unique:
            rules.append((name, "field_uniqueness"))
        rules.extend((name, check.error or check.name) for check in column.checks)
    rules.extend((None, check.error or check.name) for check in schema.checks)
    return rules


def _quote(values, limit: int = SHOWN) -> str:
    values = list(values)
    shown = ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in values[:limit])
    return f"[{shown}{', …' if len(values) > limit else ''}]"


def _describe_failures(check: str, cases: pd.DataFrame, manifest: pd.DataFrame) -> str:
    rows = cases["index"].dropna()
    values = cases["failure_case"]
    parts = []
    if len(rows):
        parts.append(f"{len(rows)} row(s) fail")
        distinct = pd.unique(values.astype(str)) if len(values) else []
        parts.append(f"values {_quote(distinct)}")
        if "sample_id" in manifest.columns:
            ids = manifest["sample_id"].reindex(pd.unique(rows)).dropna()
            parts.append(f"sample_ids {_quote(pd.unique(ids))}")
    elif check == "column_in_dataframe":
        parts.append("column missing from the manifest")
    else:
        # Other column-level failures (a wrong dtype) carry no row index, only what was found.
        parts.append(f"found {_quote(pd.unique(values.astype(str)))}")
    return "; ".join(parts)


def check_manifest(manifest: pd.DataFrame, num_classes: int) -> list[CheckOutcome]:
    """Every manifest rule with its outcome; failing ones name values and sample_ids."""
    model = manifest_schema(num_classes)
    schema = model.to_schema()
    failures = pd.DataFrame(columns=["column", "check", "failure_case", "index"])
    try:
        model.validate(manifest, lazy=True)
    except pa.errors.SchemaErrors as exc:
        failures = exc.failure_cases
    except pa.errors.SchemaError as exc:  # raised instead of SchemaErrors for some frame-level errors
        failures = pd.DataFrame(
            [{"column": getattr(exc, "column_name", None), "check": str(exc.check), "failure_case": str(exc), "index": None}]
        )

    failures = failures.assign(check=failures["check"].astype(str))
    missing = failures["check"].eq("column_in_dataframe")
    # pandera files a missing column under the schema's name, the column itself as the value.
    failures.loc[missing, "column"] = failures.loc[missing, "failure_case"]
    checks: list[CheckOutcome] = []
    for (column, check), cases in failures.groupby(["column", "check"], dropna=False, sort=False):
        column = None if pd.isna(column) else str(column)
        checks.append(CheckOutcome(check, column, False, _describe_failures(check, cases, manifest)))
    failed = {(c.column, c.check) for c in checks}
    # pandera runs no value checks on a missing column: those are not passes.
    blocked = {c.column for c in checks if c.check == "column_in_dataframe"}
    passed: dict[str | None, list[str]] = {}
    for column, check in _rule_names(schema):
        if (column, check) not in failed and column not in blocked:
            passed.setdefault(column, []).append(check)
    # One line per column for what held keeps a report short; failures stay one per rule.
    checks.extend(CheckOutcome("rules held", col, True, ", ".join(names)) for col, names in passed.items())
    return checks


class PartitionReportSchema(pa.DataFrameModel):
    """The partition stage's long report: one row per (setting, client, split, label)."""

    setting: Series[str] = pa.Field(str_matches=r"^(feature_shift|label_skew(_alpha[0-9.e+-]+)?)$")
    client: Series[np.int64] = pa.Field(ge=0)
    client_name: Series[str]
    split: Series[str] = pa.Field(isin=list(SPLIT_NAMES))
    label: Series[np.int64] = pa.Field(ge=0)
    count: Series[np.int64] = pa.Field(ge=0)

    class Config:
        strict = True
        coerce = False
        unique = ["setting", "client", "split", "label"]


def partition_report_schema(num_classes: int) -> pa.DataFrameSchema:
    """PartitionReportSchema with `label < num_classes` (a histogram bin per class, no more)."""
    schema = PartitionReportSchema.to_schema()
    return schema.update_column("label", checks=[pa.Check.ge(0), pa.Check.lt(int(num_classes))])
