"""`foldflow.cross_validate` and `cross_val_score`: scikit-learn's, every fold's fit run by
foldflow's cross-validation flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection._validation import _warn_or_raise_about_fit_failures

from foldflow.estimators import for_data, plan_estimator, task_of
from foldflow.results import flow_scoring, metric_of, scikit_learn_out, scorer_names
from foldflow.runs import (
    n_workers,
    quietly_imported,
    run_flow,
    run_seed,
    run_settings,
    start_api_early,
)
from tasks.config import CVConfig, foldflow_home
from tasks.errors import ConfigError
from tasks.model.function_source import function_reference


def cross_validate(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    groups: Any = None,
    scoring: Any = None,
    cv: Any = None,
    n_jobs: int | None = None,
    error_score: Any = np.nan,
    return_train_score: bool = False,
    random_state: int | None = None,
    engine: str = "auto",
    verbose: int = 0,
) -> dict[str, np.ndarray]:
    """scikit-learn's cross_validate, the fits run by foldflow's cross-validation flow:
    {'fit_time', 'score_time', 'test_score' or 'test_<name>'} (and 'train_score' or
    'train_<name>' with return_train_score), one value per fold. `verbose`: 0 quiet, 1 a
    progress bar, 2 Prefect's log lines too (foldflow.runs.run_flow)."""
    plan = for_data(plan_estimator(estimator), X)
    task = task_of(plan.kind, np.asarray(y))
    names = scorer_names(scoring, task)
    multimetric = not (scoring is None or isinstance(scoring, str))
    first = next(iter(names.values()))
    start_api_early()  # every argument checked: it comes up while the data are stored
    run = run_settings(
        X,
        y,
        task,
        cv,
        run_seed(random_state, plan.random_state),
        n_workers(n_jobs),
        engine,
        metric_of(task, first)[0],
        foldflow_home(),
        groups,
        return_train_score,
    )
    run = run.model_copy(update={"scoring": flow_scoring(scoring, task)})
    config = CVConfig(
        model=function_reference(plan.function, run.cache_folder()),
        params=plan.base_params,
        run=run,
    )
    summary = run_flow(quietly_imported(_cv_flow), config, verbose=verbose)
    table = pd.read_parquet(Path(summary.output_dir) / "cv_results.parquet")
    error_value = np.nan if error_score == "raise" else error_score
    out = scikit_learn_out(table, run.n_splits, names, task, error_value, True, return_train_score)
    failures = [(k, record["fit_error"]) for k, record in enumerate(out) if record["fit_error"]]
    if error_score == "raise" and failures:
        fold, error = failures[0]
        raise ValueError(f"the fit of fold {fold} failed (error_score='raise'): {error}")
    _warn_or_raise_about_fit_failures(out, error_score)
    folds = [record["test_scores"] for record in out]
    results: dict[str, np.ndarray] = {
        "fit_time": np.array([table.loc[0, f"split{k}_fit_time"] for k in range(run.n_splits)]),
        "score_time": np.full(run.n_splits, np.nan),
    }
    for name in names:  # scikit-learn's order: each scorer's test, then its train scores
        key = name if multimetric else "score"
        results[f"test_{key}"] = np.array([fold[name] for fold in folds])
        if return_train_score:
            results[f"train_{key}"] = np.array([record["train_scores"][name] for record in out])
    return results


def _cv_flow():
    from flows.cv import cv_flow

    return cv_flow


def cross_val_score(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    groups: Any = None,
    scoring: Any = None,
    cv: Any = None,
    n_jobs: int | None = None,
    error_score: Any = np.nan,
    random_state: int | None = None,
    engine: str = "auto",
    verbose: int = 0,
) -> np.ndarray:
    """scikit-learn's cross_val_score: one score per fold (foldflow's cross-validation flow)."""
    if scoring is not None and not isinstance(scoring, str):
        raise ConfigError("cross_val_score takes one scorer name; use cross_validate for more")
    return cross_validate(
        estimator,
        X,
        y,
        groups=groups,
        scoring=scoring,
        cv=cv,
        n_jobs=n_jobs,
        error_score=error_score,
        random_state=random_state,
        engine=engine,
        verbose=verbose,
    )["test_score"]
