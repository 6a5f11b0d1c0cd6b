"""`foldflow.GridSearchCV`, `RandomizedSearchCV`, the halving searches, `cross_validate`,
`cross_val_score`: scikit-learn's searches and CV, with every fit run by foldflow's flows on
Prefect.

The strategy (which candidates) and the result shape (`cv_results_`) are scikit-learn's own:
`GridSearchCV` subclasses scikit-learn's and fills `cv_results_` with its `_format_results`
from the flow's per-fold scores. Only the evaluation (fitting every candidate on every fold)
is replaced by the grid-search flow. `HalvingGridSearchCV` and `HalvingRandomSearchCV` are
scikit-learn's successive halving over epochs, their iterations run by the search flow's
halving strategy (survivors trained on from their checkpoints).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import model_selection
from sklearn.base import BaseEstimator
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.metrics import get_scorer
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.model_selection._validation import _warn_or_raise_about_fit_failures

from foldflow.estimators import (
    keras_candidate,
    load_fitted,
    plan_estimator,
    routed_grid_key,
    task_of,
)
from tasks.config import (
    CVConfig,
    ExplicitSplit,
    GridSearchConfig,
    GridSpec,
    RunSettings,
    SearchConfig,
    foldflow_home,
)
from tasks.data.in_memory import store_in_memory_data
from tasks.errors import ConfigError
from tasks.model.function_source import function_reference

DEFAULT_SEED = 7
# scikit-learn scorer name -> (foldflow metric, sign): foldflow scores every metric of the
# task on every fold; `neg_*` scorers are the metric negated, as scikit-learn reports them.
SCORERS: dict[str, dict[str, tuple[str, float]]] = {
    "binary": {
        "accuracy": ("accuracy", 1.0),
        "roc_auc": ("roc_auc", 1.0),
        "f1": ("f1", 1.0),
        "neg_log_loss": ("log_loss", -1.0),
    },
    "multiclass": {
        "accuracy": ("accuracy", 1.0),
        "f1_macro": ("f1_macro", 1.0),
        "neg_log_loss": ("log_loss", -1.0),
        "roc_auc_ovr": ("roc_auc_ovr", 1.0),
    },
    "regression": {
        "r2": ("r2", 1.0),
        "neg_root_mean_squared_error": ("rmse", -1.0),
    },
}
DEFAULT_SCORER = {"binary": "accuracy", "multiclass": "accuracy", "regression": "r2"}


def scorer_names(scoring: Any, task: str) -> dict[str, str]:
    """cv_results_ name -> scikit-learn scorer name: {'score': 'accuracy'} for one metric."""
    if scoring is None:
        return {"score": DEFAULT_SCORER[task]}
    if isinstance(scoring, str):
        names = {"score": scoring}
    elif isinstance(scoring, list | tuple | set):
        names = {name: name for name in scoring}
    elif isinstance(scoring, dict):
        names = dict(scoring)
    else:
        raise ConfigError(
            f"scoring={scoring!r}: foldflow scores every fold inside its flow, where a callable "
            "cannot reach the fold's model; give a scorer name "
            f"({', '.join(sorted({n for names in SCORERS.values() for n in names}))}), a list "
            "or a dict of names, or use scikit-learn's search for a custom scorer"
        )
    for name in names.values():
        if not isinstance(name, str) or name not in SCORERS[task]:
            raise ConfigError(
                f"scoring {name!r} is not a {task} metric foldflow scores; "
                f"choose from {', '.join(SCORERS[task])}"
            )
    return names


def n_workers(n_jobs: int | None) -> int:
    """scikit-learn's n_jobs as parallel task runs: None is 1, -1 every CPU."""
    if n_jobs is None:
        return 1
    cpus = os.cpu_count() or 1
    return max(1, n_jobs if n_jobs > 0 else cpus + 1 + n_jobs)


def explicit_splits(cv: Any, X: Any, y: Any, groups: Any = None) -> list[ExplicitSplit] | None:
    """A splitter's folds as explicit rows; None for an int (foldflow's stratified folds)."""
    if cv is None or isinstance(cv, int | np.integer):
        return None
    splitter = cv if hasattr(cv, "split") else model_selection.check_cv(cv)
    return [
        ExplicitSplit(train=train.tolist(), test=test.tolist())
        for train, test in splitter.split(X, y, groups)
    ]


