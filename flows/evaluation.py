"""The one evaluation path of the grid and search flows, as scikit-learn's
`evaluate_candidates`: a strategy (tasks.search.strategies: grid, random, halving, TPE) asks
for candidates; the evaluator routes and checks them, fits each on every fold (train_all:
cache, checkpoints, fan-out) and answers with their fold scores."""

from __future__ import annotations

import math
from typing import Any

from prefect import get_run_logger

from flows.progress import current_progress
from flows.stages import (
    PreparedData,
    load_model_source,
    load_tensorflow,
    plan_jobs,
    refit_network,
    refit_vectorized,
    train_all,
)
from tasks.config import GridSearchConfig, GridSpec, ModelParams, RunSettings
from tasks.data.dataset import DatasetHandle, load_arrays
from tasks.data.fetch import download_dataset
from tasks.data.folds import split_folds
from tasks.data.user_transformer import common_widths, raw_rows
from tasks.model.factory import Combination, build_model_factory, route_combinations
from tasks.model.sources import ModelSource
from tasks.records import FitResult, Fold
from tasks.results.aggregate import _metric_value, best_so_far
from tasks.search.strategies import Evaluation
from tasks.train.dispatch import user_data_key
from tasks.train.refit import RefitModel, refit_best


def transformer_widths(
    prepared: PreparedData, source: ModelSource, base: dict[str, Any], grid: GridSpec | None
) -> dict[str, int]:
    """A Python Pipeline's transformers' output widths common to every fold, so that its Keras
    step is planned once and trains on the fast engine (empty without a Pipeline). The fits
    it makes stay for the task runs' views of the same data (user_data_key)."""
    models = [model for _, model in route_combinations(source, base, grid)]
    return _common_widths(models, prepared.dataset, prepared.folds)


def _common_widths(models: list[ModelParams], dataset: DatasetHandle, folds: list[Fold]):
    if all(model.transformer is None for model in models):
        return {}
    features, labels = load_arrays(dataset)
    rows = raw_rows(features, dataset.feature_columns, dataset.categories)
    return common_widths(models, rows, labels, folds, user_data_key(dataset))


def warm_transformer_fits(config: GridSearchConfig) -> None:
    """A Python Pipeline's transformers fitted on every fold's training rows before the grid
    flow runs, as its width check (transformer_widths) will ask for them, by the same steps
    (the model function, the data, the folds): foldflow's searches call it while the embedded
    API comes up, and the flow finds the fits made (tasks.data.user_transformer keeps them).
    A head start only: whatever fails here, the flow does again and reports. TensorFlow loads
    here too (load_tensorflow): the flows import without it, and the model's file may use it."""
    run = config.run
    try:
        load_tensorflow()
        source = load_model_source.fn(config.model)
        grid = GridSpec(candidates=config.grid.expand())  # what GridStrategy asks for
        models = [model for _, model in route_combinations(source, config.base_params, grid)]
        if all(model.transformer is None for model in models):
            return
        spec = run.dataset_spec_model()
        dataset = download_dataset.fn(
            spec, run.cache_folder(), source=run.source,
            allow_insecure_http=run.allow_insecure_http,
        )  # fmt: skip
        folds = split_folds.fn(
            dataset, run.n_splits, run.seed, run.splits, run.splits_file, run.n_repeats
        )
        _common_widths(models, dataset, folds)
    except Exception:  # noqa: BLE001 (the flow runs the same steps and reports their errors)
        return


