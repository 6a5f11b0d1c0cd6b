"""Grid-search flow: every (combination x fold) fit of a hyperparameter grid, then a refit."""

from __future__ import annotations

import time

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.stages import (
    claim_run_and_reap_dead_ones,
    load_model_source,
    plan_jobs,
    prepare_data,
    run_directory,
    train_all,
)
from tasks.aggregate import SearchSummary, aggregate_results
from tasks.config import GridSearchConfig
from tasks.model_factory import build_model_factory
from tasks.training import refit_best


@flow(name="foldflow-grid-search", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
def grid_search_flow(
    config: GridSearchConfig = GridSearchConfig(), fail_fast: bool = False
) -> SearchSummary:
    """model function -> download -> validate -> model factory -> (combination x fold) fits
    (mapped) -> aggregate -> refit the best combination on all rows."""
    claim_run_and_reap_dead_ones()
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
    results = train_all(prepared, source, jobs, config.run, fail_fast=fail_fast)
    run_dir = run_directory(config.run, "grid")
    summary = aggregate_results(
        results, config.run.n_splits, run_dir, "grid", refit_metric=prepared.refit_metric
    )
    for line in summary.lines:
        print(line)
    if config.refit:
        best = combinations[summary.best_index]
        network = None if config.run.engine == "reference" else best.network
        started = time.perf_counter()
        refit_best(prepared.dataset, source, best.model, network, summary, config.run.seed, run_dir)
        summary = summary.model_copy(update={"refit_seconds": time.perf_counter() - started})
    print(f"Results in {summary.output_dir}")
    return summary


if __name__ == "__main__":
    grid_search_flow()