def run_settings(
    X: Any,
    y: Any,
    task: str,
    cv: Any,
    seed: int,
    workers: int,
    engine: str,
    refit_metric: str,
    home: Path,
    groups: Any = None,
    train_scores: bool = False,
) -> RunSettings:
    """The data written to the cache as Parquet and described inline; folds, seed, engine."""
    cache_dir = home / "data" / "cache"
    spec, parquet = store_in_memory_data(X, y, task, cache_dir)  # type: ignore[arg-type]
    splits = explicit_splits(cv, X, y, groups)
    n_splits = len(splits) if splits is not None else int(5 if cv is None else cv)
    return RunSettings(
        seed=seed,
        n_splits=n_splits,
        splits=splits,
        engine=engine,  # type: ignore[arg-type]
        workers=workers,
        dataset=spec,
        source=str(parquet),
        cache_dir=str(cache_dir),
        output_dir=str(home / "runs"),
        refit_metric=refit_metric,
        train_scores=train_scores,
    )


def _run_flow(flow: Any, *args: Any, **kwargs: Any) -> Any:
    """The flow on the server in PREFECT_API_URL, else on this process's embedded API (started
    by the first call, as `foldflow cv|grid` start it: this process then never imports
    Prefect's server code)."""
    from flows.runtime.embedded_api import start_embedded_api, use_embedded_api

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with use_embedded_api(start_embedded_api()):
        return flow(*args, **kwargs)


def fold_scores(
    table: pd.DataFrame,
    row: int,
    n_splits: int,
    names: dict[str, str],
    task: str,
    rows: str = "test",
) -> list[dict[str, float]]:
    """Per fold: cv_results_ name -> signed score, as a scikit-learn scorer gives it, on the
    fold's test rows (or `rows="train"`: the rows the fit trained on)."""
    folds = []
    for fold in range(n_splits):
        scores = {}
        for result_name, scorer in names.items():
            metric, sign = SCORERS[task][scorer]
            scores[result_name] = sign * float(table.loc[row, f"split{fold}_{rows}_{metric}"])
        folds.append(scores)
    return folds


def scikit_learn_out(
    table: pd.DataFrame,
    n_splits: int,
    names: dict[str, str],
    task: str,
    error_score: Any,
    multimetric: bool,
    train_scores: bool = False,
) -> list[dict[str, Any]]:
    """The flow's cv_results as scikit-learn's `_fit_and_score` records, candidate-major:
    what `BaseSearchCV._format_results` turns into `cv_results_` (with `train_scores`, each
    record's `train_scores` too, as `return_train_score=True` gives them)."""
    out = []
    for row in range(len(table)):
        failed = str(table.loc[row, "error"] or "")
        on_train = fold_scores(table, row, n_splits, names, task, "train") if train_scores else None
        for fold, scores in enumerate(fold_scores(table, row, n_splits, names, task)):
            fold_error = _fold_error(failed, fold)
            train = None if on_train is None else on_train[fold]
            if fold_error:
                scores = {name: error_score for name in scores}
                train = None if train is None else {name: error_score for name in train}
            record = {
                "fit_time": float(table.loc[row, f"split{fold}_fit_time"]),
                # Scoring happens inside the fit's task run; it is not timed apart.
                "score_time": np.nan,
                "test_scores": scores if multimetric else scores["score"],
                "n_test_samples": 0,
                "fit_error": fold_error,
            }
            if train is not None:
                record["train_scores"] = train if multimetric else train["score"]
            out.append(record)
    return out


def _fold_error(errors: str, fold: int) -> str | None:
    """This fold's part of the flow's error column ("fold 0: ...; fold 2: ...")."""
    prefix = f"fold {fold}: "
    for part in errors.split("; fold "):
        part = part if part.startswith("fold ") else f"fold {part}"
        if part.startswith(prefix):
            return part.removeprefix(prefix)
    return None


