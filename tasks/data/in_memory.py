"""Data held in memory (numpy arrays, a DataFrame) as a Parquet file in the cache.

The file is named by the SHA-256 of the data's bytes, so the same data is written once and
every fit's cache key (which holds the Parquet file's checksum) stays the same from run to
run: caching and resume work as they do for files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import RunSettings
from tasks.data.columns import Where, encode_columns
from tasks.data.preflight import checked_dataset
from tasks.data.sources import display_name
from tasks.data.validate import validate_frame
from tasks.dataset_spec import DatasetSpec, Task
from tasks.errors import DataError, FoldflowError
from tasks.files import write_atomically

TARGET_COLUMN = "target"


def feature_frame(features: Any) -> pd.DataFrame:
    """Features as a DataFrame with text column names (`x0`, `x1`, ... for an array)."""
    if isinstance(features, pd.DataFrame):
        frame = features.copy()
        frame.columns = [str(column) for column in frame.columns]
        return frame.reset_index(drop=True)
    array = np.asarray(features)
    if array.ndim != 2:
        raise DataError(f"X must be two-dimensional (rows x features), got shape {array.shape}")
    return pd.DataFrame(array, columns=[f"x{index}" for index in range(array.shape[1])])


def target_series(target: Any, n_rows: int) -> pd.Series:
    """The target as one column, its length checked against the features'."""
    values = target.to_numpy() if isinstance(target, pd.Series | pd.DataFrame) else target
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.ravel()
    if array.ndim != 1:
        raise DataError(f"y must be one-dimensional, got shape {array.shape}")
    if len(array) != n_rows:
        raise DataError(f"X has {n_rows} rows but y has {len(array)}")
    return pd.Series(array)


def data_frame(features: Any, target: Any) -> pd.DataFrame:
    """Features then the target, as the Parquet file holds them."""
    frame = feature_frame(features)
    target_name = TARGET_COLUMN
    while target_name in frame.columns:
        target_name += "_"
    frame[target_name] = target_series(target, len(frame)).to_numpy()
    return frame


def fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of the columns' names, types and bytes: equal data, equal fingerprint."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[c, str(frame[c].dtype)] for c in frame.columns]).encode())
    for column in frame.columns:
        values = frame[column].to_numpy()
        if values.dtype == object:
            digest.update(json.dumps([str(v) for v in values]).encode())
        else:
            digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def store_in_memory_data(
    features: Any, target: Any, task: Task, cache_dir: Path
) -> tuple[DatasetSpec, Path]:
    """Write X and y as `<cache>/in-memory/<sha256>.parquet` (once) and describe them with an
    inline dataset spec: (spec, Parquet path)."""
    frame = data_frame(features, target)
    digest = fingerprint(frame)
    path = Path(cache_dir) / "in-memory" / f"{digest}.parquet"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda temporary: frame.to_parquet(temporary, index=False))
    spec = DatasetSpec(
        name=f"in-memory-{digest[:12]}",
        url=str(path),
        format="parquet",
        columns=list(frame.columns),
        target=str(frame.columns[-1]),
        task=task,
    )
    return spec, path


def _check_target(target: pd.Series, spec: DatasetSpec, n_splits: int) -> None:
    """y on its own, through the functions the flow reads and validates it with, so that
    messages name `y` and its row (a one-column placeholder stands in for X)."""
    frame = pd.DataFrame({"X": np.zeros(len(target)), "y": target.to_numpy()})
    alone = DatasetSpec(
        name="y", url="y", format="parquet", columns=["X", "y"], target="y", task=spec.task
    )
    try:
        encoded = encode_columns(frame, alone, "y", Where("y", unit="row"))
        validate_frame(encoded.frame, alone, n_splits, "y")
    except FoldflowError as error:
        message = str(error).replace(", column 'y'", "").replace(" in the target 'y'", "")
        raise type(error)(message) from None


def check_in_memory_data(run: RunSettings) -> None:
    """X and y stored by `store_in_memory_data`, checked before any flow run starts: y alone
    first, then the whole dataset as the flow reads it. Messages name `y` and its rows, `X`
    and its columns, never the cache's Parquet file (a ValueError, as scikit-learn raises)."""
    spec = run.dataset_spec_model()
    source = run.source or spec.url
    _check_target(pd.read_parquet(source, columns=[spec.target])[spec.target], spec, run.n_splits)
    try:
        checked_dataset(run)
    except FoldflowError as error:
        raise type(error)(str(error).replace(display_name(source), "X")) from None
