"""Validation: refuse bad data before any training, and report what looks suspicious."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from tasks.data.dataset import DatasetHandle, target_values
from tasks.dataset_spec import DatasetSpec
from tasks.errors import DataError
from tasks.files import FileMemo, file_state

LABELS = (0, 1)
MIN_MULTICLASS_CLASSES = 3
MOST_FREQUENT_SHOWN = 5


class ColumnQuality(BaseModel):
    """One column as read: its kind, how many cells are missing, its distinct values."""

    column: str
    role: str  # feature or target
    kind: str  # numeric or categorical (features); classes or numbers (the target)
    missing: int
    distinct: int
    most_frequent: list[tuple[str, int]] = []  # categories and classes, with their counts


class DataQualityReport(BaseModel):
    """What validation found, kept so the UI can show it next to the results."""

    n_rows: int
    class_counts: dict[int | str, int]  # empty for a regression
    impossible_zeros: dict[str, int]
    positive_label: int | str | None = None  # a binary target's positive class
    rows_without_target: int = 0  # left out by the spec's drop_missing_target
    columns: list[ColumnQuality] = []


def _check_schema(frame: pd.DataFrame, spec: DatasetSpec, source_name: str) -> None:
    """Columns by name and order, so features never silently swap places."""
    expected = spec.used_columns
    if list(frame.columns) != expected:
        raise DataError(
            f"{source_name}: expected {len(expected)} columns {expected}, "
            f"found {len(frame.columns)} {list(frame.columns)}"
        )
    if frame.empty:
        raise DataError(f"{source_name}: the dataset has no rows")


def _first_non_number(series: pd.Series) -> tuple[int, object] | None:
    converted = pd.to_numeric(series, errors="coerce")
    bad = np.flatnonzero(converted.isna().to_numpy() & series.notna().to_numpy())
    bad = bad if bad.size else np.flatnonzero(series.isna().to_numpy())
    return (int(bad[0]), series.iloc[int(bad[0])]) if bad.size else None


def _check_finite_numbers(
    frame: pd.DataFrame, columns: list[str], source_name: str, missing_allowed: bool = False
) -> None:
    """Numbers only, and finite: an inf would train a model that scores garbage. Features may
    be missing (NaN), which each fold's preprocessing imputes."""
    for column in columns:
        series = frame[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            where = _first_non_number(series)
            detail = f" (row {where[0] + 1}: {where[1]!r})" if where else ""
            raise DataError(
                f"{source_name}: column {column!r} holds {series.dtype}, not numbers{detail}"
            )
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(values) | (np.isnan(values) if missing_allowed else False)
        bad = np.flatnonzero(~finite)
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{source_name}, row {row + 1}, column {column!r}: value {values[row]} "
                "is not a finite number"
            )


def _is_text(series: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def _plain_label(label: object) -> int | str:
    """A class label as the user wrote it: 2, not 2.0; text as text."""
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, float) and label.is_integer():
        return int(label)
    return label if isinstance(label, int) and not isinstance(label, bool) else str(label)


def _shown(label: int | str) -> str:
    return repr(label) if isinstance(label, str) else str(label)


def _check_whole_numbers(series: pd.Series, spec: DatasetSpec, source_name: str) -> None:
    """Numeric class labels are integers (1/2, -1/1, 0..9)."""
    if _is_text(series):
        return
    labels = series.to_numpy(dtype=np.float64)
    fractional = np.flatnonzero(labels != np.round(labels))
    if fractional.size:
        row = int(fractional[0])
        raise DataError(
            f"{source_name}, row {row + 1}, column {spec.target!r}: label {labels[row]:g} "
            "is not a whole number; class labels are integers or text"
        )


def _labels(series: pd.Series) -> pd.Series:
    return series.astype(str) if _is_text(series) else series.map(_plain_label)


def _check_binary_labels(series: pd.Series, spec: DatasetSpec, source_name: str) -> None:
    """Any two distinct labels: integers (0/1, 1/2, -1/1), text or booleans."""
    _check_whole_numbers(series, spec, source_name)
    codes, seen = pd.factorize(_labels(series))
    if len(seen) > 2:
        row = int(np.argmax(codes == 2))
        first, second = (_shown(_plain_label(label)) for label in seen[:2])
        raise DataError(
            f"{source_name}, row {row + 1}, column {spec.target!r}: label "
            f"{_shown(_plain_label(seen[2]))} is a third class; a binary target has two "
            f"({first}, {second}): use task: multiclass for three or more"
        )
    if len(seen) == 1:
        only = _plain_label(seen[0])
        absent = f"no rows of class {1 - only} in {spec.target!r}; " if only in LABELS else ""
        raise DataError(
            f"{source_name}: only one class present ({absent}every row is {_shown(only)}); "
            "a classifier needs both"
        )


