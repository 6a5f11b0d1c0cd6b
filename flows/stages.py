"""Wiring shared by both flows: prepare the data, fan the fits out, gather the records."""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from prefect import get_run_logger, task, unmapped
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import BaseModel

from flows.runtime.runners import running_task_runner
from tasks.config import (
    DEFAULT_EARLY_STOPPING_VALIDATION,
    CVConfig,
    DatasetSpec,
    GridSearchConfig,
    RunSettings,
    SearchConfig,
    foldflow_home,
    shipped_file,
    with_overrides,
)
from tasks.data.dataset import DatasetHandle, shipped_to_workers
from tasks.data.fetch import download_dataset
from tasks.data.folds import split_folds
from tasks.data.validate import validate_dataset
from tasks.errors import ConfigError, FoldflowError
from tasks.files import writes_beside
from tasks.metrics import refit_metric_for
from tasks.model.factory import Combination
from tasks.model.sources import ModelSource, resolve_model_reference
from tasks.records import FitJob, FitResult, Fold
from tasks.results.aggregate import SearchSummary, best_so_far
from tasks.results.labels import run_title, safe_title
from tasks.results.run_folder import check_run_destination, claim_run_folder, run_folder_path
from tasks.train.checkpoints import CheckpointStore, epochs_to_train
from tasks.train.dispatch import dataset_meta, prepare_programs, train_fold
from tasks.train.fast.planning import plan_groups
from tasks.train.fingerprint import code_fingerprint
from tasks.train.fit_cache import fit_key, load_fit, store_fit, trajectory_key
from tasks.train.naming import describe_jobs
from tasks.train.refit import RefitModel, refit_best, save_refit


class PreparedData(BaseModel):
    spec: DatasetSpec
    dataset: DatasetHandle
    folds: list[Fold]
    refit_metric: str
    meta: dict  # what the model function may ask for (n_features_in_, n_classes_, task, ...)


@task(name="load_model_function")
def load_model_source(reference: str) -> ModelSource:
    """Read the model function's code once (a relative path is taken from the working folder,
    where deployments run, else from the files foldflow ships; the CLI passes absolute
    paths). It travels with every job."""
    return resolve_model_reference(reference, model_base_dir(reference.rpartition(":")[0]))


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
        )
        for index, combination in enumerate(combinations)
        for fold in folds
    ]


def prepare_data(run: RunSettings) -> PreparedData:
    """download -> validate -> explicit folds (stratified for classes); bad data stops the
    flow here, and a refit metric the task does not have or a run folder already taken stops
    it before the download."""
    check_run_destination(run)
    spec = run.dataset_spec_model()
    refit_metric = refit_metric_for(spec.task, run.refit_metric)
    dataset = download_dataset(
        spec,
        run.resolve(run.cache_dir),
        source=run.source,
        allow_insecure_http=run.allow_insecure_http,
    )
    validate_dataset(dataset, spec, run.n_splits)
    folds = split_folds(dataset, run.n_splits, run.seed, run.splits)
    return PreparedData(
        spec=spec,
        dataset=dataset,
        folds=folds,
        refit_metric=refit_metric,
        meta=dataset_meta(dataset),
    )


def fail_with_one_message(flow_function):
    """A FoldflowError (bad config, data or model arguments) ends the run Failed with its one
    message, the exception kept for callers, instead of the flow and engine tracebacks."""

    @functools.wraps(flow_function)
    def run(*args, **kwargs):
        try:
            return flow_function(*args, **kwargs)
        except FoldflowError as error:
            message = f"{type(error).__name__}: {error}"
            get_run_logger().error(message)
            return Failed(message=message, data=error)

    return run


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


OWNER_PID = "foldflow.pid"
OWNER_HOST = "foldflow.host"


