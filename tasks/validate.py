"""Validation: refuse bad data before any training, and report what looks suspicious."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from tasks.config import DatasetSpec
from tasks.dataset import DatasetHandle
from tasks.errors import DataError

LABELS = (0, 1)


class DataQualityReport(BaseModel):
    """What validation found, kept so the UI can show suspicious zeros next to the results."""

    n_rows: int
    class_counts: dict[int, int]
    impossible_zeros: dict[str, int]


def _check_schema(frame: pd.DataFrame, spec: DatasetSpec, source_name: str) -> None:
    """Columns by name and order, so features never silently swap places."""
    if list(frame.columns) != spec.columns:
        raise DataError(
            f"{source_name}: expected {len(spec.columns)} columns {spec.columns}, "
            f"found {len(frame.columns)} {list(frame.columns)}"
        )
    if frame.empty:
        raise DataError(f"{source_name}: the dataset has no rows")


def _check_finite_numbers(frame: pd.DataFrame, spec: DatasetSpec, source_name: str) -> None:
    """Numbers only, and finite: a NaN or inf would train a model that scores garbage."""
    for column in spec.columns:
        series = frame[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            raise DataError(f"{source_name}: column {column!r} holds {series.dtype}, not numbers")
        values = series.to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{source_name}, row {row + 1}, column {column!r}: value {values[row]} "
                "is not a finite number"
            )


def _check_labels(
    labels: np.ndarray, spec: DatasetSpec, n_splits: int, source_name: str
) -> dict[int, int]:
    """Binary 0/1 labels, both classes, and enough of each for every stratified fold."""
    outside = np.flatnonzero(~np.isin(labels, LABELS))
    if outside.size:
        row = int(outside[0])
        raise DataError(
            f"{source_name}, row {row + 1}, column {spec.target!r}: label {labels[row]:g} "
            "is not 0 or 1"
        )
    class_counts = {label: int((labels == label).sum()) for label in LABELS}
    for label, count in class_counts.items():
        if count == 0:
            raise DataError(
                f"{source_name}: only one class present (no rows of class {label} in "
                f"{spec.target!r}); a classifier needs both"
            )
    for label, count in class_counts.items():
        if count < n_splits:
            raise DataError(
                f"{source_name}: class {label} has {count} rows, fewer than the {n_splits} folds "
                "(every stratified fold needs at least one row of each class)"
            )
    return class_counts


def validate_frame(
    frame: pd.DataFrame, spec: DatasetSpec, n_splits: int, source_name: str
) -> DataQualityReport:
    """Schema, finite numbers, 0/1 labels and enough rows per class for the folds."""
    _check_schema(frame, spec, source_name)
    _check_finite_numbers(frame, spec, source_name)
    labels = frame[spec.target].to_numpy(dtype=np.float64)
    class_counts = _check_labels(labels, spec, n_splits, source_name)
    zeros = {column: int((frame[column] == 0).sum()) for column in spec.impossible_zero_columns}
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
    """Name the CSV the user can open (rows match it one to one), else the Parquet file."""
    csv_path = Path(dataset.parquet_path).with_suffix(".csv")
    return str(csv_path if csv_path.is_file() else dataset.parquet_path)


@task(name="validate_dataset")
def validate_dataset(dataset: DatasetHandle, spec: DatasetSpec, n_splits: int) -> DataQualityReport:
    """Validate the converted dataset and publish its data-quality table to the UI."""
    frame = pd.read_parquet(dataset.parquet_path)
    report = validate_frame(frame, spec, n_splits, source_name=_source_name(dataset))
    create_table_artifact(
        key=quality_artifact_key(spec.name),
        table=quality_table(report),
        description=(
            f"{report.n_rows} rows, classes {report.class_counts}: zeros in columns where "
            "zero is physiologically impossible (likely missing values)"
        ),
    )
    return report