def _check_multiclass_labels(series: pd.Series, spec: DatasetSpec, source_name: str) -> None:
    """Integer or text labels, at least three classes (two are a binary task)."""
    _check_whole_numbers(series, spec, source_name)
    classes = sorted({_plain_label(label) for label in _labels(series)}, key=str)
    if len(classes) < MIN_MULTICLASS_CLASSES:
        raise DataError(
            f"{source_name}: column {spec.target!r} holds {len(classes)} class(es) "
            f"{classes}; a multiclass task needs at least {MIN_MULTICLASS_CLASSES} "
            "(use task: binary for two)"
        )


def _refuse_missing_target(series: pd.Series, spec: DatasetSpec, source_name: str) -> None:
    """Rows without a target (data that did not pass through tasks.data.columns)."""
    missing = np.flatnonzero(series.isna().to_numpy())
    if missing.size:
        rows = ", ".join(str(row + 1) for row in missing[:5])
        raise DataError(
            f"{source_name}: {missing.size} row(s) have no value in the target {spec.target!r} "
            f"(rows {rows}{', ...' if missing.size > 5 else ''}): fill them in, or set "
            "`drop_missing_target: true` in the dataset spec to leave those rows out"
        )


def _check_labels(
    frame: pd.DataFrame, spec: DatasetSpec, n_splits: int, source_name: str
) -> dict[int | str, int]:
    """Labels fit the task, and every class has a row in each stratified fold."""
    series = frame[spec.target]
    _refuse_missing_target(series, spec, source_name)
    if not _is_text(series):
        _check_finite_numbers(frame, [spec.target], source_name)
    if spec.task == "binary":
        _check_binary_labels(series, spec, source_name)
    else:
        _check_multiclass_labels(series, spec, source_name)
    labels = target_values(series, spec.task)
    classes, counts = np.unique(labels, return_counts=True)
    class_counts = {
        _plain_label(label): int(count) for label, count in zip(classes, counts, strict=True)
    }
    for label, count in class_counts.items():
        if count < n_splits:
            raise DataError(
                f"{source_name}: class {label} has {count} rows, fewer than the {n_splits} folds "
                "(every stratified fold needs at least one row of each class)"
            )
    return class_counts


def _column_quality(
    frame: pd.DataFrame, spec: DatasetSpec, categories: dict[str, list[str]]
) -> list[ColumnQuality]:
    """Every used column: kind, missing cells, distinct values, the most frequent ones."""
    described = []
    for column in spec.used_columns:
        series = frame[column]
        is_target = column == spec.target
        named = categories.get(column)
        if is_target and spec.task != "regression":
            kind, counted = "classes", _labels(series).map(str)
        elif named is not None:
            kind = "categorical"
            counted = series.dropna().astype(int).map(lambda code, named=named: named[code])
        else:
            kind, counted = ("numbers" if is_target else "numeric"), None
        frequent = counted.value_counts().head(MOST_FREQUENT_SHOWN) if counted is not None else {}
        described.append(
            ColumnQuality(
                column=column,
                role="target" if is_target else "feature",
                kind=kind,
                missing=int(series.isna().sum()),
                distinct=int(series.nunique(dropna=True)),
                most_frequent=[(str(value), int(count)) for value, count in frequent.items()],
            )
        )
    return described


def validate_frame(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    n_splits: int,
    source_name: str,
    dataset: DatasetHandle | None = None,
) -> DataQualityReport:
    """Schema, finite numeric features (missing allowed), a target that fits the task, enough
    rows for the folds.

    `spec` must know its columns (a spec of a headerless CSV, or `with_file_columns`);
    `dataset`, the converted copy's handle, names the categories and the positive class.
    """
    _check_schema(frame, spec, source_name)
    _check_finite_numbers(frame, spec.feature_columns, source_name, missing_allowed=True)
    if spec.task == "regression":
        _refuse_missing_target(frame[spec.target], spec, source_name)
        _check_finite_numbers(frame, [spec.target], source_name)
        if len(frame) < n_splits:
            raise DataError(f"{source_name}: {len(frame)} rows, fewer than the {n_splits} folds")
        class_counts: dict[int | str, int] = {}
    else:
        class_counts = _check_labels(frame, spec, n_splits, source_name)
    zeros = {
        column: int((frame[column] == 0).sum())
        for column in spec.impossible_zero_columns
        if column in spec.feature_columns
    }
    positive = dataset.positive_label if dataset is not None else None
    if spec.task == "binary" and positive is None:
        positive = sorted(class_counts, key=str)[-1] if len(class_counts) == 2 else None
    return DataQualityReport(
        n_rows=len(frame),
        class_counts=class_counts,
        impossible_zeros=zeros,
        positive_label=positive,
        rows_without_target=dataset.rows_without_target if dataset is not None else 0,
        columns=_column_quality(frame, spec, dataset.categories if dataset is not None else {}),
    )


