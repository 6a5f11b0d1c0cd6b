"""Cross-validation flow: the tutorial's 10-fold stratified CV of one Keras model."""

from __future__ import annotations

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
from tasks.aggregate import SearchSummary, aggregate_results, metric_lines
from tasks.config import CVConfig
from tasks.model_factory import build_model_factory


@flow(name="foldflow-cv", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
def cv_flow(config: CVConfig = CVConfig()) -> SearchSummary:
    """model function -> download -> validate -> model factory -> one fit per fold (mapped)
    -> aggregate."""
    claim_run_and_reap_dead_ones()
    source = load_model_source(config.model)
    prepared = prepare_data(config.run)
    combinations = build_model_factory(
        source,
        config.params,
        None,
        prepared.meta,
        config.run.seed,
        zero_columns=tuple(prepared.dataset.impossible_zero_columns),
    )
    jobs = plan_jobs(combinations, prepared.folds, config.run.engine)
    results = train_all(prepared, source, jobs, config.run, fail_fast=True)
    summary = aggregate_results(
        results,
        config.run.n_splits,
        run_directory(config.run, "cv"),
        artifact_key="cv",
        refit_metric=prepared.refit_metric,
    )
    for line in metric_lines(summary):
        print(line)
    print(f"Results in {summary.output_dir}")
    return summary


if __name__ == "__main__":
    cv_flow()
