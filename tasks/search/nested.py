"""Nested cross-validation: outer folds over every row, inner folds inside each outer training
part only, so the inner search never sees the outer test rows it is scored on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tasks.data.folds import plan_folds
from tasks.dataset_spec import Task
from tasks.files import write_atomically
from tasks.records import Fold


class OuterFold(BaseModel):
    """One outer split and the inner folds of its training rows (row numbers of the data)."""

    outer: Fold
    inner: list[Fold]


def nested_folds(
    labels: np.ndarray, n_outer: int, n_inner: int, seed: int, task: Task = "binary"
) -> list[OuterFold]:
    """Outer folds as the run's folds are made (stratified, shuffled, seeded); each outer
    training part split again the same way, its rows mapped back to the data's."""
    nested = []
    for outer in plan_folds(labels, n_outer, seed, task):
        train = np.asarray(outer.train)
        inner = [
            Fold(index=f.index, train=train[f.train].tolist(), test=train[f.test].tolist())
            for f in plan_folds(labels[train], n_inner, seed, task)
        ]
        nested.append(OuterFold(outer=outer, inner=inner))
    return nested


class NestedRow(BaseModel):
    outer_fold: int
    outer_score: float
    inner_best_score: float
    inner_best_std: float
    best_params: dict[str, Any]


def nested_lines(rows: list[NestedRow], metric: str) -> list[str]:
    """What summary.txt adds: the outer mean (std) beside the inner best scores."""
    outer = np.array([r.outer_score for r in rows], dtype=float)
    inner = np.array([r.inner_best_score for r in rows], dtype=float)
    lines = [
        f"Nested CV ({len(rows)} outer folds, {metric}): outer {outer.mean():f} "
        f"({outer.std():f}); inner best {inner.mean():f} ({inner.std():f}); "
        f"the inner best overstates the outer score by {inner.mean() - outer.mean():f}"
    ]
    lines += [
        f"outer fold {r.outer_fold}: outer {r.outer_score:f}, inner best {r.inner_best_score:f} "
        f"({r.inner_best_std:f}) with: {r.best_params!r}"
        for r in rows
    ]
    return lines


def write_nested_results(rows: list[NestedRow], run_dir: Path) -> Path:
    table = pd.DataFrame(
        [
            {**r.model_dump(exclude={"best_params"}), "best_params": repr(r.best_params)}
            for r in rows
        ]
    )
    path = run_dir / "nested_results.csv"
    write_atomically(path, lambda p: table.to_csv(p, index=False))
    return path
