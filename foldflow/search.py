"""`foldflow.GridSearchCV` and `RandomizedSearchCV` over one `fit` shared with the halving
searches (foldflow.halving): scikit-learn's searches, every fit run by foldflow's flows.

As scikit-learn's `BaseSearchCV.fit` runs whatever `_run_search` asks for, `_FlowSearch.fit`
is the one engine: check the arguments, store the data, run the flow a strategy asks for
(`_plan_search`: the grid flow on a grid's or sampled candidates, the search flow's halving
strategy), then turn the flow's cv_results into scikit-learn's `cv_results_` (its own
`_format_results`), pick the best as scikit-learn does and load the refitted model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import model_selection
from sklearn.base import BaseEstimator
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.model_selection._validation import _warn_or_raise_about_fit_failures

from flows.progress import notebook_display
from foldflow.callbacks import refit_told, search_callbacks
from foldflow.estimators import (
    EstimatorPlan,
    for_data,
    load_fitted,
    plan_estimator,
    routed_candidate,
    routed_grid_key,
    task_of,
)
from foldflow.pipelines import fitted_pipeline, split_keys
from foldflow.results import flow_scoring, metric_of, scikit_learn_out, scorer_names, scorer_of
from foldflow.runs import (
    n_workers,
    quietly_imported,
    run_flow,
    run_seed,
    run_settings,
    start_api_early,
)
from tasks.config import GridSearchConfig, GridSpec, RunSettings, SearchConfig, foldflow_home
from tasks.errors import ConfigError
from tasks.model.function_source import function_reference
from tasks.model.routing import TRANSFORMER_KEY
from tasks.records import plain_value
from tasks.search.halving import ScikitLearnHalving


def grid_flow() -> Callable:
    """The grid-search flow (imported on use: `import foldflow` loads no Prefect)."""
    from flows.grid_search import grid_search_flow

    return grid_search_flow


def search_flow() -> Callable:
    """The search flow (imported on use)."""
    from flows.search import search_flow

    return search_flow


@dataclass
class FlowSearch:
    """What a strategy asks the flows for: the flow, its config's fields but the model and
    the run, the candidates when known before the flow runs (grid, randomized) and, for
    halving, the schedule."""

    flow: Callable[[], Callable]
    config_class: type[GridSearchConfig] | type[SearchConfig]
    fields: dict[str, Any]
    candidate_params: list[dict[str, Any]] | None = None
    halving: ScikitLearnHalving | None = None


class _FlowSearch:
    """scikit-learn's BaseSearchCV.fit with the evaluation done by foldflow's flows; a
    subclass only says which candidates to evaluate (`_plan_search`) and how the flow's rows
    read as scikit-learn's (`_cv_rows`)."""

    def _candidate_params(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _grid_spec(self, candidates: list[dict[str, Any]]) -> GridSpec:
        return GridSpec(
            candidates=[
                {routed_grid_key(key): plain_value(value) for key, value in candidate.items()}
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

    # --- the strategy: what a subclass decides -------------------------------------------

    def _scorer_names(self, plan: EstimatorPlan, task: str) -> dict[str, str]:
        """cv_results_ name -> scikit-learn scorer name, checked."""
        names = scorer_names(self.scoring, task)
        if not (self.scoring is None or isinstance(self.scoring, str)):
            self._check_refit_for_multimetric(names)
        return names

    def _plan_search(self, plan: EstimatorPlan, task: str) -> FlowSearch:
        """The grid flow on this search's candidates (a grid's or sampled ones)."""
        candidate_params = self._candidate_params()
        if plan.keras_kwargs is None and plan.transformer is None:
            grid, base_params = self._grid_spec(candidate_params), plan.base_params
        else:  # every candidate carries its own routed keys (a Keras wrapper: all of them)
            grid = GridSpec(candidates=[_routed(plan, c) for c in candidate_params])
            base_params = plan.base_params
            if plan.keras_kwargs is not None:  # but a Pipeline's transformers
                base_params = {k: v for k, v in base_params.items() if k == TRANSFORMER_KEY}
        refit = self.refit
        return FlowSearch(
            flow=grid_flow,
            config_class=GridSearchConfig,
            # A callable picks the best from cv_results_: refitted afterwards (_refit_one).
            fields={
                "base_params": base_params,
                "grid": grid,
                "refit": bool(refit) and not callable(refit),
            },
            candidate_params=candidate_params,
        )

    def _cv_rows(
        self, table: pd.DataFrame, search: FlowSearch
    ) -> tuple[list[int], list[dict[str, Any]], dict[str, list]]:
        """The flow's rows in scikit-learn's order, their candidates, and any columns
        `_format_results` adds (halving's `iter`, `n_resources`)."""
        assert search.candidate_params is not None
        return list(range(len(table))), search.candidate_params, {}

    def _search_attributes(self, results: dict[str, Any], search: FlowSearch) -> None:
        """Attributes a strategy adds to the fitted search (halving's schedule)."""

    # --- the engine: one fit for every search ---------------------------------------------

    def fit(self, X: Any, y: Any = None, groups: Any = None, **params: Any):
        """Run the flow this search's strategy asks for on X and y; fills cv_results_,
        best_* and best_estimator_ as scikit-learn's search does."""
        if params:
            raise ConfigError(f"fit parameters {sorted(params)} are not supported by foldflow")
        if y is None:
            raise ConfigError("foldflow's search needs y (supervised learning only)")
        plan = for_data(plan_estimator(self.estimator), X)
        task = task_of(plan.kind, np.asarray(y))
        names = self._scorer_names(plan, task)
        search = self._plan_search(plan, task)  # every argument checked: now the data
        start_api_early()  # it comes up while the data are stored and the flow imported
        self.task_ = task
        self.multimetric_ = not (self.scoring is None or isinstance(self.scoring, str))
        refit = self.refit
        refit_name = (refit if isinstance(refit, str) else None) if self.multimetric_ else "score"
        ranking = names[refit_name] if refit_name else next(iter(names.values()))
        run = self._run_settings(X, y, groups, plan, task, metric_of(task, ranking)[0])
        run = run.model_copy(update={"scoring": flow_scoring(self.scoring, task)})
        config = search.config_class(
            model=function_reference(plan.function, run.cache_folder()), run=run, **search.fields
        )
        error_score = self.error_score
        flow = quietly_imported(search.flow)
        if isinstance(config, GridSearchConfig):  # the flow's first work, while the API starts
            from flows.evaluation import warm_transformer_fits

            warm_transformer_fits(config)
        with search_callbacks(
            self, X, y, notebook_display() if self.verbose else None, search.halving is None
        ) as display:
            summary = run_flow(
                flow,
                config,
                fail_fast=error_score == "raise",
                verbose=int(self.verbose or 0),
                display=display,
            )
            self._finish_fit(X, y, plan, task, names, search, run, config, summary)
        return self

    def _finish_fit(
        self,
        X: Any,
        y: Any,
        plan: EstimatorPlan,
        task: str,
        names: dict[str, str],
        search: FlowSearch,
        run: RunSettings,
        config: GridSearchConfig | SearchConfig,
        summary: Any,
    ) -> None:
        """cv_results_, best_* and best_estimator_ from the flow's run, as scikit-learn's
        search sets them."""
        error_score, refit = self.error_score, self.refit
        refit_name = (refit if isinstance(refit, str) else None) if self.multimetric_ else "score"
        self.run_dir_ = Path(summary.output_dir)
        table = pd.read_parquet(self.run_dir_ / "cv_results.parquet")
        order, candidate_params, more = self._cv_rows(table, search)
        table = table.iloc[order].reset_index(drop=True)
        # Which engine trained each candidate (the CLI's cv_results column): foldflow's own.
        more = {**more, "engine": np.array(table["engine"].astype(str).tolist(), dtype=object)}
        self.n_splits_ = run.n_splits
        out = scikit_learn_out(
            table,
            run.n_splits,
            names,
            task,
            np.nan if error_score == "raise" else error_score,
            self.multimetric_,
            bool(self.return_train_score),
        )
        # scikit-learn's own rule: a FitFailedWarning, or a ValueError when every fit failed.
        _warn_or_raise_about_fit_failures(out, error_score)
        results = self._format_results(candidate_params, run.n_splits, out, more or None)
        self._search_attributes(results, search)
        if refit or not self.multimetric_:
            self.best_index_ = int(self._select_best_index(refit, refit_name or "score", results))
            if not callable(refit):  # as scikit-learn: no best_score_ for a callable
                self.best_score_ = results[f"mean_test_{refit_name or 'score'}"][self.best_index_]
            self.best_params_ = results["params"][self.best_index_]
        if refit:
            # The flow refitted its own best; a callable `refit`, or a tie the flow broke
            # another way, chose another row: that one is refitted on its own.
            with refit_told(self, X, y):
                if not config.refit or order[self.best_index_] != summary.best_index:
                    summary = self._refit_one(config, _routed(plan, self.best_params_))
                self._load_best_estimator(Path(summary.output_dir), X, task, plan, y)
            self.refit_time_ = float(summary.refit_seconds or 0.0)
        self.scorer_ = (
            {name: scorer_of(self.scoring, name, scorer) for name, scorer in names.items()}
            if self.multimetric_
            else scorer_of(self.scoring, "score", names["score"])
        )
        self.cv_results_ = results

    def _run_settings(
        self, X: Any, y: Any, groups: Any, plan: EstimatorPlan, task: str, refit_metric: str
    ) -> RunSettings:
        return run_settings(
            X,
            y,
            task,
            self.cv,
            run_seed(self.random_state, plan.random_state),
            n_workers(self.n_jobs),
            self.engine,
            refit_metric,
            foldflow_home(),
            groups,
            bool(self.return_train_score),
        )

    def _load_best_estimator(
        self, run_dir: Path, X: Any, task: str, plan: EstimatorPlan | None = None, y: Any = None
    ) -> None:
        fitted = load_fitted(run_dir / "best_model.keras", task)
        if plan is not None and plan.transformer is not None:
            # scikit-learn's refit: the transformers on every row, then the refitted model.
            assert plan.final_step is not None
            keys = split_keys(self.best_params_, plan.final_step)[1]
            self.best_estimator_ = fitted_pipeline(
                plan.transformer, keys, plan.final_step, fitted, X, y
            )
        else:
            self.best_estimator_ = fitted
            fitted.n_features_in_ = int(np.shape(X)[1])
        if hasattr(X, "columns"):
            feature_names = np.asarray([str(c) for c in X.columns], dtype=object)
            if plan is None or plan.transformer is None:
                fitted.feature_names_in_ = feature_names
            self.feature_names_in_ = feature_names

    def _refit_one(self, config: GridSearchConfig | SearchConfig, candidate: dict[str, Any]) -> Any:
        """Refit one candidate: the grid flow on it alone, its fold fits read from the fit
        cache, then its refit on every row (in a run folder of its own)."""
        single = GridSearchConfig(
            model=config.model,
            base_params=config.base_params,
            grid=GridSpec(candidates=[candidate]),
            run=config.run.model_copy(update={"run_name": None}),
            refit=True,
        )
        return run_flow(
            quietly_imported(grid_flow), single, fail_fast=True, verbose=int(self.verbose or 0)
        )


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


def _routed(plan: EstimatorPlan, candidate: dict[str, Any]) -> dict[str, Any]:
    """A candidate as the grid flow takes it (foldflow.estimators.routed_candidate)."""
    return routed_candidate(plan, candidate)


def _kind_or_none(estimator: Any) -> str | None:
    try:
        return plan_estimator(estimator).kind
    except ConfigError:
        return None
