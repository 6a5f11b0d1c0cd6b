"""Search flow: a strategy (random, halving, TPE) proposes candidates; one evaluator fits each
candidate on every fold with the grid's stages; then aggregate, refit the best, publish."""

from __future__ import annotations

import math
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.stages import (
    PreparedData,
    claim_run_and_reap_dead_ones,
    fail_with_one_message,
    load_model_source,
    plan_jobs,
    prepare_data,
    refit_best_combination,
    run_directory,
    run_namer,
    train_all,
)
from tasks.config import GridSpec, ModelParams, SearchConfig, with_overrides
from tasks.data.dataset import load_arrays
from tasks.files import write_text_atomically
from tasks.metrics import METRICS
from tasks.model.factory import Combination, build_model_factory
from tasks.model.routing import signature_of
from tasks.model.sources import ModelSource, load_model_function
from tasks.records import FitResult
from tasks.results.aggregate import (
    SearchSummary,
    _metric_value,
    aggregate_results,
    best_row,
    cv_results_table,
    params_of,
    publish_pictures,
    publish_result,
)
from tasks.results.labels import run_tags
from tasks.results.reports import publish_search_report
from tasks.search.nested import NestedRow, nested_folds, nested_lines, write_nested_results
from tasks.search.spaces import (
    SearchSpace,
    check_space_keys,
    configured_space,
    covering_candidates,
    sample_candidates,
)
from tasks.search.strategies import (
    Evaluation,
    HalvingStrategy,
    RandomStrategy,
    SearchStrategy,
    TPEStrategy,
)


class Evaluator:
    """The strategies' `evaluate`: candidates -> combinations (checked) -> jobs -> train_all
    (cache, fan-out) -> per-candidate fold scores. Keeps every fit and every row."""

    def __init__(
        self,
        prepared: PreparedData,
        source: ModelSource,
        config: SearchConfig,
        fail_fast: bool,
    ) -> None:
        self.prepared, self.source, self.config, self.fail_fast = (
            prepared,
            source,
            config,
            fail_fast,
        )
        self.combinations: list[Combination] = []
        self.results: list[FitResult] = []
        self.evaluations: list[Evaluation] = []
        self.n_trained = 0

    def __call__(
        self,
        candidates: list[dict[str, Any]],
        *,
        numbers: list[int] | None = None,
        iteration: int = 0,
        epochs: int | None = None,
    ) -> list[Evaluation]:
        numbers = numbers if numbers is not None else list(range(len(candidates)))
        params = [c if epochs is None else {**c, "epochs": epochs} for c in candidates]
        run = self.config.run
        combinations = build_model_factory(
            self.source,
            self.config.base_params,
            GridSpec(candidates=params),
            self.prepared.meta,
            run.seed,
            zero_columns=tuple(self.prepared.dataset.impossible_zero_columns),
        )
        offset = len(self.combinations)
        jobs = [
            job.model_copy(update={"combination": offset + job.combination})
            for job in plan_jobs(combinations, self.prepared.folds, run.engine)
        ]
        results = train_all(
            self.prepared, self.source, jobs, run, self.fail_fast, artifact_key="search"
        )
        self.combinations += combinations
        self.results += results
        self.n_trained += sum(1 for r in results if not r.cached)
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

    def row_columns(self, halving: bool) -> dict[int, dict[str, Any]]:
        """cv_results columns per row: the candidate; for halving, scikit-learn's `iter`,
        `n_resources` (epochs) and `n_candidates` (candidates at that rung)."""
        per_rung = {}
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


def make_strategy(config: SearchConfig, space: SearchSpace) -> SearchStrategy:
    """The configured strategy over the space, seeded by the run's seed."""
    seed = config.run.seed
    if config.strategy == "tpe":
        return TPEStrategy(
            space,
            n_candidates=config.n_candidates,
            seed=seed,
            batch_size=config.ask_batch or 2 * config.run.workers,
        )
    candidates = sample_candidates(space, config.n_candidates, seed)
    if config.strategy == "halving":
        return HalvingStrategy(candidates, config.min_epochs, config.max_epochs, config.factor)
    return RandomStrategy(candidates)


