"""Placeholder until the stacked fast engine lands: every job runs on the reference engine."""

from __future__ import annotations

import numpy as np

from tasks.training import FitJob, FitResult, Fold


def fast_engine_applies(jobs: list[FitJob]) -> bool:
    return False


def train_stacked(
    features: np.ndarray,
    labels: np.ndarray,
    fold_by_index: dict[int, Fold],
    jobs: list[FitJob],
    run_seed: int,
) -> list[FitResult]:
    raise NotImplementedError


def plan_groups(jobs: list[FitJob], workers: int) -> list[list[FitJob]]:
    return [[job] for job in jobs]
