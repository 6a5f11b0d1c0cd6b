"""Fold planning: shuffled, seeded, stratified folds (KFold for a regression), or the folds a
caller's splitter made, checked. Pure data work: no TensorFlow."""

from __future__ import annotations

import numpy as np
from prefect import task
from sklearn.model_selection import KFold, StratifiedKFold

from tasks.config import ExplicitSplit
from tasks.data.dataset import DatasetHandle, load_arrays
from tasks.dataset_spec import Task
from tasks.errors import ConfigError
from tasks.records import Fold


def plan_folds(labels: np.ndarray, n_splits: int, seed: int, task: Task = "binary") -> list[Fold]:
    """Shuffled, seeded folds, stratified for classes (KFold for a regression): built
    explicitly, never left to a wrapper's guess."""
    splitter_class = KFold if task == "regression" else StratifiedKFold
    splitter = splitter_class(n_splits=n_splits, shuffle=True, random_state=seed)
    placeholder = np.zeros((len(labels), 1))
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


@task(name="split_folds")
def split_folds(
    dataset: DatasetHandle, n_splits: int, seed: int, splits: list[ExplicitSplit] | None = None
) -> list[Fold]:
    """StratifiedKFold (KFold for a regression) with shuffle=True, random_state=seed, unless
    the run gives its splits explicitly."""
    _, labels = load_arrays(dataset)
    if splits is not None:
        return explicit_folds(splits, len(labels))
    return plan_folds(labels, n_splits, seed, dataset.task)  # type: ignore[arg-type]
