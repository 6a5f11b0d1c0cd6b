"""Per-fold training dispatch: seeded, self-contained fits that return small result records.

A task run trains its jobs on the engine each can use: the fast engine (tasks.train.fast) for
every job whose network inspection found, together; the reference engine
(tasks.train.reference) for the others, one Keras fit each.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import ModelParams
from tasks.data.dataset import DatasetHandle, arrays_digest, class_order, load_arrays
from tasks.data.preprocess import FoldFeatures, UserRows, feature_kinds, kinds_meta
from tasks.data.user_transformer import raw_rows, rows_key
from tasks.features import model_input_meta
from tasks.metrics import ScorerSpec, loss_on_test_rows
from tasks.model.factory import before_building, model_meta
from tasks.model.sources import ModelSource, model_files, running_model_code
from tasks.records import FitJob, FitResult, Fold, fit_seed, split_validation
from tasks.train.fit_workers import FitGuards, train_in_workers
from tasks.train.xla_cache import drop_after_failure
from tasks.train.xla_cache import enable as enable_xla_cache

# A model build may be this process's first TensorFlow op (the model's checks, a fit's initial
# weights): the compiled-program cache is enabled before it, as before training.
before_building(enable_xla_cache)


def dataset_meta(dataset: DatasetHandle) -> dict[str, Any]:
    """`meta` for the model function, from the data every worker reads the same way. With
    categories or missing cells it carries the feature kinds too, and each fit's input width
    is the width after its preprocessing (tasks.config.model_input_meta)."""
    features, labels = load_arrays(dataset)
    classes = class_order(labels, dataset.task, dataset.positive_label)
    meta = model_meta(dataset.task, features.shape[1], classes)
    return {**meta, **kinds_meta(feature_kinds(dataset, features))}


def user_rows_of(
    dataset: DatasetHandle, features: np.ndarray, labels: np.ndarray, jobs: list[FitJob]
) -> UserRows | None:
    """The rows as the user gave them, when a job's preprocessing is the user's transformer."""
    if all(job.model.transformer is None for job in jobs):
        return None
    return raw_rows(features, dataset.feature_columns, dataset.categories), labels


def user_data_key(dataset: DatasetHandle) -> str:
    """What the user's rows are made of (rows_key): their transformers' fits are shared by
    the views of every group of this process, and by the width check before them."""
    return rows_key(arrays_digest(dataset), dataset.feature_columns, dataset.categories)


def width_meta(meta: dict[str, Any], model: ModelParams, view: np.ndarray) -> dict[str, Any]:
    """`meta` with the width the user's transformer gave this fold (scikeras' meta after a
    Pipeline's transformers); as it is for foldflow's own preprocessing."""
    if model.transformer is None:
        return meta
    resolved = model_input_meta(meta, model)
    return {**resolved, "n_features_in_": int(view.shape[1])}


def run_fit_jobs(
    dataset: DatasetHandle,
    folds: list[Fold],
    jobs: list[FitJob],
    run_seed: int,
    source: ModelSource,
    scorers: list[ScorerSpec] | None = None,
    guards: FitGuards | None = None,
) -> list[FitResult]:
    """Train every job: those with an inspected network on the fast engine (together), the
    others one Keras fit each. Each job's preprocessing is fitted on its fold's training rows
    only (tasks.data.preprocess). `sys.exit()` or `os._exit()` from the model's code (its
    function, or a layer it defines, while training) fails these fits with a
    ModelFunctionExit naming the line, instead of ending the worker or the run. A compiled
    program TensorFlow cannot load from its cache fails these fits and is dropped from the
    cache, so the next run compiles it afresh (tasks.train.xla_cache.drop_after_failure)."""
    try:
        with running_model_code(f"model function {source.label}", model_files(source)):
            return _run_fit_jobs(dataset, folds, jobs, run_seed, source, scorers, guards)
    except Exception as error:
        drop_after_failure(error)
        raise


# What training imports: TensorFlow and the engines (loaded by `load_engines`).
ENGINE_MODULES = (
    "tasks.train.fast.programs",
    "tasks.train.fast.trainer",
    "tasks.train.reference",
    "tasks.train.vectorized",
    "tasks.train.weights_cache",
)


def load_engines() -> None:
    """TensorFlow and the training engines, imported after the compiled-program cache is on
    (it must precede the process's first TensorFlow op). The fit workers' fork server calls it,
    so that every worker starts with them: importing this module no longer loads them."""
    enable_xla_cache()
    for module in ENGINE_MODULES:
        importlib.import_module(module)


def _run_fit_jobs(
    dataset: DatasetHandle,
    folds: list[Fold],
    jobs: list[FitJob],
    run_seed: int,
    source: ModelSource,
    scorers: list[ScorerSpec] | None,
    guards: FitGuards | None = None,
) -> list[FitResult]:
    # TensorFlow loads only where training happens, after the compiled-program cache is on.
    enable_xla_cache()
    from tasks.train.fast.trainer import train_stacked
    from tasks.train.reference import classes, fit_and_score
    from tasks.train.vectorized import run_vectorized
    from tasks.train.weights_cache import InitialWeights

    features, labels = load_arrays(dataset)
    fold_by_index = {fold.index: fold for fold in folds}
    zero_columns = feature_kinds(dataset, features)
    meta = dataset_meta(dataset)
    fast_jobs = [job for job in jobs if job.network is not None]
    user_rows = user_rows_of(dataset, features, labels, jobs)
    data_key = None if user_rows is None else user_data_key(dataset)
    results: dict[tuple[int, int], FitResult] = {}
    if fast_jobs:
        initial = InitialWeights(source, meta)
        for result in train_stacked(
            features, labels, fold_by_index, fast_jobs, run_seed, initial, zero_columns,
            scorers or (), meta["classes_"], user_rows, data_key,
        ):  # fmt: skip
            results[(result.combination, result.fold)] = result
    copies = [job for job in jobs if job.network is None and job.vectorized]
    views = FoldFeatures(features, zero_columns, user_rows, data_key)
    if copies:  # the vectorized path; what it cannot train stays for the reference engine
        for result in run_vectorized(
            source, views, labels, fold_by_index, copies, run_seed,
            lambda model, view: width_meta(meta, model, view), scorers or (),
        ):  # fmt: skip
            results[(result.combination, result.fold)] = result
    if guards is not None:  # the reference engine's fits: watched worker processes
        rest = [job for job in jobs if (job.combination, job.fold) not in results]
        for result in train_in_workers(dataset, folds, rest, run_seed, source, scorers, guards):
            results[(result.combination, result.fold)] = result
    for job in jobs:
        if job.network is not None or (job.combination, job.fold) in results:
            continue
        fold = fold_by_index[job.fold]
        seed = fit_seed(run_seed, job.model, job.fold)
        started = time.perf_counter()
        view = views.of(fold.index, fold.train, job.model)
        scores, train_scores, state = fit_and_score(
            source, view, labels, fold, job.model, width_meta(meta, job.model, view), seed,
            job.start, scorers or (),
        )  # fmt: skip
        results[(job.combination, job.fold)] = FitResult(
            combination=job.combination,
            params=job.params,
            fold=job.fold,
            accuracy=scores.get("accuracy"),
            loss=loss_on_test_rows(meta["task"], scores),
            scores=scores,
            train_scores=train_scores,
            n_train=len(
                split_validation(
                    fold.train, job.model.validation_split, seed, classes(labels, meta)
                )[0]
            ),
            n_test=len(fold.test),
            fit_seconds=time.perf_counter() - started,
            seed=seed,
            engine="reference",
            start_epoch=job.start_epoch,
            curve=state.curve,
            checkpoint=state,
            stopped_epoch=len(state.curve.train_loss) if job.model.early_stopping else None,
        )
    return [results[(job.combination, job.fold)] for job in jobs]


def prepare_programs(
    dataset: DatasetHandle, folds: list[Fold], groups: list[list[FitJob]], run_seed: int
) -> int:
    """Trace the fast engine's programs for these task groups in this process, in order
    (tasks.train.fast.programs.trace_programs says why); the number of distinct programs."""
    enable_xla_cache()  # TensorFlow loads only where training happens, the cache on first
    from tasks.train.fast.programs import trace_programs

    features, labels = load_arrays(dataset)
    jobs = [job for group in groups for job in group]
    user_rows = user_rows_of(dataset, features, labels, jobs)
    views = FoldFeatures(features, feature_kinds(dataset, features), user_rows)
    fold_by_index = {fold.index: fold for fold in folds}
    return len(trace_programs(fold_by_index, groups, run_seed, labels, views))


@task(
    name="train_fold",
    task_run_name="train_fold[{label}]",
    retries=1,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
)
def train_fold(
    dataset: DatasetHandle,
    folds: list[Fold],
    jobs: list[FitJob],
    run_seed: int,
    source: ModelSource,
    label: str = "",
    scorers: list[ScorerSpec] | None = None,
    guards: FitGuards | None = None,
) -> list[FitResult]:
    """Train one (params, fold) pair, or a group the fast engine trains as one program.

    `source` carries the model function's code by value; `label` names the task run;
    `scorers`: scikit-learn scorers computed beside the task's own metrics;
    `guards`: the reference engine's fits then run in watched worker processes
    (tasks.train.fit_workers: memory and time bounds, recycling).
    Finished fits are cached per fit by the flow (tasks.train.fit_cache), not per task run.
    """
    return run_fit_jobs(dataset, folds, jobs, run_seed, source, scorers, guards)