class Evaluator:
    """The strategies' `evaluate`: candidates -> combinations (checked) -> jobs -> train_all
    (cache, fan-out) -> per-candidate fold scores. Keeps every fit and every row.

    `artifact_key` names the progress artifact; `refit_early` starts the refit of the best so
    far beside the last fits (EarlyRefit, below: the grid flow's)."""

    def __init__(
        self,
        prepared: PreparedData,
        source: ModelSource,
        base_params: dict[str, Any],
        run: RunSettings,
        fail_fast: bool,
        artifact_key: str = "search",
        refit_early: bool = False,
    ) -> None:
        self.prepared, self.source, self.base_params, self.run = prepared, source, base_params, run
        self.fail_fast, self.artifact_key = fail_fast, artifact_key
        self.combinations: list[Combination] = []
        self.early = EarlyRefit(prepared, source, self.combinations, run) if refit_early else None
        self.results: list[FitResult] = []
        self.evaluations: list[Evaluation] = []

    def __call__(
        self,
        candidates: list[dict[str, Any]],
        *,
        numbers: list[int] | None = None,
        iteration: int = 0,
        epochs: int | None = None,
    ) -> list[Evaluation]:
        numbers = numbers if numbers is not None else list(range(len(candidates)))
        if (watcher := current_progress()) is not None:  # halving's rung, TPE's trials
            watcher.candidates_asked(numbers, iteration, epochs)
        params = [c if epochs is None else {**c, "epochs": epochs} for c in candidates]
        grid = GridSpec(candidates=params)
        combinations = build_model_factory(
            self.source,
            self.base_params,
            grid,
            self.prepared.meta,
            self.run.seed,
            zero_columns=tuple(self.prepared.dataset.impossible_zero_columns),
            transformer_widths=transformer_widths(
                self.prepared, self.source, self.base_params, grid
            ),
        )
        offset = len(self.combinations)
        # Known before training: the early refit picks from this very list.
        self.combinations += combinations
        jobs = [
            job.model_copy(update={"combination": offset + job.combination})
            for job in plan_jobs(combinations, self.prepared.folds, self.run.engine)
        ]
        results = train_all(
            self.prepared,
            self.source,
            jobs,
            self.run,
            self.fail_fast,
            artifact_key=self.artifact_key,
            when_a_worker_idles=self.early,
        )
        self.results += results
        metric = self.prepared.refit_metric
        for index, (number, candidate) in enumerate(zip(numbers, params, strict=True)):
            row = offset + index
            fits = sorted((r for r in results if r.combination == row), key=lambda r: r.fold)
            self.evaluations.append(
                Evaluation(
                    row=row,
                    candidate=number,
                    params=candidate,
                    fold_scores=tuple(_metric_value(fit, metric) for fit in fits),
                    iteration=iteration,
                    epochs=epochs,
                )
            )
        best = max((e.mean for e in self.evaluations if not math.isnan(e.mean)), default=math.nan)
        get_run_logger().info(
            "evaluated %d candidate(s)%s; best mean %s so far %.4f",
            len(candidates),
            f" at rung {iteration} ({epochs} epochs)" if epochs is not None else "",
            metric,
            best,
        )
        return list(self.evaluations)

    def early_refit_of(self, best_index: int) -> RefitModel | None:
        """The refit started beside the last fits if it is of `best_index` (else None)."""
        return None if self.early is None else self.early.refit_of(best_index)

    def row_columns(self, halving: bool) -> dict[int, dict[str, Any]]:
        """cv_results columns per row: the candidate; for halving, scikit-learn's `iter`,
        `n_resources` (epochs) and `n_candidates` (candidates at that rung)."""
        per_rung: dict[int, int] = {}
        for e in self.evaluations:
            per_rung[e.iteration] = per_rung.get(e.iteration, 0) + 1
        columns = {}
        for e in self.evaluations:
            columns[e.row] = {"candidate": e.candidate}
            if halving:
                columns[e.row].update(
                    iter=e.iteration, n_resources=e.epochs, n_candidates=per_rung[e.iteration]
                )
        return columns


class EarlyRefit:
    """The refit of the best combination so far, started once a worker has no fits left to
    take while the last ones still train, so that it runs beside them instead of after them.

    It is a bet: at most one is started before the last fits end, and it is kept only if its
    combination is still the best when every fit is done. If the last fits changed the best,
    the new best's refit starts the moment they end (beside the aggregation and the pictures,
    not after them); a refit whose combination is not the run's best is dropped unsaved. A
    refit depends only on its combination, the data and the seed, so the one kept equals the
    one the run would have made after the fits.
    """

    def __init__(
        self,
        prepared: PreparedData,
        source: ModelSource,
        combinations: list[Combination],
        run: RunSettings,
    ) -> None:
        self.prepared, self.source, self.combinations, self.run = (
            prepared, source, combinations, run,
        )  # fmt: skip
        self.combination: int | None = None  # the bet's, before the last fits ended
        self.future = None
        self.final: tuple[int, Any] | None = None  # the best's once every fit is done

    def __call__(self, results: list[FitResult]) -> None:
        if self.final is not None:
            return
        n_folds = len(self.prepared.folds)
        guess = best_so_far(results, n_folds, self.prepared.refit_metric)
        if guess is None:
            return
        if self.future is None:
            get_run_logger().info(
                "refitting combination %d, the best so far, beside the last fits", guess
            )
            self.combination, self.future = guess, self._submit(guess)
            return
        if guess != self.combination and self._every_fit_done(results, n_folds):
            get_run_logger().info(
                "the last fits made combination %d the best, not %d: refitting %d now",
                guess,
                self.combination,
                guess,
            )
            self.final = (guess, self._submit(guess))

    def _submit(self, index: int):
        combination = self.combinations[index]
        return refit_best.submit(
            self.prepared.dataset,
            self.source,
            combination.model,
            refit_network(combination, self.run),
            self.run.seed,
            refit_vectorized(combination, self.run),
        )

    def _every_fit_done(self, results: list[FitResult], n_folds: int) -> bool:
        done = {(result.combination, result.fold) for result in results}
        return len(done) >= len(self.combinations) * n_folds and all(
            (row, fold) in done for row in range(len(self.combinations)) for fold in range(n_folds)
        )

    def refit_of(self, best_index: int) -> RefitModel | None:
        """The early refit if it is of `best_index` (None: there is none, or it bet wrong)."""
        if self.future is None:
            return None
        if self.combination == best_index:
            return self.future.result()
        if self.final is not None and self.final[0] == best_index:
            return self.final[1].result()
        get_run_logger().info(
            "the best is combination %d, not %d as it was before the last fits: refitting %d",
            best_index,
            self.combination,
            best_index,
        )
        return None
