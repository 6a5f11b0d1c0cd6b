"""The converted copy: the used columns of a stored source in Parquet, keyed by content and spec."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tasks.data.columns import Where, encode_columns
from tasks.data.csv_reader import read_csv, read_parquet
from tasks.data.dataset import DatasetHandle
from tasks.data.store import StoredSource
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError
from tasks.files import FileMemo, file_state, write_atomically


def converted_path(cache_dir: Path, spec: DatasetSpec, sha256: str) -> Path:
    """The Parquet copy: named by the dataset, keyed by its content and spec (so runs on other
    data never overwrite it); the name was checked safe, and the path must stay inside."""
    reading = spec.model_dump_json(exclude={"url", "sha256", "max_bytes"})
    key = hashlib.sha256(f"{sha256}\n{reading}".encode()).hexdigest()[:16]
    root = Path(cache_dir).resolve()
    path = (root / f"{spec.name}-{key}.parquet").resolve()
    if path.parent != root:
        raise ConfigError(f"dataset name {spec.name!r} would write outside the cache folder {root}")
    return path


def source_suffix(spec: DatasetSpec) -> str:
    """A stored source keeps its format's extension."""
    return ".csv" if spec.format == "csv" else ".parquet"


def convert_to_parquet(
    stored: StoredSource, spec: DatasetSpec, cache_dir: Path, source_name: str
) -> DatasetHandle:
    """The used columns (features, target) in Parquet, written atomically, in the data
    contract's form (tasks.data.columns): numbers or category codes, NaN where missing;
    targets as numbers or text."""
    path = converted_path(cache_dir, spec, stored.sha256)
    key = (str(path), stored.sha256, spec.model_dump_json(), source_name, str(cache_dir))
    if (known := _CONVERTED.recall(key, path)) is not None:
        return known
    if spec.format == "csv":
        frame, resolved = read_csv(stored.path, spec, source_name)
        where = Where(source_name, first=2 if spec.header else 1)
    else:
        frame, resolved = read_parquet(stored.path, spec, source_name)
        where = Where(source_name, unit="row")
    encoded = encode_columns(frame, resolved, source_name, where)
    write_atomically(path, lambda temporary: encoded.frame.to_parquet(temporary, index=False))
    handle = DatasetHandle(
        name=spec.name,
        # As given, not resolved: the handle is part of the fits' cache keys.
        parquet_path=str(Path(cache_dir) / path.name),
        sha256=stored.sha256,
        feature_columns=resolved.feature_columns,
        target=resolved.target,
        task=resolved.task,
        impossible_zero_columns=[
            c for c in resolved.impossible_zero_columns if c in resolved.feature_columns
        ],
        columns=resolved.columns or [],
        categorical_columns=encoded.categorical_columns,
        categories=encoded.categories,
        positive_label=encoded.positive_label,
        rows_without_target=encoded.rows_without_target,
        source=source_name,
    )
    _CONVERTED.remember(key, file_state(path), handle)
    return handle


# The conversions this process made, by everything that shapes them, with the state of the
# file each wrote: the CLI and the Python API read and check the data before the flow starts
# (tasks.data.preflight), then the flow's download task asks for the same conversion, which
# is not read again while its copy is the file written then (a 100,000-row CSV: ~2.5 s).
_CONVERTED = FileMemo()
