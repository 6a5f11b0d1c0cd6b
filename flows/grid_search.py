"""Grid-search flow: every (combination x fold) fit of a hyperparameter grid, then a refit."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.stages import (
    EarlyRefit,
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
from tasks.config import GridSearchConfig, with_overrides
from tasks.model.factory import build_model_factory
from tasks.results.aggregate import (
    SearchSummary,
    aggregate_results,
    publish_pictures,
    publish_result,
)
from tasks.results.labels import run_tags


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
    """model function -> download -> validate -> model factory -> (combination x fold) fits
    (mapped) -> aggregate -> refit the best combination on all rows -> the run's result.
    `overrides` change single fields of `config`."""
    config = with_overrides(config, overrides)
    claim_run_and_reap_dead_ones(run_tags("grid", config))
    source = load_model_source(config.model)
    prepared = prepare_data(config.run)
    combinations = build_model_factory(
        source,
        config.base_params,
        config.grid,
        prepared.meta,
        config.run.seed,
        zero_columns=tuple(prepared.dataset.impossible_zero_columns),
    )
    jobs = plan_jobs(combinations, prepared.folds, config.run.engine)
    # The refit of the best so far may start beside the last fits (EarlyRefit).
    early = EarlyRefit(prepared, source, combinations, config.run) if config.refit else None
    results = train_all(
        prepared, source, jobs, config.run, fail_fast, artifact_key="grid",
        when_a_worker_idles=early,
    )  # fmt: skip
    pictures = publish_pictures.submit(
        results, config.run.n_splits, "grid", refit_metric=prepared.refit_metric
    )  # drawn beside the aggregation and the refit
    run_dir = run_directory(config.run, "grid")
    summary = aggregate_results(
        results,
        config.run.n_splits,
        run_dir,
        "grid",
        refit_metric=prepared.refit_metric,
        train_scores=config.run.train_scores,
    )
    for line in summary.lines:
        print(line)
    best_model = None
    if early is not None:
        summary, best_model = refit_best_combination(
            prepared, source, combinations[summary.best_index], summary, config.run, run_dir,
            early=early.refit_of(summary.best_index),
        )  # fmt: skip
    pictures.wait()
    print(f"Results in {summary.output_dir}")
    # The state's message is what the run page shows; callers still get the summary.
    return Completed(message=publish_result(summary, "grid", best_model), data=summary)


if __name__ == "__main__":
    grid_search_flow()
