"""`foldflow.HalvingGridSearchCV` and `HalvingRandomSearchCV`: scikit-learn's successive
halving over epochs, every rung run by the search flow's halving strategy (every fold kept,
survivors trained on from their checkpoints), through the one `fit` of foldflow.search.

The schedule (epochs and candidates of every iteration) is tasks.search.halving's, the same
the flow's strategy runs: `n_resources_` and `n_candidates_` are read from it, not from the
flow's rows.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn import model_selection
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.model_selection import ParameterGrid

from foldflow.estimators import EstimatorPlan, routed_grid_key
from foldflow.pipelines import is_pipeline
from foldflow.results import SCORERS, metric_of, scorer_names
from foldflow.search import FlowSearch, _FlowSearch, search_flow
from tasks.config import SearchConfig
from tasks.errors import ConfigError
from tasks.model.routing import TRANSFORMER_KEY
from tasks.records import plain_value
from tasks.search.halving import ScikitLearnHalving, n_survivors, scikit_learn_halving
from tasks.search.spaces import space_from_mapping

HALVING_RESOURCE = "epochs"


class _FlowHalvingSearch(_FlowSearch):
    """scikit-learn's successive halving with every rung run by foldflow's search flow
    (strategy "halving"): the resource is epochs, every fold is kept at every rung, and the
    survivors continue from their checkpoints. The schedule (n_resources_, n_candidates_,
    n_iterations_) is scikit-learn's: the flow's last rung is scikit-learn's last iteration."""

    def _scorer_names(self, plan: EstimatorPlan, task: str) -> dict[str, str]:
        """Refuse what foldflow's halving does not do, before any data is stored or fitted;
        the one scikit-learn scorer the rungs rank by."""
        if self.resource != self._resource_key():
            raise ConfigError(
                f"resource={self.resource!r}: foldflow halves over epochs (every fold keeps all "
                "its rows and the survivors train on from their checkpoints); use "
                f"resource={self._resource_key()!r}, or scikit-learn's halving search for "
                "n_samples"
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
        if metric_of(task, names["score"])[1] < 0:
            raise ConfigError(
                f"scoring={names['score']!r}: foldflow's halving keeps the candidates with the "
                "highest value of its metric, so it cannot rank by a loss; choose "
                + ", ".join(n for n, (_, sign) in SCORERS[task].items() if sign > 0)
            )
        if not (isinstance(self.factor, int | np.integer) and self.factor >= 2):
            raise ConfigError(f"factor={self.factor!r}: foldflow's halving needs an int >= 2")
        return names

    def _resource_key(self) -> str:
        """Epochs as the user names them: a Pipeline's as its Keras step's (`clf__epochs`)."""
        if is_pipeline(self.estimator):
            return f"{self.estimator.steps[-1][0]}__{HALVING_RESOURCE}"
        return HALVING_RESOURCE

    def _flow_key(self, key: str) -> str:
        """A search key as the search flow's space names it: a Pipeline's Keras-step keys
        as the bare wrapper's, its transformer steps' as `transformer__<key>` (set on a
        clone of the transformers shipped with every fit: tasks.data.user_transformer)."""
        if is_pipeline(self.estimator):
            final = self.estimator.steps[-1][0]
            if key.startswith(f"{final}__"):
                return routed_grid_key(key.removeprefix(f"{final}__"))
            return f"{TRANSFORMER_KEY}__{key}"
        return routed_grid_key(key)

    def _max_resources(self, plan: EstimatorPlan) -> int:
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

    def _schedule(self, n_candidates: int | None, plan: EstimatorPlan) -> ScikitLearnHalving:
        """scikit-learn's schedule for this search's resources (tasks.search.halving)."""
        min_resources = self.min_resources
        if min_resources not in ("smallest", "exhaust"):
            min_resources = _positive_int("min_resources", min_resources)
        return scikit_learn_halving(
            n_candidates,
            min_resources,
            self._max_resources(plan),
            int(self.factor),
            bool(self.aggressive_elimination),
        )

    def _space(self) -> tuple[dict[str, Any], int | None]:
        """The flow's search space (routed key -> choices or a distribution) and how many
        candidates to draw (None: n_candidates='exhaust')."""
        raise NotImplementedError

    def _plan_search(self, plan: EstimatorPlan, task: str) -> FlowSearch:
        """The search flow's halving strategy from the first iteration's epochs to the
        last's, on as many candidates as the space holds (at most the schedule's)."""
        space, n_draw = self._space()
        if HALVING_RESOURCE in space:
            raise ConfigError(
                f"Cannot use parameter {HALVING_RESOURCE} as the resource since it is part of "
                "the searched parameters"
            )
        schedule = self._schedule(n_draw, plan)
        n_candidates = int(min(space_size(space), schedule.n_candidates))
        if n_candidates != schedule.n_candidates:  # fewer distinct candidates than asked
            schedule = self._schedule(n_candidates, plan)
        base_params = {k: v for k, v in plan.base_params.items() if k != HALVING_RESOURCE}
        return FlowSearch(
            flow=search_flow,
            config_class=SearchConfig,
            fields={
                "strategy": "halving",
                "space": space,
                "n_candidates": n_candidates,
                "min_epochs": schedule.resources[0],
                "max_epochs": schedule.resources[-1],
                "factor": int(self.factor),
                "base_params": base_params,
                "refit": bool(self.refit),
            },
            halving=schedule,
        )

    def _cv_rows(
        self, table: pd.DataFrame, search: FlowSearch
    ) -> tuple[list[int], list[dict[str, Any]], dict[str, list]]:
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
                self.resource: int(table.loc[r, "n_resources"]),
            }
            for r in order
        ]
        more = {
            "iter": [int(table.loc[r, "iter"]) for r in order],
            "n_resources": [int(table.loc[r, "n_resources"]) for r in order],
        }
        return order, candidate_params, more

    def _search_attributes(self, results: dict[str, Any], search: FlowSearch) -> None:
        """scikit-learn's halving attributes, from the schedule the flow ran."""
        schedule = search.halving
        assert schedule is not None
        for key in ("iter", "n_resources"):
            results[key] = np.asarray(results[key])
        self.n_resources_ = schedule.resources
        self.n_candidates_ = [rung.n_candidates for rung in schedule.rungs]
        self.n_iterations_ = len(schedule.rungs)
        self.n_required_iterations_ = schedule.n_required
        self.n_possible_iterations_ = schedule.n_possible
        self.n_remaining_candidates_ = n_survivors(self.n_candidates_[-1], int(self.factor))
        self.min_resources_ = schedule.min_resources
        self.max_resources_ = schedule.max_resources

    def _flow_candidates(self, table: pd.DataFrame, first: list[int]) -> dict[int, Any]:
        """Flow candidate number -> (its place in scikit-learn's first iteration, its params
        in the user's keys without the resource)."""
        raise NotImplementedError


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
    choices = [plain_value(v) for v in values]
    if not choices:
        raise ConfigError(f"{name}[{key!r}] is empty")
    return choices