def nested_search(
    config: SearchConfig,
    space: SearchSpace,
    source: ModelSource,
    prepared: PreparedData,
    fail_fast: bool,
) -> list[NestedRow]:
    """Per outer fold: the same search on its training rows' inner folds, its best candidate
    trained on the outer training rows and scored on the outer test rows."""
    _, labels = load_arrays(prepared.dataset)
    metric, n_inner = prepared.refit_metric, config.run.n_splits
    splits = nested_folds(
        labels, config.outer_folds, n_inner, config.run.seed, prepared.dataset.task
    )
    rows = []
    for split in splits:
        evaluator = Evaluator(
            prepared.model_copy(update={"folds": split.inner}), source, config, fail_fast
        )
        strategy = make_strategy(config, space)
        strategy.run(evaluator)
        columns = evaluator.row_columns(isinstance(strategy, HalvingStrategy))
        table = cv_results_table(evaluator.results, n_inner, metric, columns)
        best = best_row(table)
        outer = prepared.model_copy(update={"folds": [split.outer]})
        jobs = plan_jobs([evaluator.combinations[best]], [split.outer], config.run.engine)
        (fit,) = train_all(outer, source, jobs, config.run, fail_fast, artifact_key="outer")
        rows.append(
            NestedRow(
                outer_fold=split.outer.index,
                outer_score=_metric_value(fit, metric),
                inner_best_score=float(table.loc[best, "mean_test_score"]),
                inner_best_std=float(table.loc[best, "std_test_score"]),
                best_params=params_of(table, best),
            )
        )
    return rows


def default_epochs(config: SearchConfig) -> int:
    return int(config.base_params.get("epochs", ModelParams().epochs))


@flow(
    name="foldflow-search",
    flow_run_name=run_namer("search", SearchConfig),
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=2),
)
@fail_with_one_message
def search_flow(
    config: SearchConfig = SearchConfig(),
    fail_fast: bool = False,
    overrides: dict[str, Any] | None = None,
) -> SearchSummary:
    """model function -> space checked -> download -> validate -> strategy asks, the
    evaluator fits (candidate x fold, mapped) -> aggregate -> refit the best -> result."""
    config = with_overrides(config, overrides)
    claim_run_and_reap_dead_ones(run_tags("search", config))
    space = configured_space(config)
    source = load_model_source(config.model)
    check_space_keys(space, signature_of(load_model_function(source)))
    strategy = make_strategy(config, space)  # halving refuses `epochs` in the space here
    prepared = prepare_data(config.run)
    if isinstance(strategy, TPEStrategy):
        # TPE samples as it goes: every choice and bound is built once before any training.
        build_model_factory(
            source,
            config.base_params,
            GridSpec(candidates=covering_candidates(space)),
            prepared.meta,
            config.run.seed,
            zero_columns=tuple(prepared.dataset.impossible_zero_columns),
        )
    evaluator = Evaluator(prepared, source, config, fail_fast)
    strategy.run(evaluator)
    run_dir = run_directory(config.run, "search")
    halving = isinstance(strategy, HalvingStrategy)
    columns = evaluator.row_columns(halving)
    summary = aggregate_results(
        evaluator.results,
        config.run.n_splits,
        run_dir,
        "search",
        refit_metric=prepared.refit_metric,
        row_columns=columns,
        train_scores=config.run.train_scores,
    )
    pictures = publish_pictures.submit(
        evaluator.results,
        config.run.n_splits,
        "search",
        refit_metric=prepared.refit_metric,
        row_columns=columns,
    )  # drawn beside the report and the refit
    table = cv_results_table(evaluator.results, config.run.n_splits, prepared.refit_metric, columns)
    publish_search_report(
        strategy.describe(),
        space,
        table,
        config.run.n_splits,
        prepared.refit_metric,
        METRICS[prepared.refit_metric].label,
        default_epochs(config),
    )
    if config.outer_folds:
        nested = nested_search(config, space, source, prepared, fail_fast)
        write_nested_results(nested, run_dir)
        summary = summary.model_copy(
            update={"lines": [*summary.lines, *nested_lines(nested, prepared.refit_metric)]}
        )
        write_text_atomically(run_dir / "summary.txt", "\n".join(summary.lines) + "\n")
    for line in summary.lines:
        print(line)
    best_model = None
    if config.refit:
        summary, best_model = refit_best_combination(
            prepared,
            source,
            evaluator.combinations[summary.best_index],
            summary,
            config.run,
            run_dir,
        )
    pictures.wait()
    print(f"Results in {summary.output_dir}")
    return Completed(message=publish_result(summary, "search", best_model), data=summary)


if __name__ == "__main__":
    search_flow()