class _FlowSearch:
    """scikit-learn's BaseSearchCV.fit with the evaluation done by the grid-search flow: the
    subclass (grid or randomized) only says which candidates to evaluate."""

    def _candidate_params(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _grid_spec(self, candidates: list[dict[str, Any]]) -> GridSpec:
        return GridSpec(
            candidates=[
                {routed_grid_key(key): _plain(value) for key, value in candidate.items()}
                for candidate in candidates
            ]
        )

    def __sklearn_tags__(self):
        plan_kind = _kind_or_none(self.estimator)  # type: ignore[attr-defined]
        if plan_kind == "infer":  # a bare model function has no tags to inherit
            tags = BaseEstimator.__sklearn_tags__(self)  # type: ignore[arg-type]
        else:
            tags = super().__sklearn_tags__()  # type: ignore[misc]
        if plan_kind == "infer" and hasattr(self, "task_"):  # learnt from y by fit
            plan_kind = "regressor" if self.task_ == "regression" else "classifier"
        if plan_kind in ("classifier", "regressor"):
            tags.estimator_type = plan_kind
        return tags

    def fit(self, X: Any, y: Any = None, groups: Any = None, **params: Any):
        """Run the grid-search flow on X and y; fills cv_results_, best_* and best_estimator_."""
        if params:
            raise ConfigError(f"fit parameters {sorted(params)} are not supported by foldflow")
        if y is None:
            raise ConfigError("foldflow's search needs y (supervised learning only)")
        plan = plan_estimator(self.estimator)
        task = task_of(plan.kind, np.asarray(y))
        names = scorer_names(self.scoring, task)
        self.task_ = task
        self.multimetric_ = not (self.scoring is None or isinstance(self.scoring, str))
        if self.multimetric_:
            self._check_refit_for_multimetric(names)
            refit_name = self.refit if isinstance(self.refit, str) else None
        else:
            refit_name = "score"
        ranking = names[refit_name] if refit_name else next(iter(names.values()))
        candidate_params = self._candidate_params()
        base_params = plan.base_params
        if plan.keras_kwargs is None:
            grid = self._grid_spec(candidate_params)
        else:  # every candidate carries all its routed keys: nothing comes from a base
            grid = GridSpec(candidates=[_routed(plan, c) for c in candidate_params])
            base_params = {}
        home = foldflow_home()
        run = run_settings(
            X,
            y,
            task,
            self.cv,
            _seed(self.random_state, plan.random_state),
            n_workers(self.n_jobs),
            self.engine,
            SCORERS[task][ranking][0],
            home,
            groups,
            bool(self.return_train_score),
        )
        config = GridSearchConfig(
            model=function_reference(plan.function, Path(run.cache_dir)),
            base_params=base_params,
            grid=grid,
            run=run,
            # A callable picks the best from cv_results_: refitted afterwards (_refit_one).
            refit=bool(self.refit) and not callable(self.refit),
        )
        from flows.grid_search import grid_search_flow

        summary = _run_flow(grid_search_flow, config, fail_fast=self.error_score == "raise")
        self.run_dir_ = Path(summary.output_dir)
        table = pd.read_parquet(self.run_dir_ / "cv_results.parquet")
        self.n_splits_ = run.n_splits
        error_score = np.nan if self.error_score == "raise" else self.error_score
        out = scikit_learn_out(
            table,
            run.n_splits,
            names,
            task,
            error_score,
            self.multimetric_,
            bool(self.return_train_score),
        )
        # scikit-learn's own rule: a FitFailedWarning, or a ValueError when every fit failed.
        _warn_or_raise_about_fit_failures(out, self.error_score)
        results = self._format_results(candidate_params, run.n_splits, out)
        if self.refit or not self.multimetric_:
            self.best_index_ = int(
                self._select_best_index(self.refit, refit_name or "score", results)
            )
            if not callable(self.refit):  # as scikit-learn: no best_score_ for a callable
                self.best_score_ = results[f"mean_test_{refit_name or 'score'}"][self.best_index_]
            self.best_params_ = results["params"][self.best_index_]
            if config.refit and self.best_index_ != summary.best_index:
                raise RuntimeError(
                    f"foldflow refitted combination {summary.best_index}, scikit-learn's "
                    f"ranking picks {self.best_index_}: please report this"
                )
        if callable(self.refit):
            summary = self._refit_one(config, _routed(plan, self.best_params_))
        if self.refit:
            best_model = Path(summary.output_dir) / "best_model.keras"
            self.best_estimator_ = load_fitted(best_model, task)
            self.best_estimator_.n_features_in_ = int(np.shape(X)[1])
            if hasattr(X, "columns"):
                feature_names = np.asarray([str(c) for c in X.columns], dtype=object)
                self.best_estimator_.feature_names_in_ = feature_names
                self.feature_names_in_ = feature_names
            self.refit_time_ = float(summary.refit_seconds or 0.0)
        self.scorer_ = (
            {name: get_scorer(scorer) for name, scorer in names.items()}
            if self.multimetric_
            else get_scorer(names["score"])
        )
        self.cv_results_ = results
        return self

    def _refit_one(self, config: GridSearchConfig, candidate: dict[str, Any]) -> Any:
        """Refit the candidate a callable `refit` chose: the grid flow on that one candidate,
        its fold fits read from the fit cache, then its refit on every row (own run folder)."""
        from flows.grid_search import grid_search_flow

        single = config.model_copy(
            update={
                "grid": GridSpec(candidates=[candidate]),
                "refit": True,
                "run": config.run.model_copy(update={"run_name": None}),
            }
        )
        return _run_flow(grid_search_flow, single, fail_fast=True)


class GridSearchCV(_FlowSearch, model_selection.GridSearchCV):
    """scikit-learn's GridSearchCV, every fit run by foldflow's grid-search flow.

    `estimator`: a scikeras KerasClassifier/KerasRegressor built from a model function, or
    the function. `cv` as an int: StratifiedKFold (KFold for a regression) shuffled with
    `random_state` (default 7), unlike scikit-learn's unshuffled folds; pass a splitter for
    scikit-learn's. `engine`: foldflow's auto / fast / reference.
    """

    def __init__(
        self,
        estimator: Any,
        param_grid: Any,
        *,
        scoring: Any = None,
        n_jobs: int | None = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        error_score: Any = np.nan,
        return_train_score: bool = False,
        random_state: int | None = None,
        engine: str = "auto",
    ):
        super().__init__(
            estimator,
            param_grid,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.random_state = random_state
        self.engine = engine

    def _candidate_params(self) -> list[dict[str, Any]]:
        return list(ParameterGrid(self.param_grid))

    def _grid_spec(self, candidates: list[dict[str, Any]]) -> GridSpec:
        """One grid stays a grid (its product, as the UI shows it); a list of grids becomes
        its candidates."""
        if isinstance(self.param_grid, dict):
            return GridSpec.from_mapping(
                {routed_grid_key(key): list(values) for key, values in self.param_grid.items()},
                source="param_grid",
            )
        return super()._grid_spec(candidates)


class RandomizedSearchCV(_FlowSearch, model_selection.RandomizedSearchCV):
    """scikit-learn's RandomizedSearchCV (candidates sampled as scikit-learn samples them,
    with `random_state`), every fit run by foldflow's grid-search flow. `random_state` also
    seeds the folds and the fits (default 7 when None)."""

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        n_iter: int = 10,
        scoring: Any = None,
        n_jobs: int | None = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        random_state: Any = None,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        engine: str = "auto",
    ):
        super().__init__(
            estimator,
            param_distributions,
            n_iter=n_iter,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            random_state=random_state,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.engine = engine

    def _candidate_params(self) -> list[dict[str, Any]]:
        return list(
            ParameterSampler(self.param_distributions, self.n_iter, random_state=self.random_state)
        )


def _routed(plan: Any, candidate: dict[str, Any]) -> dict[str, Any]:
    """A candidate as the grid flow takes it: routed keys, plain JSON values."""
    if plan.keras_kwargs is not None:
        candidate = keras_candidate(plan, candidate)
    return {routed_grid_key(key): _plain(value) for key, value in candidate.items()}


def _plain(value: Any) -> Any:
    """numpy scalars (sampled values) as Python values: flow parameters are JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _kind_or_none(estimator: Any) -> str | None:
    try:
        return plan_estimator(estimator).kind
    except ConfigError:
        return None


def _seed(search_seed: Any, estimator_seed: int | None) -> int:
    """The run seed: the search's random_state, else the estimator's, else foldflow's 7."""
    for seed in (search_seed, estimator_seed):
        if isinstance(seed, int | np.integer):
            return int(seed)
    return DEFAULT_SEED


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
) -> dict[str, np.ndarray]:
    """scikit-learn's cross_validate, the fits run by foldflow's cross-validation flow:
    {'fit_time', 'score_time', 'test_score' or 'test_<name>'} (and 'train_score' or
    'train_<name>' with return_train_score), one value per fold."""
    plan = plan_estimator(estimator)
    task = task_of(plan.kind, np.asarray(y))
    names = scorer_names(scoring, task)
    multimetric = not (scoring is None or isinstance(scoring, str))
    first = next(iter(names.values()))
    run = run_settings(
        X,
        y,
        task,
        cv,
        _seed(random_state, plan.random_state),
        n_workers(n_jobs),
        engine,
        SCORERS[task][first][0],
        foldflow_home(),
        groups,
        return_train_score,
    )
    config = CVConfig(
        model=function_reference(plan.function, Path(run.cache_dir)),
        params=plan.base_params,
        run=run,
    )
    from flows.cv import cv_flow

    summary = _run_flow(cv_flow, config)
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
    )["test_score"]


