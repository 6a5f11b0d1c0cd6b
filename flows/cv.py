"""Cross-validation flow: the tutorial's 10-fold stratified CV of one Keras model."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.stages import claim_run_and_reap_dead_ones, prepare_data, run_directory, train_all
from tasks.aggregate import SearchSummary, aggregate_results, metric_lines
from tasks.config import CVConfig
from tasks.model_factory import build_model_factory
from tasks.training import FitJob


@flow(name="foldflow-cv", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
def cv_flow(config: CVConfig = CVConfig()) -> SearchSummary:
    """download -> validate -> model factory -> one fit per fold (mapped) -> aggregate."""
    claim_run_and_reap_dead_ones()
    prepared = prepare_data(config.run)
    [(params, model)] = build_model_factory(
        config.model,
        grid=None,
        task=prepared.spec.task,
        zero_columns=tuple(prepared.dataset.impossible_zero_columns),
    )
    jobs = [
        FitJob(combination=0, params=params, model=model, fold=fold.index)
        for fold in prepared.folds
    ]
    results = train_all(prepared, jobs, config.run, fail_fast=True)
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
