"""Wiring shared by both flows: prepare the data, fan the fits out, gather the records."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from flows.progress import best_candidate, current_progress
from flows.progress_card import progress_card
from flows.runtime.runners import running_task_runner
from tasks.cache_home import cache_in_use, migrate_old_cache
from tasks.config import (
    CVConfig,
    GridSearchConfig,
    RunSettings,
    SearchConfig,
    foldflow_home,
    shipped_file,
    with_overrides,
)
from tasks.data.dataset import DatasetHandle, load_arrays, shipped_to_workers
from tasks.data.fetch import download_dataset
from tasks.data.folds import split_folds
from tasks.data.schema import save_input_schema
from tasks.data.stacked import keeping_last_stack
from tasks.data.validate import validate_dataset
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError, FoldflowError
from tasks.files import writes_beside
from tasks.memory import default_fit_memory, set_build_bound
from tasks.messages import escape_controls, os_error_text
from tasks.metrics import (
    BASELINE_KIND,
    ScorerSpec,
    baseline_scores,
    refit_metric_for,
    scorers_fingerprint,
    scorers_for,
    with_user_labels,
)
from tasks.model.allowed import allowed_model_folders, allowed_model_reference
from tasks.model.factory import Combination
from tasks.model.sources import ModelSource, resolve_model_reference
from tasks.native_stderr import tensorflow_start_up_lines_held_back
from tasks.records import FitJob, FitResult, Fold
from tasks.results.aggregate import SearchSummary
from tasks.results.labels import run_title, safe_title
from tasks.results.run_folder import (
    claim_run_folder,
    release_unwritten_run_folders,
    reserve_run_destination,
    run_folder_path,
)
from tasks.train.checkpoints import CheckpointStore
from tasks.train.dispatch import dataset_meta, prepare_programs, train_fold
from tasks.train.fast.planning import plan_groups
from tasks.train.fingerprint import code_fingerprint
from tasks.train.fit_cache import load_fit, store_fit
from tasks.train.fit_workers import (
    FitGuards,
    on_reference_engine,
    reference_groups,
    warm_fit_workers,
)
from tasks.train.naming import describe_jobs
from tasks.train.refit import RefitModel, refit_best, save_refit
from tasks.train.reuse import (
    failed_results,
    job_id,
    keeps_checkpoint,
    plan_reuse,
    reuse_lines,
)
from tasks.train.xla_cache import enable as enable_xla_cache


class PreparedData(BaseModel):
    spec: DatasetSpec
    dataset: DatasetHandle
    folds: list[Fold]
    refit_metric: str
    meta: dict  # what the model function may ask for (n_features_in_, n_classes_, task, ...)
    scorers: list[ScorerSpec] = []  # scikit-learn scorers beyond the task's own metrics
    baseline: dict[str, float] = {}  # every metric of a model that learned nothing (mean)
    baseline_kind: str = ""  # what that model predicts: "majority class", ...


@task(name="load_model_function")
def load_model_source(reference: str) -> ModelSource:
    """Read the model function's code once (a relative path is taken from the working folder,
    where deployments run, else from the files foldflow ships; the CLI passes absolute
    paths). It travels with every job. Under `foldflow server` it must come from a folder
    the server allows, checked before it is read or imported (tasks/model/allowed.py)."""
    base_dir = model_base_dir(reference.rpartition(":")[0])
    reference = allowed_model_reference(reference, base_dir, allowed_model_folders())
    return resolve_model_reference(reference, base_dir)


def model_base_dir(location: str) -> Path:
    """The folder a relative model file is found from: the working folder if it holds it,
    else the checkout or the wheel that ships it (models/tutorial.py)."""
    relative = Path(location)
    if not location or relative.is_absolute():
        return foldflow_home()
    return shipped_file(relative).parents[len(relative.parts) - 1]


def plan_jobs(combinations: list[Combination], folds: list[Fold], engine: str) -> list[FitJob]:
    """One job per (combination, fold), each on the engine inspection chose unless the run
    asks for one: `reference` trains everything with Keras; `fast` refuses what it cannot
    train exactly."""
    if engine == "fast":
        refused = [c for c in combinations if c.network is None]
        if refused:
            raise ConfigError(
                f"engine 'fast' cannot train {len(refused)} combination(s), e.g. "
                f"{refused[0].routed or 'the model'}: {refused[0].reason}; "
                "use engine 'auto' or 'reference'"
            )
    return [
        FitJob(
            combination=index,
            params=combination.routed,
            model=combination.model,
            fold=fold.index,
            network=None if engine == "reference" else combination.network,
            vectorized="" if engine == "reference" else combination.vectorized,
        )
        for index, combination in enumerate(combinations)
        for fold in folds
    ]


def prepare_data(run: RunSettings) -> PreparedData:
    """download -> validate -> explicit folds (stratified for classes); bad data stops the
    flow here, and a refit metric the task does not have or a run folder already taken stops
    it before the download (a named one is claimed here, before any training)."""
    reserve_run_destination(run)
    # The checks before training build the model function here: bounded too (tasks.memory).
    set_build_bound(run.max_memory_bytes or default_fit_memory(run.workers))
    if run.engine == "reference" and run.runner == "threads":
        # Every fit will run in a fit worker: they import TensorFlow while the data is read.
        warm_fit_workers(run.workers, run.workers)
    spec = run.dataset_spec_model()
    scorers = scorers_for(spec.task, run.scoring, run.refit_metric)
    refit_metric = refit_metric_for(spec.task, run.refit_metric, scorers)
    dataset = download_dataset(
        spec,
        run.cache_folder(),
        source=run.source,
        allow_insecure_http=run.allow_insecure_http,
    )
    validate_dataset(dataset, spec, run.n_splits)
    folds = split_folds(dataset, run.n_splits, run.seed, run.splits, run.splits_file, run.n_repeats)
    labels = load_arrays(dataset)[1]
    meta = dataset_meta(dataset)
    scorers = with_user_labels(scorers, meta.get("classes_"))
    return PreparedData(
        scorers=scorers,
        baseline=baseline_scores(spec.task, labels, folds, scorers),
        baseline_kind=BASELINE_KIND[spec.task],
        spec=spec,
        dataset=dataset,
        folds=folds,
        refit_metric=refit_metric,
        meta=meta,
    )


def load_tensorflow() -> None:
    """Keras and TensorFlow imported without TensorFlow's start-up lines on stderr, then the
    compiled-program cache enabled (tasks.train.xla_cache: before this process's first
    TensorFlow op). The flows import without them (`prefect deploy`, a Dask scheduler): a
    flow run loads them as it starts, before its steps (the model's checks, the fits)."""
    if "tensorflow" not in sys.modules or "keras" not in sys.modules:
        with tensorflow_start_up_lines_held_back():
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    enable_xla_cache()


def fail_with_one_message(flow_function):
    """A FoldflowError (bad config, data or model arguments) or an OSError (a read-only or full
    disk) ends the run Failed with its one message, the exception kept for callers, instead of
    the flow and engine tracebacks. TensorFlow loads as the run starts (load_tensorflow)."""

    @functools.wraps(flow_function)
    def run(*args, **kwargs):
        load_tensorflow()
        try:
            try:
                config = args[0] if args else kwargs.get("config")
                with cache_held(config, kwargs.get("overrides")):
                    return flow_function(*args, **kwargs)
            finally:
                release_unwritten_run_folders()  # a refused run leaves no empty folder behind
        except FoldflowError as error:
            message = escape_controls(f"{type(error).__name__}: {error}")
            get_run_logger().error(message)
            return Failed(message=message, data=error)
        except OSError as error:  # a read-only or full disk: the file and folder, no traceback
            message = escape_controls(f"{type(error).__name__}: {os_error_text(error)}")
            get_run_logger().error(message)
            return Failed(message=message, data=error)

    return run


@contextlib.contextmanager
def cache_held(config: Any, overrides: dict[str, Any] | None) -> Iterator[None]:
    """The run's cache locked for its use (`foldflow cache clear` waits), after moving an old
    data/cache/ into the cache home once. A config that does not validate holds nothing: the
    flow fails at its first step with the config's own message."""
    try:
        run = with_overrides(config, overrides).run
    except Exception:
        yield
        return
    if run.cache_dir is None and (moved := migrate_old_cache()):
        get_run_logger().warning(moved)
    with cache_in_use(run.cache_folder()):
        yield


def run_namer(kind: str, config_class: type[CVConfig | GridSearchConfig | SearchConfig]):
    """Prefect's `flow_run_name` callable: the run is named for what it does (run_title),
    whether the CLI or a worker starts it. A config that does not validate names the run by
    its kind only; the run then fails at its first step with the config's own message.
    (Every flow's config is imported here: `fail_with_one_message` makes this module's
    globals the ones the flows' annotations resolve in.)"""

    def name() -> str:
        parameters = flow_run.parameters
        try:
            config = config_class.model_validate(parameters.get("config") or {})
            return run_title(kind, with_overrides(config, parameters.get("overrides")))
        except Exception:
            return kind

    return name


def run_directory(run: RunSettings, flow_kind: str) -> Path:
    """A fresh folder per run, named so it cannot escape the output folder, created for this
    run alone: one that already holds a run is refused, or cleared first with `overwrite`."""
    title = (flow_run.get_name() or "local").removeprefix(f"{flow_kind}-")
    name = run.run_name or safe_title(f"{flow_kind}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{title}")
    return claim_run_folder(run_folder_path(run.resolve(run.output_dir), name), run.overwrite)


def train_all(
    prepared: PreparedData,
    source: ModelSource,
    jobs: list[FitJob],
    run: RunSettings,
    fail_fast: bool = False,
    artifact_key: str = "fits",
    when_a_worker_idles: Callable[[list[FitResult]], None] | None = None,
) -> list[FitResult]:
    """Reuse every cached fit, fan the others out as mapped task runs, and collect one record
    per (combination, fold), in job order.

    The fit cache (tasks.train.fit_cache) is per fit and read and written here, in the flow
    process: a resume with other `--workers` or another grouping reuses what is done.
    So are checkpoints (tasks.train.checkpoints): a fit whose trajectory was trained for fewer
    epochs before (this run or an earlier one) continues from the longest such state.
    A group that fails for good is recorded as failed fits (scored NaN, like scikit-learn's
    `error_score`) unless `fail_fast` asks for the whole run to stop.
    `when_a_worker_idles` hears the records so far each time a group ends and no group is
    left to start, or a lone worker's last group has started (an early refit: EarlyRefit;
    refit_may_start).
    """
    logger = get_run_logger()
    if len(jobs) > run.warn_above_fits:
        logger.warning(
            "this run trains %d fits (more than warn_above_fits=%d): check the grid's size",
            len(jobs),
            run.warn_above_fits,
        )
    cache_dir = run.cache_folder()
    checkpoints = CheckpointStore(cache_dir)
    # A fresh run continues only from states it kept itself (its own halving rungs).
    this_run = str(flow_run.get_id() or "")
    only_from = this_run if run.fresh else None
    plan = plan_reuse(
        jobs, prepared.folds, prepared.dataset, source, run.seed,
        code_fingerprint() + scorers_fingerprint(prepared.scorers),
        cached_fit=None
        if run.fresh
        else functools.partial(load_fit, cache_dir, required=[s.name for s in prepared.scorers]),
        checkpoint_before=lambda trajectory, epochs: checkpoints.latest_before(
            trajectory, epochs, only_from
        ),
    )  # fmt: skip
    for line in reuse_lines(plan):
        logger.info(line)
    results = dict(plan.cached)
    watcher = current_progress()  # the terminal's or the notebook's bar, if any
    if watcher is not None:
        watcher.planned(len(jobs), len(plan.cached), prepared.refit_metric)
        if plan.cached:  # the best among cached fits, before any training
            n_folds, metric = len(prepared.folds), prepared.refit_metric
            watcher.fits_ended(0, best_candidate(results.values(), jobs, n_folds, metric))
    # One card per run and key, however many calls (rungs, batches): flows.progress_card.
    card = progress_card(f"{artifact_key}-progress", len(jobs), len(results))
    with writes_beside() as write:
        for group, fitted, groups_left in fan_out(prepared, source, plan.to_train, run, fail_fast):
            for job, result in zip(group, fitted, strict=True):
                write(store_fit, cache_dir, plan.keys[job_id(job)], result)
                if keeps_checkpoint(job, result):
                    write(
                        checkpoints.put, plan.trajectories[job_id(job)], result.checkpoint, this_run
                    )
                results[job_id(job)] = result.model_copy(update={"checkpoint": None})
            card.update(len(results))
            logger.info("fits done: %d/%d", len(results), len(jobs))
            if watcher is not None:
                best = best_candidate(
                    results.values(), jobs, len(prepared.folds), prepared.refit_metric
                )
                watcher.fits_ended(len(group), best)
            if when_a_worker_idles is not None and refit_may_start(groups_left, run.workers):
                when_a_worker_idles(list(results.values()))
    return [results[job_id(job)] for job in jobs]


def refit_may_start(groups_left: int, workers: int) -> bool:
    """Whether an early refit may start now: a worker has no group left to take, or a lone
    worker runs the last one (it never idles before the end; the refit then runs beside it,
    in the flow's own threads)."""
    return groups_left < max(2, workers)


def fan_out(
    prepared: PreparedData,
    source: ModelSource,
    jobs: list[FitJob],
    run: RunSettings,
    fail_fast: bool,
) -> Iterator[tuple[list[FitJob], list[FitResult], int]]:
    """The jobs in groups (plan_groups) as mapped task runs on the run's own runner (threads,
    processes or Dask, so a deployment can choose it too): each group's records as it ends,
    with how many groups are still running or waiting. A group that fails for good gives
    failed records, or stops the run with `fail_fast`."""
    train_rows = max((len(fold.train) for fold in prepared.folds), default=1)
    # The reference engine's fits, one Keras fit each, go a few dozen to a task run
    # (tasks.train.fit_workers: guarded worker processes, recycled).
    groups = reference_groups(plan_groups(jobs, run.workers, train_rows), run.workers)
    # Threads: Prefect would walk every value inside these (every fold's row numbers, every
    # job's fields) at each task run's start, looking for futures none of them holds (~0.7 s
    # a task run here); quoted, it does not. Not on Dask, whose workers got the quote as a
    # plain tuple.
    quoted = quote if run.runner == "threads" else _as_is
    parameters = {
        # By value: a worker needs none of this process's files (data, cache, run folder).
        "dataset": quoted(unmapped(shipped_to_workers(prepared.dataset))),
        "folds": quoted(unmapped(prepared.folds)),
        "jobs": quoted(groups),
        "run_seed": unmapped(run.seed),
        "source": quoted(unmapped(source)),
        "label": [describe_jobs(group) for group in groups],
        "scorers": unmapped(prepared.scorers),
        "guards": unmapped(FitGuards.of_run(run, fail_fast)),
    }
    trainer = train_fold.with_options(cache_policy=NO_CACHE)
    if run.runner == "threads":
        # The task runs share this process: their programs are traced here, in order.
        prepare_programs(prepared.dataset, prepared.folds, groups, run.seed)
        # Their TensorFlow imports overlap the task runs' start.
        referenced = sum(1 for group in groups if any(on_reference_engine(j) for j in group))
        warm_fit_workers(min(run.workers, referenced), run.workers)
    if not groups:
        return
    # Groups one after another (one worker) train on one stacked matrix too (threads).
    with (
        keeping_last_stack(),
        running_task_runner(run.runner, run.workers, run.dask_address) as runner,
    ):
        futures = runner.map(trainer, parameters=parameters)
        group_of = {
            future.task_run_id: group for future, group in zip(futures, groups, strict=True)
        }
        for finished, future in enumerate(as_completed(futures), start=1):
            group = group_of[future.task_run_id]
            try:
                fitted = future.result()
            except Exception as error:
                if fail_fast:
                    raise
                get_run_logger().error("fits failed for good (%s): %s", describe_jobs(group), error)
                fitted = failed_results(group, prepared.folds, error)
            yield group, fitted, len(groups) - finished


def _as_is(value: Any) -> Any:
    return value


def as_given(value: Any) -> Any:
    """A large value (every fit's record) for a task run on the flow's own threads, which gets
    it as it is: unquoted, Prefect walks every field of every record looking for futures, and
    hashes them for the cache key, at each task run's start (0.2-0.3 s a task run at 360
    records, on the path from the last fit to the pictures)."""
    return quote(value)


def refit_network(combination: Combination, run: RunSettings):
    """The engine a refit runs on: the one its fits ran on."""
    return None if run.engine == "reference" else combination.network


def refit_vectorized(combination: Combination, run: RunSettings) -> str:
    """The vectorized path's program key when the combination's fits ran there, else ""."""
    return "" if run.engine == "reference" else combination.vectorized


def refit_best_combination(
    prepared: PreparedData,
    source: ModelSource,
    best: Combination,
    summary: SearchSummary,
    run: RunSettings,
    run_dir: Path,
    early: RefitModel | None = None,
) -> tuple[SearchSummary, Any]:
    """The best combination trained on every row, as scikit-learn's `refit=True` does, on the
    engine its fits ran on (or `early`, that refit made already); the summary gains the
    refit's time."""
    refit = early or refit_best(
        prepared.dataset, source, best.model, refit_network(best, run), run.seed,
        refit_vectorized(best, run),
    )  # fmt: skip
    started = time.perf_counter()
    best_model = save_refit(refit, summary, run_dir)
    # What raw rows must look like for it (foldflow predict, foldflow.load_model).
    save_input_schema(run_dir, prepared.dataset, prepared.spec)
    seconds = refit.seconds + time.perf_counter() - started
    return summary.model_copy(update={"refit_seconds": seconds}), best_model