def quality_table(report: DataQualityReport) -> list[dict[str, str | int | float]]:
    """Zeros where zero is impossible, as plain Python numbers (Prefect refuses numpy's)."""
    return [
        {
            "column": str(column),
            "zero_count": int(count),
            "share": float(round(count / report.n_rows, 4)),
        }
        for column, count in report.impossible_zeros.items()
    ]


def column_table(report: DataQualityReport) -> list[dict[str, str | int]]:
    """The data-quality artifact: one row per column (kind, missing, distinct, most frequent
    values, zeros where impossible), the target's classes with the positive one marked."""
    rows = []
    for column in report.columns:
        frequent = []
        for value, count in column.most_frequent:
            marked = column.role == "target" and value == str(report.positive_label)
            frequent.append(f"{value}: {count}{' (positive)' if marked else ''}")
        zeros = report.impossible_zeros.get(column.column)
        rows.append(
            {
                "column": column.column,
                "role": column.role,
                "kind": column.kind,
                "missing": column.missing,
                "distinct": column.distinct,
                "most_frequent": ", ".join(frequent),
                "impossible_zeros": "" if zeros is None else int(zeros),
            }
        )
    return rows


def quality_summary(report: DataQualityReport, task: str) -> str:
    """One line for the artifact's description and the logs."""
    if report.class_counts:
        classes = ", ".join(f"{_shown(k)}: {v}" for k, v in report.class_counts.items())
        what = f"classes {{{classes}}}"
        if report.positive_label is not None:
            what += f", positive class {_shown(report.positive_label)}"
    else:
        what = task
    dropped = report.rows_without_target
    left_out = f" ({dropped} rows without a target left out)" if dropped else ""
    return f"{report.n_rows} rows{left_out}, {what}"


def quality_artifact_key(dataset_name: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes; names allow more."""
    return re.sub(r"[^a-z0-9-]+", "-", dataset_name.lower()) + "-data-quality"


def _source_name(dataset: DatasetHandle) -> str:
    """Name the file the user named (rows match it one to one), else the Parquet copy."""
    return dataset.source or dataset.parquet_path


def resolved_spec(spec: DatasetSpec, dataset: DatasetHandle) -> DatasetSpec:
    """The spec with the columns its file turned out to have (header or Parquet schema)."""
    if spec.columns is not None or not dataset.columns:
        return spec
    return spec.with_file_columns(dataset.columns, _source_name(dataset))


def check_dataset(
    dataset: DatasetHandle, spec: DatasetSpec, n_splits: int
) -> tuple[DatasetSpec, DataQualityReport]:
    """The converted dataset validated (no Prefect: the CLI checks its data with it before
    any flow run starts): the spec with the file's columns, and the report.

    A copy this process validated already, for the same spec and folds and while its file is
    the one validated then, is not read again: the check before the flow
    (tasks.data.preflight) and the flow's validate_dataset are the same work (~0.5 s at
    100,000 rows). A refusal is not remembered: it is raised again, the same."""
    key = (
        dataset.model_dump_json(),
        dataset.source,
        spec.model_dump_json(),
        n_splits,
    )
    path = Path(dataset.parquet_path)
    state = file_state(path)
    if (known := _VALIDATED.recall(key, path)) is not None:
        return known[0].model_copy(deep=True), known[1].model_copy(deep=True)
    frame = pd.read_parquet(dataset.parquet_path)
    resolved = resolved_spec(spec, dataset)
    report = validate_frame(frame, resolved, n_splits, _source_name(dataset), dataset)
    _VALIDATED.remember(key, state, (resolved, report.model_copy(deep=True)))
    return resolved, report


# The copies this process validated, by everything that shapes the check, with the state of
# the file read then (as tasks.data.convert remembers its conversions).
_VALIDATED = FileMemo()


@task(name="validate_dataset")
def validate_dataset(dataset: DatasetHandle, spec: DatasetSpec, n_splits: int) -> DataQualityReport:
    """Validate the converted dataset and publish its data-quality table to the UI."""
    spec, report = check_dataset(dataset, spec, n_splits)
    create_table_artifact(
        key=quality_artifact_key(spec.name),
        table=column_table(report),
        description=(
            f"{quality_summary(report, spec.task)}: every column's kind, missing cells and "
            "distinct values; zeros in columns where zero is impossible (likely missing values)"
        ),
    )
    return report
