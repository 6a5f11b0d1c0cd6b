"""Trajectories and their batch schedules: which rows each stacked model takes at every step.

Pure numpy: a trajectory is one training run (params without epochs, fold); its batches
follow `epoch_order`, as the reference engine's do.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from tasks.config import ModelParams
from tasks.records import (
    Checkpoint,
    DenseNetwork,
    FitJob,
    Fold,
    epoch_order,
    fit_seed,
    split_validation,
)

# Steps per program call: a fixed shape, so one compiled program serves every call of a group
# shape; the loop itself stops at the call's real step count.
CHUNK_STEPS = 1024


def trajectory_id(job: FitJob) -> tuple[str, int, int]:
    """Jobs with equal ids differ only in epochs: one training run scored at checkpoints.
    A run continued from a checkpoint is another run (it starts at another epoch)."""
    return (job.model.model_dump_json(exclude={"epochs"}), job.fold, job.start_epoch)


def job_order(job: FitJob) -> tuple[int, int]:
    return (job.combination, job.fold)


@dataclass
class Trajectory:
    """One training run (params without epochs, fold) and the epochs at which it is scored."""

    model: ModelParams
    network: DenseNetwork
    fold: Fold  # its training rows less any validation rows (`fit__validation_split`)
    seed: int
    jobs: list[FitJob] = field(default_factory=list)
    start: Checkpoint | None = None  # continue from this state instead of the initial weights
    validation: list[int] = field(default_factory=list)  # rows measured after every epoch
    class_weights: np.ndarray | None = None  # per encoded class (fit__class_weight)

    @property
    def epochs(self) -> int:
        return max(job.model.epochs for job in self.jobs)

    @property
    def first_epoch(self) -> int:
        return 0 if self.start is None else self.start.epochs

    @property
    def batch(self) -> int:
        """Rows in a full batch: a batch size above the training rows is one whole batch."""
        return min(self.model.batch_size, len(self.fold.train))

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.fold.train) / self.model.batch_size)

    @property
    def total_steps(self) -> int:
        """Steps this run takes (from its first epoch): step numbers below count from there."""
        return (self.epochs - self.first_epoch) * self.steps_per_epoch

    def epoch_rows(self, epoch: int) -> np.ndarray:
        """Row indices of each batch of one epoch, [steps_per_epoch, batch], padded with -1."""
        train = np.asarray(self.fold.train, dtype=np.int32)
        padded = np.full(self.steps_per_epoch * self.batch, -1, dtype=np.int32)
        padded[: len(train)] = train[epoch_order(self.seed, epoch, len(train), self.model.shuffle)]
        return padded.reshape(self.steps_per_epoch, self.batch)

    def step_rows(self, start: int, stop: int) -> np.ndarray:
        """Batch rows of steps [start, stop) of this run (clipped to its end); a continued
        run's step 0 is the first step of its first epoch, in that epoch's order."""
        stop = min(stop, self.total_steps)
        if stop <= start:
            return np.zeros((0, self.batch), dtype=np.int32)
        skipped = self.first_epoch * self.steps_per_epoch
        start, stop = start + skipped, stop + skipped
        first, last = start // self.steps_per_epoch, (stop - 1) // self.steps_per_epoch
        rows = np.concatenate([self.epoch_rows(epoch) for epoch in range(first, last + 1)])
        offset = first * self.steps_per_epoch
        return rows[start - offset : stop - offset]


def trajectories_of(
    jobs: list[FitJob],
    fold_by_index: dict[int, Fold],
    run_seed: int,
    labels: np.ndarray | None = None,
) -> list[Trajectory]:
    """One Trajectory per training run; `labels` (classes) stratify validation parts."""
    by_id: dict[tuple[str, int], Trajectory] = {}
    for job in jobs:
        key = trajectory_id(job)
        if key not in by_id:
            assert job.network is not None
            seed = fit_seed(run_seed, job.model, job.fold)
            fold = fold_by_index[job.fold]
            train, held = split_validation(fold.train, job.model.validation_split, seed, labels)
            by_id[key] = Trajectory(
                model=job.model,
                network=job.network,
                fold=Fold(index=fold.index, train=train, test=fold.test),
                seed=seed,
                start=job.start,
                validation=held,
            )
        by_id[key].jobs.append(job)
    return list(by_id.values())


def chunk_rows(
    group: list[Trajectory], start: int, stop: int, n_models: int, width: int
) -> np.ndarray:
    """[CHUNK_STEPS, n_models, width] batch rows of global steps [start, stop); -1 pads and
    idles. Only the steps the call runs are drawn: a segment may be one epoch (early
    stopping), and shuffling every epoch up to CHUNK_STEPS cost more than the training."""
    rows = np.full((CHUNK_STEPS, n_models, width), -1, dtype=np.int32)
    for model_index, trajectory in enumerate(group):
        block = trajectory.step_rows(start, min(stop, start + CHUNK_STEPS))
        rows[: len(block), model_index, : block.shape[1]] = block
    return rows


def segments(group: list[Trajectory]) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
    """(start, stop, checkpoints reached at stop) per program call: cut at chunk ends and at
    every checkpoint, so a checkpoint sees exactly the state a shorter run ends with."""
    checkpoints: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for model_index, trajectory in enumerate(group):
        for epochs in sorted({job.model.epochs for job in trajectory.jobs}):
            steps = (epochs - trajectory.first_epoch) * trajectory.steps_per_epoch
            checkpoints[steps].append((model_index, epochs))
        if trajectory.validation or trajectory.model.early_stopping:
            # a program call ends at every epoch, to measure it (and maybe stop)
            for epoch in range(1, trajectory.epochs - trajectory.first_epoch + 1):
                checkpoints[epoch * trajectory.steps_per_epoch] += []
    start = 0
    for boundary in sorted(checkpoints):
        while start < boundary:
            stop = min(boundary, start + CHUNK_STEPS)
            yield start, stop, checkpoints[boundary] if stop == boundary else []
            start = stop