def claim_run_and_reap_dead_ones(tags: list[str]) -> list[str]:
    """Tag this flow run for the UI, label it with its process, and mark runs whose process
    died as Crashed.

    A flow killed with SIGKILL stays RUNNING in the API forever; the next run on the same
    host notices its process is gone and says so. The process is bookkeeping: it goes in
    the run's labels, not in the tags the runs list shows.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.states import Crashed

    logger = get_run_logger()
    host = socket.gethostname()
    this_run = flow_run.get_id()
    reaped = []
    with get_client(sync_client=True) as client:
        running = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=200,
        )
        for other in running:
            pid, owner_host = other.labels.get(OWNER_PID), other.labels.get(OWNER_HOST)
            if str(other.id) == this_run or pid is None:
                continue
            if owner_host != host or psutil.pid_exists(int(pid)):
                continue
            logger.warning(
                "flow run %r (%s) was left RUNNING by process %s, which is gone: "
                "marking it Crashed. Its finished fits are reused from the result cache.",
                other.name,
                other.id,
                pid,
            )
            client.set_flow_run_state(
                other.id, Crashed(message=f"process {pid} on {host} died"), force=True
            )
            reaped.append(str(other.id))
        if this_run:
            current = client.read_flow_run(this_run)
            client.update_flow_run(this_run, tags=list(dict.fromkeys([*current.tags, *tags])))
            client.update_flow_run_labels(this_run, {OWNER_PID: str(os.getpid()), OWNER_HOST: host})
    return reaped


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
    left to start (an early refit: EarlyRefit).
    """
    logger = get_run_logger()
    if len(jobs) > run.warn_above_fits:
        logger.warning(
            "this run trains %d fits (more than warn_above_fits=%d): check the grid's size",
            len(jobs),
            run.warn_above_fits,
        )
    cache_dir = run.resolve(run.cache_dir)
    code_version = code_fingerprint()
    folds = {fold.index: fold for fold in prepared.folds}
    keys = {
        _job_id(job): fit_key(
            job, folds[job.fold], prepared.dataset, source, run.seed, code_version
        )
        for job in jobs
    }
    results: dict[tuple[int, int], FitResult] = {}
    if not run.fresh:
        for job in jobs:
            cached = load_fit(cache_dir, keys[_job_id(job)], job)
            if cached is not None:
                results[_job_id(job)] = cached
    to_train = [job for job in jobs if _job_id(job) not in results]
    if results:
        logger.info("reusing %d cached fit(s); training %d", len(results), len(to_train))
    checkpoints = CheckpointStore(cache_dir)
    trajectories = {
        _job_id(job): trajectory_key(
            job, folds[job.fold], prepared.dataset, source, run.seed, code_version
        )
        for job in to_train
    }
    # A fresh run continues only from states it kept itself (its own halving rungs).
    this_run = str(flow_run.get_id() or "")
    only_from = this_run if run.fresh else None
    to_train = [
        job.model_copy(
            update={
                "start": checkpoints.latest_before(
                    trajectories[_job_id(job)], job.model.epochs, only_from
                )
            }
        )
        # Early stopping's own state (patience, best weights) is not in a checkpoint.
        if not job.model.early_stopping
        else job
        for job in to_train
    ]
    stopping = [job for job in to_train if job.model.early_stopping]
    if stopping:
        logger.info(
            "early stopping in %d fit(s): validation part %s of each fold's training rows "
            "(fit__validation_split; %.2f when early stopping asks for one and none is given)",
            len(stopping),
            "/".join(sorted({f"{job.model.validation_split:g}" for job in stopping})),
            DEFAULT_EARLY_STOPPING_VALIDATION,
        )
    continued = [job for job in to_train if job.start is not None]
    if continued:
        logger.info(
            "continuing %d fit(s) from checkpoints: training %d epochs instead of %d",
            len(continued),
            epochs_to_train(to_train),
            epochs_to_train([job.model_copy(update={"start": None}) for job in to_train]),
        )
    progress_id = create_progress_artifact(
        progress=100.0 * len(results) / len(jobs),
        key=f"{artifact_key}-progress",
        description=f"{len(jobs)} fits",
    )
    train_rows = max((len(fold.train) for fold in prepared.folds), default=1)
    groups = plan_groups(to_train, run.workers, train_rows)
    parameters = {
        # By value: a worker needs none of this process's files (data, cache, run folder).
        "dataset": unmapped(shipped_to_workers(prepared.dataset)),
        "folds": unmapped(prepared.folds),
        "jobs": groups,
        "run_seed": unmapped(run.seed),
        "source": unmapped(source),
        "label": [describe_jobs(group) for group in groups],
    }
    trainer = train_fold.with_options(cache_policy=NO_CACHE)
    if run.runner == "threads":
        # The task runs share this process: their programs are traced here, in order.
        prepare_programs(prepared.dataset, prepared.folds, groups, run.seed)
    done = len(results)
    if groups:
        # The run's own runner (threads, processes or Dask), so a deployment can choose it too.
        with (
            running_task_runner(run.runner, run.workers, run.dask_address) as runner,
            writes_beside() as write,
        ):
            futures = runner.map(trainer, parameters=parameters)
            group_of = {
                future.task_run_id: group for future, group in zip(futures, groups, strict=True)
            }
            finished = 0
            for future in as_completed(futures):
                group = group_of[future.task_run_id]
                try:
                    fitted = future.result()
                except Exception as error:
                    if fail_fast:
                        raise
                    logger.error("fits failed for good (%s): %s", describe_jobs(group), error)
                    fitted = failed_results(group, prepared.folds, error)
                for job, result in zip(group, fitted, strict=True):
                    job_id = _job_id(job)
                    write(store_fit, cache_dir, keys[job_id], result)
                    if result.checkpoint is not None and not job.model.early_stopping:
                        write(checkpoints.put, trajectories[job_id], result.checkpoint, this_run)
                    results[job_id] = result.model_copy(update={"checkpoint": None})
                done += len(group)
                update_progress_artifact(progress_id, progress=100.0 * done / len(jobs))
                logger.info("fits done: %d/%d", done, len(jobs))
                finished += 1
                if when_a_worker_idles is not None and len(groups) - finished < run.workers:
                    when_a_worker_idles(list(results.values()))
    return [results[_job_id(job)] for job in jobs]


