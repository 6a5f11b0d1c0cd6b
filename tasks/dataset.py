"""A reference to a converted dataset, small enough to pass between tasks and hash for caching."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict


class DatasetHandle(BaseModel):
    """Where the Parquet copy of a dataset lives, and the checksum that identifies its content."""

    model_config = ConfigDict(frozen=True)

    name: str
    parquet_path: str
    sha256: str
    feature_columns: list[str]
    target: str


@lru_cache(maxsize=8)
def _load_arrays(parquet_path: str, sha256: str, columns: tuple[str, ...], target: str):
    frame = pd.read_parquet(parquet_path)
    features = frame[list(columns)].to_numpy(dtype=np.float32)
    labels = frame[target].to_numpy(dtype=np.int64)
    features.setflags(write=False)
    labels.setflags(write=False)
    return features, labels


def load_arrays(handle: DatasetHandle) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and labels (int64), read once per process per dataset checksum."""
    return _load_arrays(
        str(Path(handle.parquet_path)), handle.sha256, tuple(handle.feature_columns), handle.target
    )
