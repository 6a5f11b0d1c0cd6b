"""Search flow: a strategy (random, halving, TPE) proposes candidates; the one evaluator of
the grid and search flows (flows.evaluation) fits each on every fold; then aggregate, refit
the best, publish."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.evaluation import Evaluator
from flows.runtime.reaper import claim_run_and_reap_dead_ones
from flows.stages import (
    PreparedData,
    as_given,
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
from tasks.metrics import metric_label
from tasks.model.factory import build_model_factory
from tasks.model.routing import signature_of
from tasks.model.sources import ModelSource, load_model_function
from tasks.results.aggregate import (
    SearchSummary,
    _metric_value,
    aggregate_results,
    baseline_lines,
    best_row,
    cv_results_table,
    params_of,
    publish_pictures,
    publish_result,
    summary_text_lines,
)
from tasks.results.labels import dataset_name, run_tags
from tasks.results.overview import publish_overview
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
    HalvingStrategy,
    RandomStrategy,
    SearchStrategy,
    TPEStrategy,
)


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
        inner = prepared.model_copy(update={"folds": split.inner})
        evaluator = Evaluator(inner, source, config.base_params, config.run, fail_fast)
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
    evaluator = Evaluator(prepared, source, config.base_params, config.run, fail_fast)
    strategy.run(evaluator)
    run_dir = run_directory(config.run, "search")
    halving = isinstance(strategy, HalvingStrategy)
    columns = evaluator.row_columns(halving)
    summary = aggregate_results(
        as_given(evaluator.results),
        config.run.n_folds,
        run_dir,
        "search",
        refit_metric=prepared.refit_metric,
        row_columns=columns,
        train_scores=config.run.train_scores,
        baseline=prepared.baseline,
        baseline_kind=prepared.baseline_kind,
        positive_label=prepared.dataset.positive_label,
    )
    pictures = publish_pictures.submit(
        as_given(evaluator.results),
        config.run.n_folds,
        "search",
        refit_metric=prepared.refit_metric,
        row_columns=columns,
        baseline=prepared.baseline,
        baseline_kind=prepared.baseline_kind,
        heatmap=False,  # sampled candidates are no grid: history, importance, rungs instead
        run_dir=run_dir,
    )  # drawn beside the report and the refit
    table = cv_results_table(evaluator.results, config.run.n_folds, prepared.refit_metric, columns)
    publish_search_report(
        strategy.describe(),
        space,
        table,
        config.run.n_splits,
        prepared.refit_metric,
        metric_label(prepared.refit_metric),
        default_epochs(config),
        prepared.baseline.get(prepared.refit_metric),
        prepared.baseline_kind,
        run_dir=run_dir,
        seed=config.run.seed,
    )
    if config.outer_folds:
        nested = nested_search(config, space, source, prepared, fail_fast)
        write_nested_results(nested, run_dir)
        summary = summary.model_copy(
            update={"lines": [*summary.lines, *nested_lines(nested, prepared.refit_metric)]}
        )
        text = "\n".join(summary_text_lines(summary)) + "\n"
        write_text_atomically(run_dir / "summary.txt", text)
    for line in [*baseline_lines(summary), *summary.lines]:
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
    message = publish_result(summary, "search", best_model)
    # The result at a glance: the overview card, the score as a tag, the leaderboard.
    publish_overview(summary, "search", config.strategy, config.model, dataset_name(config))
    return Completed(message=message, data=summary)


if __name__ == "__main__":
    search_flow()
