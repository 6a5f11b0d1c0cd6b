"""Validation: refuse bad data before any training, and report what looks suspicious."""

from __future__ import annotations

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from tasks.config import DatasetSpec
from tasks.dataset import DatasetHandle
from tasks.errors import DataError


class DataQualityReport(BaseModel):
    n_rows: int
    class_counts: dict[int, int]
    impossible_zeros: dict[str, int]


def validate_frame(
    frame: pd.DataFrame, spec: DatasetSpec, n_splits: int, source_name: str
) -> DataQualityReport:
    """Schema, finite numbers, 0/1 labels and enough rows per class for the folds."""
    if list(frame.columns) != spec.columns:
        raise DataError(
            f"{source_name}: expected columns {spec.columns}, found {list(frame.columns)}"
        )
    for column in spec.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise DataError(f"{source_name}: column {column!r} is not numeric")
        values = frame[column].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{source_name}, row {row + 1}, column {column!r}: value {values[row]} "
                "is not a finite number"
            )
    labels = frame[spec.target].to_numpy(dtype=np.float64)
    outside = np.flatnonzero(~np.isin(labels, (0.0, 1.0)))
    if outside.size:
        row = int(outside[0])
        raise DataError(
            f"{source_name}, row {row + 1}, column {spec.target!r}: label {labels[row]:g} "
            "is not 0 or 1"
        )
    class_counts = {label: int((labels == label).sum()) for label in (0, 1)}
    for label, count in class_counts.items():
        if count == 0:
            raise DataError(f"{source_name}: only one class present (no rows of class {label})")
        if count < n_splits:
            raise DataError(
                f"{source_name}: class {label} has {count} rows, fewer than the {n_splits} folds"
            )
    zeros = {column: int((frame[column] == 0).sum()) for column in spec.impossible_zero_columns}
    return DataQualityReport(n_rows=len(frame), class_counts=class_counts, impossible_zeros=zeros)


def quality_table(report: DataQualityReport) -> list[dict[str, object]]:
    """Rows for the data-quality artifact: zeros where zero is physiologically impossible."""
    return [
        {
            "column": column,
            "zero_count": count,
            "share": round(count / report.n_rows, 4),
        }
        for column, count in report.impossible_zeros.items()
    ]


@task(name="validate_dataset")
def validate_dataset(dataset: DatasetHandle, spec: DatasetSpec, n_splits: int) -> DataQualityReport:
    """Validate the converted dataset and publish its data-quality table to the UI."""
    frame = pd.read_parquet(dataset.parquet_path)
    report = validate_frame(frame, spec, n_splits, source_name=dataset.name)
    create_table_artifact(
        key=f"{spec.name}-data-quality",
        table=quality_table(report),
        description=(
            f"{report.n_rows} rows, classes {report.class_counts}: zeros in columns where "
            "zero is physiologically impossible (likely missing values)"
        ),
    )
    return report
