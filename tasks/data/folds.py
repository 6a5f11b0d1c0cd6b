"""Fold planning: shuffled, seeded, stratified folds (KFold for a regression), or the folds a
caller's splitter made, checked. Pure data work: no TensorFlow."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from prefect import task
from sklearn.model_selection import KFold, RepeatedKFold, RepeatedStratifiedKFold, StratifiedKFold

from tasks.config import ExplicitSplit
from tasks.data.dataset import DatasetHandle, load_arrays
from tasks.dataset_spec import Task
from tasks.errors import ConfigError
from tasks.files import write_atomically
from tasks.records import Fold


def plan_folds(
    labels: np.ndarray, n_splits: int, seed: int, task: Task = "binary", n_repeats: int = 1
) -> list[Fold]:
    """Shuffled, seeded folds, stratified for classes (KFold for a regression): built
    explicitly, never left to a wrapper's guess. With `n_repeats` above 1, scikit-learn's
    RepeatedStratifiedKFold (RepeatedKFold) with random_state=seed: the same r x k folds a
    user gets from scikit-learn, numbered 0 .. r*k - 1 repeat after repeat."""
    placeholder = np.zeros((len(labels), 1))
    if n_repeats > 1:
        repeated = RepeatedKFold if task == "regression" else RepeatedStratifiedKFold
        splitter = repeated(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    else:
        single = KFold if task == "regression" else StratifiedKFold
        splitter = single(n_splits=n_splits, shuffle=True, random_state=seed)
    return [
        Fold(index=index, train=train.tolist(), test=test.tolist())
        for index, (train, test) in enumerate(splitter.split(placeholder, labels))
    ]


def explicit_folds(splits: list[ExplicitSplit], n_rows: int) -> list[Fold]:
    """Folds as a caller's splitter made them, checked: every row index within the data and
    no row both trained on and tested in one fold."""
    folds = []
    for index, split in enumerate(splits):
        rows = [*split.train, *split.test]
        outside = [row for row in rows if not 0 <= row < n_rows]
        if outside:
            raise ConfigError(
                f"split {index}: row index {outside[0]} is outside the data's {n_rows} rows"
            )
        shared = set(split.train) & set(split.test)
        if shared:
            raise ConfigError(
                f"split {index}: row {min(shared)} is both in the training and the test rows"
            )
        folds.append(Fold(index=index, train=list(split.train), test=list(split.test)))
    return folds


def store_splits(splits: list[tuple[np.ndarray, np.ndarray]], folder: Path) -> Path:
    """A splitter's folds as one `.npz` file named by its SHA-256, in the order the splitter
    gave each fold's rows: a run's parameters then carry a name, not 20,000 row numbers per
    fold (Prefect refuses a flow run's parameters over 512 KB)."""
    arrays = {}
    for index, (train, test) in enumerate(splits):
        arrays[f"train_{index}"] = np.asarray(train, dtype=np.int64)
        arrays[f"test_{index}"] = np.asarray(test, dtype=np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    path = folder / "splits" / f"{hashlib.sha256(data).hexdigest()}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda temporary: temporary.write_bytes(data))
    return path


def read_splits(path: str) -> list[ExplicitSplit]:
    """The folds store_splits wrote, refused when the file is missing or its bytes no longer
    match the SHA-256 in its name."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ConfigError(f"explicit splits {file}: {error.strerror or error}") from None
    if hashlib.sha256(data).hexdigest() != file.stem:
        raise ConfigError(f"explicit splits {file}: the file changed since it was written")
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        count = len(arrays.files) // 2
        return [
            ExplicitSplit(train=arrays[f"train_{i}"].tolist(), test=arrays[f"test_{i}"].tolist())
            for i in range(count)
        ]


@task(name="split_folds")
def split_folds(
    dataset: DatasetHandle,
    n_splits: int,
    seed: int,
    splits: list[ExplicitSplit] | None = None,
    splits_file: str | None = None,
    n_repeats: int = 1,
) -> list[Fold]:
    """StratifiedKFold (KFold for a regression) with shuffle=True, random_state=seed, repeated
    `n_repeats` times, unless the run gives its splits explicitly (inline, or in a file from
    store_splits)."""
    _, labels = load_arrays(dataset)
    if splits_file is not None:
        splits = read_splits(splits_file)
        if len(splits) != n_splits:
            raise ConfigError(
                f"explicit splits {splits_file}: {len(splits)} split(s) but n_splits={n_splits}"
            )
    if splits is not None:
        return explicit_folds(splits, len(labels))
    return plan_folds(labels, n_splits, seed, dataset.task, n_repeats)  # type: ignore[arg-type]