HALVING_RESOURCE = "epochs"


class _FlowHalvingSearch(_FlowSearch):
    """scikit-learn's successive halving with every rung run by foldflow's search flow
    (strategy "halving"): the resource is epochs, every fold is kept at every rung, and the
    survivors continue from their checkpoints. The schedule (n_resources_, n_candidates_,
    n_iterations_) is scikit-learn's: the flow's last rung is scikit-learn's last iteration."""

    def _check_halving(self, plan: Any, task: str) -> str:
        """Refuse what foldflow's halving does not do, before any data is stored or fitted;
        the scikit-learn scorer name the rungs rank by."""
        if self.resource != HALVING_RESOURCE:
            raise ConfigError(
                f"resource={self.resource!r}: foldflow halves over epochs (every fold keeps all "
                "its rows and the survivors train on from their checkpoints); use "
                "resource='epochs', or scikit-learn's halving search for n_samples"
            )
        if plan.keras_kwargs is not None:
            raise ConfigError(
                "Keras' own wrapper keeps epochs inside fit_kwargs, which is no estimator "
                "parameter a halving search can set; use a scikeras KerasClassifier/"
                "KerasRegressor or the model function"
            )
        if not isinstance(self.refit, bool):
            raise ConfigError(
                f"refit={self.refit!r}: scikit-learn's halving searches take refit as a bool"
            )
        if self.scoring is not None and not isinstance(self.scoring, str):
            raise ConfigError(
                f"scoring={self.scoring!r}: halving ranks by one metric (scikit-learn's halving "
                "searches take one scorer name too)"
            )
        names = scorer_names(self.scoring, task)
        if SCORERS[task][names["score"]][1] < 0:
            raise ConfigError(
                f"scoring={names['score']!r}: foldflow's halving keeps the candidates with the "
                "highest value of its metric, so it cannot rank by a loss; choose "
                + ", ".join(n for n, (_, sign) in SCORERS[task].items() if sign > 0)
            )
        if not (isinstance(self.factor, int | np.integer) and self.factor >= 2):
            raise ConfigError(f"factor={self.factor!r}: foldflow's halving needs an int >= 2")
        return names["score"]

    def _max_resources(self, plan: Any) -> int:
        if self.max_resources == "auto":
            epochs = plan.base_params.get(HALVING_RESOURCE)
            if not isinstance(epochs, int | np.integer) or isinstance(epochs, bool):
                raise ConfigError(
                    "max_resources='auto' takes the estimator's epochs, and this estimator "
                    "sets none: give max_resources (the last iteration's epochs) or the "
                    "estimator's epochs"
                )
            return int(epochs)
        return _positive_int("max_resources", self.max_resources)

    def _schedule(self, n_candidates: int | None, plan: Any) -> dict[str, Any]:
        """scikit-learn's `_check_input_parameters` and `_run_search` arithmetic for a
        parameter resource: min/max resources and the epochs of every iteration."""
        max_resources = self._max_resources(plan)
        if self.min_resources in ("smallest", "exhaust"):
            min_resources = 1  # scikit-learn's smallest for a parameter resource
        else:
            min_resources = _positive_int("min_resources", self.min_resources)
        if min_resources > max_resources:
            raise ConfigError(
                f"min_resources_={min_resources} is greater than max_resources_={max_resources}"
            )
        if n_candidates is None:  # HalvingRandomSearchCV's n_candidates='exhaust'
            n_candidates = max_resources // min_resources
        factor = int(self.factor)
        n_required = 1 + math.floor(math.log(n_candidates, factor))
        if self.min_resources == "exhaust":
            min_resources = max(min_resources, max_resources // factor ** (n_required - 1))
        n_possible = 1 + math.floor(math.log(max_resources // min_resources, factor))
        if self.aggressive_elimination and n_required > n_possible:
            raise ConfigError(
                "aggressive_elimination=True would repeat the first iteration's epochs "
                f"({n_required} iterations needed, {n_possible} possible), which foldflow's "
                "halving (each rung longer than the last) does not do; leave it False, or "
                "lower factor or min_resources, or raise max_resources"
            )
        if self.aggressive_elimination:  # scikit-learn's powers: the last ones possible
            powers = [max(0, k - n_required + n_possible) for k in range(n_required)]
        else:
            powers = list(range(min(n_possible, n_required)))
        resources = [min(factor**power * min_resources, max_resources) for power in powers]
        return {
            "n_candidates": n_candidates,
            "min_resources": min_resources,
            "max_resources": max_resources,
            "n_required": n_required,
            "n_possible": n_possible,
            "resources": resources,
        }

    def _space(self) -> tuple[dict[str, Any], int | None]:
        """The flow's search space (routed key -> choices or a distribution) and how many
        candidates to draw (None: n_candidates='exhaust')."""
        raise NotImplementedError

    def fit(self, X: Any, y: Any = None, groups: Any = None, **params: Any):
        """Run the search flow's successive halving on X and y; fills cv_results_ (one row per
        candidate and iteration), n_resources_, n_candidates_, best_* and best_estimator_."""
        if params:
            raise ConfigError(f"fit parameters {sorted(params)} are not supported by foldflow")
        if y is None:
            raise ConfigError("foldflow's search needs y (supervised learning only)")
        plan = plan_estimator(self.estimator)
        task = task_of(plan.kind, np.asarray(y))
        scorer = self._check_halving(plan, task)
        space, n_draw = self._space()
        if HALVING_RESOURCE in space:
            raise ConfigError(
                f"Cannot use parameter {HALVING_RESOURCE} as the resource since it is part of "
                "the searched parameters"
            )
        seed = _seed(self.random_state, plan.random_state)
        size = space_size(space)
        schedule = self._schedule(n_draw, plan)
        n_candidates = int(min(size, schedule["n_candidates"]))
        if n_candidates != schedule["n_candidates"]:  # fewer distinct candidates than asked
            schedule = self._schedule(n_candidates, plan)
        self.task_ = task
        self.multimetric_ = False
        home = foldflow_home()
        run = run_settings(
            X,
            y,
            task,
            self.cv,
            seed,
            n_workers(self.n_jobs),
            self.engine,
            SCORERS[task][scorer][0],
            home,
            groups,
            bool(self.return_train_score),
        )
        base_params = {k: v for k, v in plan.base_params.items() if k != HALVING_RESOURCE}
        config = SearchConfig(
            strategy="halving",
            space=space,
            n_candidates=n_candidates,
            min_epochs=schedule["resources"][0],
            max_epochs=schedule["resources"][-1],
            factor=int(self.factor),
            model=function_reference(plan.function, Path(run.cache_dir)),
            base_params=base_params,
            run=run,
            refit=bool(self.refit),
        )
        from flows.search import search_flow

        summary = _run_flow(search_flow, config, fail_fast=self.error_score == "raise")
        self.run_dir_ = Path(summary.output_dir)
        table = pd.read_parquet(self.run_dir_ / "cv_results.parquet")
        order, candidate_params, more = self._rows(table)
        if more["n_resources"][-1] != schedule["resources"][-1] or len(set(more["iter"])) != len(
            schedule["resources"]
        ):
            raise RuntimeError(
                f"foldflow's halving ran rungs {sorted(set(more['n_resources']))}, "
                f"scikit-learn's schedule is {schedule['resources']}: please report this"
            )
        table = table.iloc[order].reset_index(drop=True)
        self.n_splits_ = run.n_splits
        names = {"score": scorer}
        error_score = np.nan if self.error_score == "raise" else self.error_score
        out = scikit_learn_out(
            table, run.n_splits, names, task, error_score, False, bool(self.return_train_score)
        )
        _warn_or_raise_about_fit_failures(out, self.error_score)
        results = self._format_results(candidate_params, run.n_splits, out, more)
        for key in ("iter", "n_resources"):
            results[key] = np.asarray(results[key])
        self.n_resources_ = schedule["resources"]
        self.n_candidates_ = [more["iter"].count(k) for k in range(len(self.n_resources_))]
        self.n_iterations_ = len(self.n_resources_)
        self.n_required_iterations_ = schedule["n_required"]
        self.n_possible_iterations_ = schedule["n_possible"]
        self.n_remaining_candidates_ = max(1, math.ceil(self.n_candidates_[-1] / self.factor))
        self.min_resources_ = schedule["min_resources"]
        self.max_resources_ = schedule["max_resources"]
        self.best_index_ = int(self._select_best_index(self.refit, "score", results))
        self.best_score_ = results["mean_test_score"][self.best_index_]
        self.best_params_ = results["params"][self.best_index_]
        if self.refit:
            flow_best = order.index(summary.best_index)
            if results["params"][flow_best] != self.best_params_:  # a tie picked differently
                summary = self._refit_halving(config, self.best_params_)
            best_model = Path(summary.output_dir) / "best_model.keras"
            self.best_estimator_ = load_fitted(best_model, task)
            self.best_estimator_.n_features_in_ = int(np.shape(X)[1])
            if hasattr(X, "columns"):
                feature_names = np.asarray([str(c) for c in X.columns], dtype=object)
                self.best_estimator_.feature_names_in_ = feature_names
                self.feature_names_in_ = feature_names
            self.refit_time_ = float(summary.refit_seconds or 0.0)
        self.scorer_ = get_scorer(scorer)
        self.cv_results_ = results
        return self

    def _rows(self, table: pd.DataFrame) -> tuple[list[int], list[dict[str, Any]], dict]:
        """The flow's rows in scikit-learn's order: the first iteration in the candidates'
        order, each later one in `_top_k`'s (ascending score of the iteration before); the
        candidates with the resource set, and the `iter` / `n_resources` columns."""
        first = [int(r) for r in np.flatnonzero(table["iter"].to_numpy() == 0)]
        candidates = self._flow_candidates(table, first)
        previous_score: dict[int, float] = {}
        order: list[int] = []
        for iteration in sorted(int(i) for i in table["iter"].unique()):
            rows = [int(r) for r in np.flatnonzero(table["iter"].to_numpy() == iteration)]
            if iteration == 0:
                rows.sort(key=lambda r: candidates[int(table.loc[r, "candidate"])][0])
            else:  # NaN first, then ascending, as np.roll(np.argsort(scores)) orders them
                rows.sort(
                    key=lambda r: (
                        not math.isnan(previous_score[int(table.loc[r, "candidate"])]),
                        previous_score[int(table.loc[r, "candidate"])],
                    )
                )
            for r in rows:
                previous_score[int(table.loc[r, "candidate"])] = float(
                    table.loc[r, "mean_test_score"]
                )
            order += rows
        candidate_params = [
            {
                **candidates[int(table.loc[r, "candidate"])][1],
                HALVING_RESOURCE: int(table.loc[r, "n_resources"]),
            }
            for r in order
        ]
        more = {
            "iter": [int(table.loc[r, "iter"]) for r in order],
            "n_resources": [int(table.loc[r, "n_resources"]) for r in order],
        }
        return order, candidate_params, more

    def _flow_candidates(self, table: pd.DataFrame, first: list[int]) -> dict[int, Any]:
        """Flow candidate number -> (its place in scikit-learn's first iteration, its params
        in the user's keys without the resource)."""
        raise NotImplementedError

    def _refit_halving(self, config: SearchConfig, best: dict[str, Any]) -> Any:
        """The best of the last iteration when a tie made the flow refit another: the grid
        flow on that one candidate (its fold fits read from the fit cache), then its refit."""
        grid_config = GridSearchConfig(
            model=config.model,
            base_params=config.base_params,
            grid=GridSpec(candidates=[{routed_grid_key(k): _plain(v) for k, v in best.items()}]),
            run=config.run.model_copy(update={"run_name": None}),
            refit=True,
        )
        return self._refit_one(grid_config, grid_config.grid.candidates[0])


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(
            f"{name}={value!r}: foldflow's halving takes a positive number of epochs"
            + (" or 'smallest' / 'exhaust'" if name == "min_resources" else "")
        )
    return int(value)


def _choices(name: str, values: Any, key: str) -> list[Any]:
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise ConfigError(
            f"{name}[{key!r}]={values!r}: foldflow's halving takes a list of values per key"
        )
    choices = [_plain(v) for v in values]
    if not choices:
        raise ConfigError(f"{name}[{key!r}] is empty")
    return choices


def space_size(space: dict[str, Any]) -> float:
    """Distinct candidates of a flow space (inf with a continuous distribution)."""
    from tasks.search.spaces import space_from_mapping

    return space_from_mapping(space, "param space").size()


def _flow_dimension(name: str, key: str, value: Any) -> Any:
    """A list of values, or scipy's randint / uniform / loguniform, as the search flow's
    space takes them (and samples them back exactly: tasks.search.spaces)."""
    if not hasattr(value, "rvs"):
        return _choices(name, value, key)
    dist = getattr(value, "dist", None)
    kind = getattr(dist, "name", None)
    try:
        shapes, loc, scale = dist._parse_args(*value.args, **value.kwds)  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - not a frozen scipy distribution
        kind = None
    if kind == "randint" and loc == 0:
        low, high = (int(bound) for bound in shapes)
        return {"randint": [low, high - 1]}  # scipy excludes its upper bound, foldflow not
    if kind == "uniform":
        return {"uniform": [float(loc), float(loc + scale)]}
    if kind in ("loguniform", "reciprocal") and loc == 0 and scale == 1:
        return {"loguniform": [float(shapes[0]), float(shapes[1])]}
    raise ConfigError(
        f"{name}[{key!r}]={value!r}: foldflow's halving takes lists of values and scipy's "
        "randint, uniform and loguniform (the distributions its search space samples)"
    )


def _one_mapping(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict) or not value:
        raise ConfigError(
            f"{name}: foldflow's halving searches one non-empty dict of parameters (its space "
            "is one product of choices); a list of several grids is not supported"
        )
    return value


def _params_key(params: dict[str, Any]) -> str:
    """A candidate's routed params as comparable text (tuples and lists alike)."""
    routed = {routed_grid_key(key): _plain(value) for key, value in params.items()}
    return json.dumps(routed, sort_keys=True, default=str)


class HalvingGridSearchCV(_FlowHalvingSearch, model_selection.HalvingGridSearchCV):
    """scikit-learn's HalvingGridSearchCV over epochs, every iteration run by foldflow's
    search flow (strategy "halving": every fold kept, survivors trained on from checkpoints).

    `resource` must be 'epochs' (the default here); `max_resources` the last iteration's
    epochs ('auto': the estimator's epochs); `min_resources` epochs, 'smallest' (1) or
    'exhaust'. `param_grid` is one dict of lists. `cv` and `random_state` as in
    `foldflow.GridSearchCV`.
    """

    def __init__(
        self,
        estimator: Any,
        param_grid: Any,
        *,
        factor: int = 3,
        resource: str = HALVING_RESOURCE,
        max_resources: Any = "auto",
        min_resources: Any = "exhaust",
        aggressive_elimination: bool = False,
        cv: Any = 5,
        scoring: Any = None,
        refit: bool = True,
        error_score: Any = np.nan,
        return_train_score: bool = True,
        random_state: int | None = None,
        n_jobs: int | None = None,
        verbose: int = 0,
        engine: str = "auto",
    ):
        super().__init__(
            estimator,
            param_grid,
            factor=factor,
            resource=resource,
            max_resources=max_resources,
            min_resources=min_resources,
            aggressive_elimination=aggressive_elimination,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            random_state=random_state,
            n_jobs=n_jobs,
            verbose=verbose,
        )
        self.engine = engine

    def _space(self) -> tuple[dict[str, Any], int | None]:
        grid = _one_mapping("param_grid", self.param_grid)
        space = {routed_grid_key(k): _choices("param_grid", v, k) for k, v in grid.items()}
        return space, len(ParameterGrid(grid))

    def _flow_candidates(self, table: pd.DataFrame, first: list[int]) -> dict[int, Any]:
        grid = list(ParameterGrid(_one_mapping("param_grid", self.param_grid)))
        place = {_params_key(params): index for index, params in enumerate(grid)}
        candidates = {}
        for row in first:
            params = json.loads(table.loc[row, "params"])
            params.pop(HALVING_RESOURCE, None)
            index = place[json.dumps(params, sort_keys=True, default=str)]
            candidates[int(table.loc[row, "candidate"])] = (index, grid[index])
        return candidates


class HalvingRandomSearchCV(_FlowHalvingSearch, model_selection.HalvingRandomSearchCV):
    """scikit-learn's HalvingRandomSearchCV over epochs, every iteration run by foldflow's
    search flow. `param_distributions`: one dict of lists and scipy's randint, uniform or
    loguniform, sampled as scikit-learn samples them with `random_state` (default 7, which
    also seeds the folds and fits). Resources as in `foldflow.HalvingGridSearchCV`.
    """

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        n_candidates: Any = "exhaust",
        factor: int = 3,
        resource: str = HALVING_RESOURCE,
        max_resources: Any = "auto",
        min_resources: Any = "smallest",
        aggressive_elimination: bool = False,
        cv: Any = 5,
        scoring: Any = None,
        refit: bool = True,
        error_score: Any = np.nan,
        return_train_score: bool = True,
        random_state: Any = None,
        n_jobs: int | None = None,
        verbose: int = 0,
        engine: str = "auto",
    ):
        super().__init__(
            estimator,
            param_distributions,
            n_candidates=n_candidates,
            factor=factor,
            resource=resource,
            max_resources=max_resources,
            min_resources=min_resources,
            aggressive_elimination=aggressive_elimination,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            random_state=random_state,
            n_jobs=n_jobs,
            verbose=verbose,
        )
        self.engine = engine

    def _space(self) -> tuple[dict[str, Any], int | None]:
        name = "param_distributions"
        mapping = _one_mapping(name, self.param_distributions)
        space = {routed_grid_key(k): _flow_dimension(name, k, v) for k, v in mapping.items()}
        if self.n_candidates == "exhaust":
            if self.min_resources == "exhaust":
                raise ConfigError("n_candidates and min_resources cannot be both 'exhaust'")
            return space, None
        return space, _positive_int("n_candidates", self.n_candidates)

    def _flow_candidates(self, table: pd.DataFrame, first: list[int]) -> dict[int, Any]:
        """The flow's own draws (ParameterSampler with the run's seed), in its order."""
        mapping = _one_mapping("param_distributions", self.param_distributions)
        user_key = {routed_grid_key(key): key for key in mapping}
        candidates = {}
        for row in first:
            params = json.loads(table.loc[row, "params"])
            params.pop(HALVING_RESOURCE, None)
            number = int(table.loc[row, "candidate"])
            candidates[number] = (number, {user_key.get(k, k): v for k, v in params.items()})
        return candidates