def _job_id(job: FitJob) -> tuple[int, int]:
    return (job.combination, job.fold)


def failed_results(group: list[FitJob], folds: list[Fold], error: BaseException) -> list[FitResult]:
    sizes = {fold.index: (len(fold.train), len(fold.test)) for fold in folds}
    message = f"{type(error).__name__}: {error}"
    return [
        FitResult(
            combination=job.combination,
            params=job.params,
            fold=job.fold,
            accuracy=None,
            loss=None,
            n_train=sizes[job.fold][0],
            n_test=sizes[job.fold][1],
            fit_seconds=0.0,
            seed=0,
            engine="failed",
            error=message,
        )
        for job in group
    ]


class EarlyRefit:
    """The refit of the best combination so far, started once a worker has no fits left to
    take while the last ones still train, so that it runs beside them instead of after them.

    It is a bet: at most one is started, and it is kept only if its combination is still the
    best when every fit is done; otherwise it is dropped unsaved and the best is refitted as
    usual. A refit depends only on its combination, the data and the seed, so the one kept
    equals the one the run would have made after the fits.
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
        self.combination: int | None = None
        self.future = None

    def __call__(self, results: list[FitResult]) -> None:
        if self.future is not None:
            return
        guess = best_so_far(results, len(self.prepared.folds), self.prepared.refit_metric)
        if guess is None:
            return
        get_run_logger().info(
            "refitting combination %d, the best so far, beside the last fits", guess
        )
        self.combination = guess
        self.future = refit_best.submit(
            self.prepared.dataset,
            self.source,
            self.combinations[guess].model,
            refit_network(self.combinations[guess], self.run),
            self.run.seed,
        )

    def refit_of(self, best_index: int) -> RefitModel | None:
        """The early refit if it is of `best_index` (None: there is none, or it bet wrong)."""
        if self.future is None:
            return None
        if self.combination != best_index:
            get_run_logger().info(
                "the best is combination %d, not %d as it was before the last fits: refitting %d",
                best_index,
                self.combination,
                best_index,
            )
            return None
        return self.future.result()


def refit_network(combination: Combination, run: RunSettings):
    """The engine a refit runs on: the one its fits ran on."""
    return None if run.engine == "reference" else combination.network


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
        prepared.dataset, source, best.model, refit_network(best, run), run.seed
    )
    started = time.perf_counter()
    best_model = save_refit(refit, summary, run_dir)
    seconds = refit.seconds + time.perf_counter() - started
    return summary.model_copy(update={"refit_seconds": seconds}), best_model
