"""Helpers for tests: foldflow's MLP and the tutorial's create_model as ModelSources, routed
params, checked combinations and jobs, as the flows build them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tasks.config import PROJECT_ROOT, GridSpec, ModelParams
from tasks.data.dataset import DatasetHandle, ShippedArrays
from tasks.model.factory import (
    Combination,
    check_combinations,
    model_meta,
    route_combinations,
)
from tasks.model.routing import route, signature_of
from tasks.model.sources import ModelSource, load_model_function, resolve_model_reference
from tasks.records import FitJob, Fold
from tasks.train.reference import score_fold

BUILTIN = resolve_model_reference("mlp", PROJECT_ROOT)
TUTORIAL = resolve_model_reference("models/tutorial.py:create_model", PROJECT_ROOT)
DROPOUT = resolve_model_reference("models/dropout.py:create_model", PROJECT_ROOT)
PIMA_META = model_meta("binary", 8, [0, 1])


def keyed_dataset(sha256: str = "a" * 64, **fields: Any) -> DatasetHandle:
    """A handle for fit-key tests: its arrays' digest is given, so no file needs to exist."""
    arrays = ShippedArrays(features=b"", labels=b"", sha256=f"arrays-{sha256}")
    defaults = {"name": "pima", "feature_columns": ["a"], "target": "y"}
    return DatasetHandle(**{**defaults, **fields}, parquet_path="", sha256=sha256, arrays=arrays)


def params(source: ModelSource = BUILTIN, **routed: Any) -> ModelParams:
    """ModelParams from routed keys (`optimizer="adam", epochs=2`), bound as the flows bind."""
    return route(routed, signature_of(load_model_function(source)))


def mlp_params(**routed: Any) -> ModelParams:
    return params(BUILTIN, **routed)


def combinations(
    grid: dict[str, list[Any]] | None,
    source: ModelSource = BUILTIN,
    base: dict[str, Any] | None = None,
    meta: dict[str, Any] = PIMA_META,
    seed: int = 7,
) -> list[Combination]:
    spec = None if grid is None else GridSpec(param_grid=grid)
    return check_combinations(source, route_combinations(source, base or {}, spec), meta, seed)


def jobs(checked: list[Combination], folds, engine: str = "auto") -> list[FitJob]:
    """One job per (combination, fold); `folds` are Fold records or fold indices."""
    indices = [fold.index if isinstance(fold, Fold) else fold for fold in folds]
    return [
        FitJob(
            combination=index,
            params=combination.routed,
            model=combination.model,
            fold=fold,
            network=None if engine == "reference" else combination.network,
        )
        for index, combination in enumerate(checked)
        for fold in indices
    ]


def reference_scores(
    features: np.ndarray,
    labels: np.ndarray,
    fold: Fold,
    model: ModelParams,
    seed: int,
    source: ModelSource = BUILTIN,
    meta: dict[str, Any] = PIMA_META,
) -> dict[str, float]:
    """One reference-engine fit's scores (every metric of the task)."""
    return score_fold(source, features, labels, fold, model, meta, seed)


def engines_agree(pima_arrays, folds, source, grid, fold_indices):
    """The fast engine's fits of `grid` against one reference fit each, on `fold_indices`:
    equal accuracy per (combination, fold) and log loss within 1e-4 (test rows predicted in
    inference mode, as Keras does). Returns (combinations, jobs, results)."""
    from tasks.data.preprocess import fold_features
    from tasks.records import fit_seed
    from tasks.train.fast.trainer import train_stacked
    from tasks.train.weights_cache import InitialWeights

    features, labels = pima_arrays
    checked = combinations(grid, source)
    assert all(c.network is not None for c in checked), [c.reason for c in checked]
    fast_jobs = jobs(checked, fold_indices)
    results = train_stacked(
        features, labels, folds, fast_jobs, 7, InitialWeights(source, PIMA_META)
    )
    for job, result in zip(fast_jobs, results, strict=True):
        seed = fit_seed(7, job.model, job.fold)
        view = fold_features(features, folds[job.fold].train, job.model, ())
        expected = reference_scores(view, labels, folds[job.fold], job.model, seed, source=source)
        assert (result.engine, result.seed) == ("fast", seed)
        assert result.accuracy == expected["accuracy"], job
        assert result.loss == pytest.approx(expected["log_loss"], rel=1e-4, abs=1e-5), job
    return checked, fast_jobs, results
