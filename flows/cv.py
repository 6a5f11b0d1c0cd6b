"""Cross-validation flow: the tutorial's 10-fold stratified CV of one Keras model."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.evaluation import transformer_widths
from flows.runtime.reaper import claim_run_and_reap_dead_ones
from flows.stages import (
    as_given,
    fail_with_one_message,
    load_model_source,
    plan_jobs,
    prepare_data,
    run_directory,
    run_namer,
    train_all,
)
from tasks.config import CVConfig, with_overrides
from tasks.model.factory import build_model_factory
from tasks.results.aggregate import (
    SearchSummary,
    aggregate_results,
    metric_lines,
    publish_pictures,
    publish_result,
)
from tasks.results.labels import dataset_name, run_tags
from tasks.results.overview import publish_overview


@flow(
    name="foldflow-cv",
    flow_run_name=run_namer("cv", CVConfig),
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=2),
)
@fail_with_one_message
def cv_flow(
    config: CVConfig = CVConfig(), overrides: dict[str, Any] | None = None
) -> SearchSummary:
    """model function -> download -> validate -> model factory -> one fit per fold (mapped)
    -> aggregate -> the run's result. `overrides` change single fields of `config`."""
    config = with_overrides(config, overrides)
    claim_run_and_reap_dead_ones(run_tags("cv", config))
    source = load_model_source(config.model)
    prepared = prepare_data(config.run)
    combinations = build_model_factory(
        source,
        config.params,
        None,
        prepared.meta,
        config.run.seed,
        zero_columns=tuple(prepared.dataset.impossible_zero_columns),
        transformer_widths=transformer_widths(prepared, source, config.params, None),
    )
    jobs = plan_jobs(combinations, prepared.folds, config.run.engine)
    results = train_all(prepared, source, jobs, config.run, fail_fast=True, artifact_key="cv")
    run_dir = run_directory(config.run, "cv")
    summary = aggregate_results(
        as_given(results),
        config.run.n_folds,
        run_dir,
        artifact_key="cv",
        refit_metric=prepared.refit_metric,
        train_scores=config.run.train_scores,
        baseline=prepared.baseline,
        baseline_kind=prepared.baseline_kind,
        positive_label=prepared.dataset.positive_label,
    )
    publish_pictures(
        as_given(results), config.run.n_folds, "cv", refit_metric=prepared.refit_metric,
        baseline=prepared.baseline, baseline_kind=prepared.baseline_kind, run_dir=run_dir,
    )  # fmt: skip
    for line in metric_lines(summary):
        print(line)
    print(f"Results in {summary.output_dir}")
    # The state's message is what the run page shows; callers still get the summary.
    message = publish_result(summary, "cv")
    # The result at a glance: the overview card, the score as a tag, the leaderboard.
    publish_overview(summary, "cv", "cv", config.model, dataset_name(config))
    return Completed(message=message, data=summary)


if __name__ == "__main__":
    cv_flow()
