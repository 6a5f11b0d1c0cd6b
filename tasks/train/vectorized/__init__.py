"""The vectorized path: copies of one Keras architecture that the stacked engine
(tasks.train.fast) cannot express (Conv1D, pooling, Reshape, Flatten, ...) trained together in
one compiled program over stacked variables, with Keras' own maths (program.py), each copy the
reference engine's fit (trainer.py). What falls back is trained by the reference engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from tasks.config import ModelParams
from tasks.data.preprocess import FoldFeatures
from tasks.errors import FoldflowError
from tasks.metrics import ScorerSpec
from tasks.model.sources import ModelSource
from tasks.records import FitJob, FitResult, Fold
from tasks.train.vectorized.trainer import prepare_copy, train_vectorized


def run_vectorized(
    source: ModelSource,
    views: FoldFeatures,
    labels: np.ndarray,
    fold_by_index: dict[int, Fold],
    jobs: list[FitJob],
    run_seed: int,
    meta_of: Callable[[ModelParams, np.ndarray], dict[str, Any]],
    scorers: tuple[ScorerSpec, ...] | list[ScorerSpec] = (),
) -> list[FitResult]:
    """Train `jobs` on the vectorized path; [] when it cannot (TensorFlow could not vectorize
    some layer's step): the caller's reference engine then trains them, and the log says why."""
    try:
        copies = [
            prepare_copy(source, views, labels, fold_by_index[job.fold], job, run_seed, meta_of)
            for job in jobs
        ]
        return train_vectorized(copies, scorers)
    except FoldflowError:
        raise
    except Exception as error:  # noqa: BLE001 (any failure to vectorize: the reference engine)
        _logger().warning(
            "vectorized path failed for %d fit(s), reference engine instead: %s: %s",
            len(jobs), type(error).__name__, str(error).strip().splitlines()[0][:300],
        )  # fmt: skip
        return []


def _logger() -> Any:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001 (outside a Prefect run)
        return logging.getLogger(__name__)
