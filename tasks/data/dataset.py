"""A reference to a converted dataset, small enough to pass between tasks and hash for caching.

Workers never read the dataset's file: the flow process ships its arrays by value
(`shipped_to_workers`), so a Dask worker on a machine without the flow's filesystem trains on
exactly the rows the flow read, checked against their SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cachetools import LRUCache, cached
from pydantic import BaseModel, ConfigDict, Field

from tasks.errors import DataError


class ShippedArrays(BaseModel):
    """Features and targets as `.npy` bytes, and the SHA-256 that lets a worker verify them."""

    model_config = ConfigDict(frozen=True)

    features: bytes
    labels: bytes
    sha256: str


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
    # Feature columns read as categories: their arrays hold codes 0..k-1 into `categories`
    # (NaN where the cell is missing); numeric columns hold numbers (NaN where missing).
    categorical_columns: list[str] = []
    categories: dict[str, list[str]] = {}
    # A binary target's positive class (the user's label): encoded as 1, last in `classes_`.
    positive_label: int | str | None = None
    rows_without_target: int = 0  # left out by the spec's drop_missing_target
    # The file or URL the user named, for messages. Left out of the dump that Prefect hashes
    # into the fits' cache keys: the checksum identifies the data, wherever it came from.
    source: str = Field(default="", exclude=True)
    # The arrays themselves, for workers (shipped_to_workers); left out of dumps and hashes.
    arrays: ShippedArrays | None = Field(default=None, exclude=True, repr=False)

    @property
    def categorical_indices(self) -> tuple[int, ...]:
        """Positions of the categorical columns among the features (the encoder's input)."""
        return tuple(
            index
            for index, column in enumerate(self.feature_columns)
            if column in self.categorical_columns
        )

    @property
    def category_counts(self) -> tuple[int, ...]:
        """How many categories each categorical column has, in `categorical_indices` order."""
        return tuple(
            len(self.categories[column])
            for column in self.feature_columns
            if column in self.categorical_columns
        )

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


def class_order(labels: np.ndarray, task: str, positive_label: Any = None) -> list[Any] | None:
    """Classes in the order outputs are encoded in: sorted (as scikit-learn's LabelEncoder),
    except that a binary target's positive class comes last (encoded 1); None for a regression."""
    if task == "regression":
        return None
    classes = [
        value.item() if isinstance(value, np.generic) else value for value in np.unique(labels)
    ]
    if task == "binary" and positive_label is not None and positive_label in classes:
        classes = [label for label in classes if label != positive_label] + [positive_label]
    return classes


@lru_cache(maxsize=8)
def _load_arrays(
    parquet_path: str, sha256: str, columns: tuple[str, ...], target: str, task: str
) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_parquet(parquet_path)
    features = frame[list(columns)].to_numpy(dtype=np.float32)
    labels = target_values(frame[target], task)
    return read_only(features), read_only(labels)


def read_only(array: np.ndarray) -> np.ndarray:
    """`array` and every array it views made read-only: the data a run loaded never changes,
    which lets tasks.data.user_transformer.raw_rows share one frame of it."""
    viewed = array
    while isinstance(viewed, np.ndarray):
        viewed.setflags(write=False)
        viewed = viewed.base
    return array


def load_arrays(handle: DatasetHandle) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and targets, read once per process per dataset checksum: from the
    shipped bytes when the handle carries them, else from the Parquet file."""
    if handle.arrays is not None:
        return _decoded_arrays(handle.arrays)
    return _load_arrays(
        str(Path(handle.parquet_path)),
        handle.sha256,
        tuple(handle.feature_columns),
        handle.target,
        handle.task,
    )


def _arrays_digest(features: bytes, labels: bytes) -> str:
    digest = hashlib.sha256(len(features).to_bytes(8, "little"))
    digest.update(features)
    digest.update(labels)
    return digest.hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def arrays_digest(handle: DatasetHandle) -> str:
    """The SHA-256 of the arrays a fit trains on, the same whether or not they were shipped:
    the file's checksum alone misses how the spec read it (missing values, kinds, labels)."""
    if handle.arrays is not None:
        return handle.arrays.sha256
    return _parquet_arrays_digest(
        handle.parquet_path,
        handle.sha256,
        tuple(handle.feature_columns),
        handle.target,
        handle.task,
    )


@lru_cache(maxsize=8)
def _parquet_arrays_digest(
    parquet_path: str, sha256: str, columns: tuple, target: str, task: str
) -> str:
    handle = DatasetHandle(
        name="digest",
        parquet_path=parquet_path,
        sha256=sha256,
        feature_columns=list(columns),
        target=target,
        task=task,
    )
    features, labels = load_arrays(handle)
    return _arrays_digest(_npy_bytes(features), _npy_bytes(labels))


def shipped_to_workers(handle: DatasetHandle) -> DatasetHandle:
    """The handle with its arrays inside and no file path: what the flow sends to workers,
    which then need no access to the flow's files."""
    features, labels = load_arrays(handle)
    features_bytes, labels_bytes = _npy_bytes(features), _npy_bytes(labels)
    arrays = ShippedArrays(
        features=features_bytes,
        labels=labels_bytes,
        sha256=_arrays_digest(features_bytes, labels_bytes),
    )
    return handle.model_copy(update={"arrays": arrays, "parquet_path": ""})


# Keyed by the checksum alone: hashing the arrays' bytes on every call would cost what the
# cache saves.
@cached(LRUCache(maxsize=8), key=lambda shipped: shipped.sha256, lock=threading.Lock())
def _decoded_arrays(shipped: ShippedArrays) -> tuple[np.ndarray, np.ndarray]:
    """Shipped arrays, checked against their SHA-256 and decoded once per process."""
    if _arrays_digest(shipped.features, shipped.labels) != shipped.sha256:
        raise DataError(
            f"the dataset's arrays arrived damaged: their SHA-256 is not {shipped.sha256}"
        )
    arrays = []
    for data in (shipped.features, shipped.labels):
        arrays.append(read_only(np.load(io.BytesIO(data), allow_pickle=False)))
    return arrays[0], arrays[1]
