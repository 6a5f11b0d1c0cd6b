"""Grid-search flow: every (combination x fold) fit of a hyperparameter grid, then a refit.

The grid is a strategy of the search flows' one evaluation path (flows.evaluation): it asks
once for every combination, as scikit-learn's `GridSearchCV._run_search` does."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.evaluation import Evaluator
from flows.runtime.reaper import claim_run_and_reap_dead_ones
from flows.stages import (
    as_given,
    fail_with_one_message,
    load_model_source,
    prepare_data,
    refit_best_combination,
    run_directory,
    run_namer,
)
from tasks.config import GridSearchConfig, with_overrides
from tasks.results.aggregate import (
    SearchSummary,
    aggregate_results,
    baseline_lines,
    publish_pictures,
    publish_result,
)
from tasks.results.labels import dataset_name, run_tags
from tasks.results.overview import publish_overview
from tasks.search.strategies import GridStrategy


@flow(
    name="foldflow-grid-search",
    flow_run_name=run_namer("grid", GridSearchConfig),
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=2),
)
@fail_with_one_message
def grid_search_flow(
    config: GridSearchConfig = GridSearchConfig(),
    fail_fast: bool = False,
    overrides: dict[str, Any] | None = None,
) -> SearchSummary:
    """model function -> download -> validate -> the grid strategy asks, the evaluator fits
    (combination x fold, mapped) -> aggregate -> refit the best combination on all rows ->
    the run's result.
    `overrides` change single fields of `config`."""
    config = with_overrides(config, overrides)
    claim_run_and_reap_dead_ones(run_tags("grid", config))
    source = load_model_source(config.model)
    prepared = prepare_data(config.run)
    # The refit of the best so far may start beside the last fits (refit_early).
    evaluator = Evaluator(
        prepared, source, config.base_params, config.run, fail_fast,
        artifact_key="grid", refit_early=config.refit,
    )  # fmt: skip
    GridStrategy(config.grid).run(evaluator)  # the whole grid at once, as GridSearchCV asks
    results = evaluator.results
    run_dir = run_directory(config.run, "grid")
    pictures = publish_pictures.submit(
        as_given(results),
        config.run.n_folds,
        "grid",
        refit_metric=prepared.refit_metric,
        baseline=prepared.baseline,
        baseline_kind=prepared.baseline_kind,
        run_dir=run_dir,
    )  # drawn beside the aggregation and the refit
    summary = aggregate_results(
        as_given(results),
        config.run.n_folds,
        run_dir,
        "grid",
        refit_metric=prepared.refit_metric,
        train_scores=config.run.train_scores,
        baseline=prepared.baseline,
        baseline_kind=prepared.baseline_kind,
        positive_label=prepared.dataset.positive_label,
    )
    for line in [*baseline_lines(summary), *summary.lines]:
        print(line)
    best_model = None
    if config.refit:
        summary, best_model = refit_best_combination(
            prepared, source, evaluator.combinations[summary.best_index], summary, config.run,
            run_dir, early=evaluator.early_refit_of(summary.best_index),
        )  # fmt: skip
    pictures.wait()
    print(f"Results in {summary.output_dir}")
    message = publish_result(summary, "grid", best_model)
    # The result at a glance: the overview card, the score as a tag, the leaderboard.
    publish_overview(summary, "grid", "grid", config.model, dataset_name(config))
    # The state's message is what the run page shows; callers still get the summary.
    return Completed(message=message, data=summary)


if __name__ == "__main__":
    grid_search_flow()
