"""Validation: refuse bad data before any training, and report what looks suspicious."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from tasks.config import DatasetSpec
from tasks.data.dataset import DatasetHandle, target_values
from tasks.errors import DataError

LABELS = (0, 1)
MIN_MULTICLASS_CLASSES = 3


class DataQualityReport(BaseModel):
    """What validation found, kept so the UI can show suspicious zeros next to the results."""

    n_rows: int
    class_counts: dict[int | str, int]  # empty for a regression
    impossible_zeros: dict[str, int]


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


def _check_finite_numbers(frame: pd.DataFrame, columns: list[str], source_name: str) -> None:
    """Numbers only, and finite: a NaN or inf would train a model that scores garbage."""
    for column in columns:
        series = frame[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            where = _first_non_number(series)
            detail = f" (row {where[0] + 1}: {where[1]!r})" if where else ""
            raise DataError(
                f"{source_name}: column {column!r} holds {series.dtype}, not numbers{detail}"
            )
        values = series.to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{source_name}, row {row + 1}, column {column!r}: value {values[row]} "
                "is not a finite number"
            )


def _is_text(series: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def _check_binary_labels(series: pd.Series, spec: DatasetSpec, source_name: str) -> None:
    """Numbers must be 0 and 1; text labels (e.g. 'no'/'yes') must be exactly two."""
    if _is_text(series):
        seen: list[str] = []
        for row, label in enumerate(series.astype(str)):
            if label not in seen:
                if len(seen) == 2:
                    raise DataError(
                        f"{source_name}, row {row + 1}, column {spec.target!r}: label {label!r} "
                        f"is a third class; a binary target has two ({seen[0]!r}, {seen[1]!r})"
                    )
                seen.append(label)
        return
    labels = series.to_numpy(dtype=np.float64)
    outside = np.flatnonzero(~np.isin(labels, LABELS))
    if outside.size:
        row = int(outside[0])
        raise DataError(
            f"{source_name}, row {row + 1}, column {spec.target!r}: label {labels[row]:g} "
            "is not 0 or 1"
        )
    for label in LABELS:
        if not (labels == label).any():
            raise DataError(
                f"{source_name}: only one class present (no rows of class {label} in "
                f"{spec.target!r}); a classifier needs both"
            )


def _check_multiclass_labels(series: pd.Series, spec: DatasetSpec, source_name: str) -> None:
    """Integer or text labels, at least three classes (two are a binary task)."""
    if not _is_text(series):
        labels = series.to_numpy(dtype=np.float64)
        fractional = np.flatnonzero(labels != np.round(labels))
        if fractional.size:
            row = int(fractional[0])
            raise DataError(
                f"{source_name}, row {row + 1}, column {spec.target!r}: label {labels[row]:g} "
                "is not a whole number; class labels are integers or text"
            )
    classes = series.astype(str).unique()
    if len(classes) < MIN_MULTICLASS_CLASSES:
        raise DataError(
            f"{source_name}: column {spec.target!r} holds {len(classes)} class(es) "
            f"{sorted(classes)}; a multiclass task needs at least {MIN_MULTICLASS_CLASSES} "
            "(use task: binary for two)"
        )


def _check_labels(
    frame: pd.DataFrame, spec: DatasetSpec, n_splits: int, source_name: str
) -> dict[int | str, int]:
    """Labels fit the task, and every class has a row in each stratified fold."""
    series = frame[spec.target]
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


def _plain_label(label: object) -> int | str:
    return int(label) if isinstance(label, np.integer | int) else str(label)


def validate_frame(
    frame: pd.DataFrame, spec: DatasetSpec, n_splits: int, source_name: str
) -> DataQualityReport:
    """Schema, finite numeric features, a target that fits the task, enough rows for the folds.

    `spec` must know its columns (a spec of a headerless CSV, or `with_file_columns`).
    """
    _check_schema(frame, spec, source_name)
    _check_finite_numbers(frame, spec.feature_columns, source_name)
    if spec.task == "regression":
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
    return DataQualityReport(n_rows=len(frame), class_counts=class_counts, impossible_zeros=zeros)


def quality_table(report: DataQualityReport) -> list[dict[str, str | int | float]]:
    """Rows for the data-quality artifact, as plain Python numbers (Prefect refuses numpy's)."""
    return [
        {
            "column": str(column),
            "zero_count": int(count),
            "share": float(round(count / report.n_rows, 4)),
        }
        for column, count in report.impossible_zeros.items()
    ]


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


@task(name="validate_dataset")
def validate_dataset(dataset: DatasetHandle, spec: DatasetSpec, n_splits: int) -> DataQualityReport:
    """Validate the converted dataset and publish its data-quality table to the UI."""
    frame = pd.read_parquet(dataset.parquet_path)
    spec = resolved_spec(spec, dataset)
    report = validate_frame(frame, spec, n_splits, source_name=_source_name(dataset))
    classes = f"classes {report.class_counts}" if report.class_counts else spec.task
    create_table_artifact(
        key=quality_artifact_key(spec.name),
        table=quality_table(report),
        description=(
            f"{report.n_rows} rows, {classes}: zeros in columns where zero is impossible "
            "(likely missing values)"
        ),
    )
    return report
