"""What a run reuses and what it trains: the decisions flows.stages.train_all acts on.

Which fits the fit cache answers (tasks.train.fit_cache), which of the others continue from
a checkpoint of their trajectory (tasks.train.checkpoints) and from which, what a failed
group is recorded as, and the lines that tell the user. Pure over the lookups it is given:
a unit test passes dicts where the flow passes the cache and the checkpoint store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tasks.config import DEFAULT_EARLY_STOPPING_VALIDATION
from tasks.data.dataset import DatasetHandle
from tasks.model.sources import ModelSource
from tasks.records import Checkpoint, FitJob, FitResult, Fold
from tasks.train.checkpoints import epochs_to_train
from tasks.train.fit_cache import fit_key, trajectory_key

JobId = tuple[int, int]  # (combination, fold)


def job_id(job: FitJob) -> JobId:
    return (job.combination, job.fold)


@dataclass(frozen=True)
class ReusePlan:
    """Per job its fit-cache key; the cached records; the jobs left to train, each with the
    checkpoint it starts from (None: from scratch), and their trajectory keys."""

    keys: dict[JobId, str]
    cached: dict[JobId, FitResult]
    to_train: list[FitJob]
    trajectories: dict[JobId, str]


def plan_reuse(
    jobs: list[FitJob],
    folds: list[Fold],
    dataset: DatasetHandle,
    source: ModelSource,
    run_seed: int,
    code_version: str,
    cached_fit: Callable[[str, FitJob], FitResult | None] | None,
    checkpoint_before: Callable[[str, int], Checkpoint | None],
) -> ReusePlan:
    """Reuse what the cache holds (`cached_fit` None: a fresh run reuses nothing); every other
    fit continues from the longest state of its trajectory trained for fewer epochs
    (`checkpoint_before(trajectory, epochs)`), except under early stopping, whose own state
    (patience, best weights) is not in a checkpoint."""
    by_index = {fold.index: fold for fold in folds}
    keys = {
        job_id(job): fit_key(job, by_index[job.fold], dataset, source, run_seed, code_version)
        for job in jobs
    }
    cached: dict[JobId, FitResult] = {}
    if cached_fit is not None:
        for job in jobs:
            record = cached_fit(keys[job_id(job)], job)
            if record is not None:
                cached[job_id(job)] = record
    left = [job for job in jobs if job_id(job) not in cached]
    trajectories = {
        job_id(job): trajectory_key(
            job, by_index[job.fold], dataset, source, run_seed, code_version
        )
        for job in left
    }
    to_train = [
        job
        if job.model.early_stopping
        else job.model_copy(
            update={"start": checkpoint_before(trajectories[job_id(job)], job.model.epochs)}
        )
        for job in left
    ]
    return ReusePlan(keys=keys, cached=cached, to_train=to_train, trajectories=trajectories)


def keeps_checkpoint(job: FitJob, result: FitResult) -> bool:
    """A trained fit's final state is kept for longer fits of its trajectory (not under
    early stopping: see plan_reuse)."""
    return result.checkpoint is not None and not job.model.early_stopping


def reuse_lines(plan: ReusePlan) -> list[str]:
    """What the run reuses and how it trains the rest, for the run's log."""
    lines = []
    if plan.cached:
        lines.append(f"reusing {len(plan.cached)} cached fit(s); training {len(plan.to_train)}")
    stopping = [job for job in plan.to_train if job.model.early_stopping]
    if stopping:
        parts = "/".join(sorted({f"{job.model.validation_split:g}" for job in stopping}))
        lines.append(
            f"early stopping in {len(stopping)} fit(s): validation part {parts} of each fold's "
            "training rows (fit__validation_split; "
            f"{DEFAULT_EARLY_STOPPING_VALIDATION:.2f} when early stopping asks for one and "
            "none is given)"
        )
    continued = [job for job in plan.to_train if job.start is not None]
    if continued:
        scratch = [job.model_copy(update={"start": None}) for job in plan.to_train]
        lines.append(
            f"continuing {len(continued)} fit(s) from checkpoints: training "
            f"{epochs_to_train(plan.to_train)} epochs instead of {epochs_to_train(scratch)}"
        )
    return lines


def failed_results(group: list[FitJob], folds: list[Fold], error: BaseException) -> list[FitResult]:
    """A group that failed for good, as records scored NaN (scikit-learn's `error_score`)."""
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
