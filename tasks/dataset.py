"""A reference to a converted dataset, small enough to pass between tasks and hash for caching."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field


class DatasetHandle(BaseModel):
    """Where the Parquet copy of a dataset lives, and the checksum that identifies its content."""

    model_config = ConfigDict(frozen=True)

    name: str
    parquet_path: str
    sha256: str
    feature_columns: list[str]
    target: str
    task: str = "binary"
    impossible_zero_columns: list[str] = []
    columns: list[str] = []  # every column of the source file, used or not
    # The file or URL the user named, for messages. Left out of the dump that Prefect hashes
    # into the fits' cache keys: the checksum identifies the data, wherever it came from.
    source: str = Field(default="", exclude=True)

    @property
    def zero_column_indices(self) -> tuple[int, ...]:
        """Positions of the zero-coded columns among the features (the imputer's input)."""
        return tuple(
            index
            for index, column in enumerate(self.feature_columns)
            if column in self.impossible_zero_columns
        )


def target_values(series: pd.Series, task: str) -> np.ndarray:
    """Numbers for regression; class labels as integers, or as text when they are text."""
    if task == "regression":
        return series.to_numpy(dtype=np.float64)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.int64)
    return series.astype(str).to_numpy(dtype=str)


@lru_cache(maxsize=8)
def _load_arrays(
    parquet_path: str, sha256: str, columns: tuple[str, ...], target: str, task: str
) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_parquet(parquet_path)
    features = frame[list(columns)].to_numpy(dtype=np.float32)
    labels = target_values(frame[target], task)
    features.setflags(write=False)
    labels.setflags(write=False)
    return features, labels


def load_arrays(handle: DatasetHandle) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and targets, read once per process per dataset checksum."""
    return _load_arrays(
        str(Path(handle.parquet_path)),
        handle.sha256,
        tuple(handle.feature_columns),
        handle.target,
        handle.task,
    )