def space_size(space: dict[str, Any]) -> float:
    """Distinct candidates of a flow space (inf with a continuous distribution)."""
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


def _params_key(params: dict[str, Any], flow_key: Any) -> str:
    """A candidate's routed params as comparable text (tuples and lists alike)."""
    routed = {flow_key(key): plain_value(value) for key, value in params.items()}
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
        space = {self._flow_key(k): _choices("param_grid", v, k) for k, v in grid.items()}
        return space, len(ParameterGrid(grid))

    def _flow_candidates(self, table: pd.DataFrame, first: list[int]) -> dict[int, Any]:
        grid = list(ParameterGrid(_one_mapping("param_grid", self.param_grid)))
        place = {_params_key(params, self._flow_key): index for index, params in enumerate(grid)}
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
        space = {self._flow_key(k): _flow_dimension(name, k, v) for k, v in mapping.items()}
        if self.n_candidates == "exhaust":
            if self.min_resources == "exhaust":
                raise ConfigError("n_candidates and min_resources cannot be both 'exhaust'")
            return space, None
        return space, _positive_int("n_candidates", self.n_candidates)

    def _flow_candidates(self, table: pd.DataFrame, first: list[int]) -> dict[int, Any]:
        """The flow's own draws (ParameterSampler with the run's seed), in its order."""
        mapping = _one_mapping("param_distributions", self.param_distributions)
        user_key = {self._flow_key(key): key for key in mapping}
        candidates = {}
        for row in first:
            params = json.loads(table.loc[row, "params"])
            params.pop(HALVING_RESOURCE, None)
            number = int(table.loc[row, "candidate"])
            candidates[number] = (number, {user_key.get(k, k): v for k, v in params.items()})
        return candidates
