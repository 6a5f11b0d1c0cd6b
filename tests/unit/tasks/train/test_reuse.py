"""What a run reuses and what it trains: cached fits answered, the rest continued from their
trajectory's checkpoint (not under early stopping), failed groups recorded, the log lines."""

import numpy as np

from tasks.records import Checkpoint, FitJob, Fold
from tasks.train.fit_cache import fit_key
from tasks.train.reuse import (
    failed_results,
    keeps_checkpoint,
    plan_reuse,
    reuse_lines,
)
from tests.support import BUILTIN, keyed_dataset, mlp_params

DATA = keyed_dataset()
FOLDS = [Fold(index=0, train=[0, 1, 2], test=[3]), Fold(index=1, train=[1, 2, 3], test=[0])]


def job(combination, fold, **routed):
    return FitJob(combination=combination, params=routed, model=mlp_params(**routed), fold=fold)


def state(epochs):
    return Checkpoint(engine="fast", epochs=epochs, arrays={"params": np.zeros(2)})


def plan(jobs, cache, checkpoints):
    return plan_reuse(
        jobs,
        FOLDS,
        DATA,
        BUILTIN,
        7,
        "code",
        None if cache is None else lambda key, fit: cache.get(key),
        lambda trajectory, epochs: checkpoints.get((trajectory, epochs)),
    )


def test_cached_fits_are_reused_and_the_rest_continue_from_their_trajectory():
    short, long = job(0, 0, epochs=2), job(1, 0, epochs=6)
    stopping = job(2, 1, epochs=6, early_stopping__patience=2)
    done = fit_key(short, FOLDS[0], DATA, BUILTIN, 7, "code")
    first = plan([short, long, stopping], {}, {})
    trajectory = first.trajectories[(1, 0)]
    record = object()
    later = plan(
        [short, long, stopping],
        {done: record},
        {(trajectory, 6): state(2), (first.trajectories[(2, 1)], 6): state(2)},
    )
    assert later.cached == {(0, 0): record}
    starts = [(j.combination, j.start and j.start.epochs) for j in later.to_train]
    assert starts == [(1, 2), (2, None)]  # early stopping's state is not in a checkpoint
    assert plan([short, long], None, {}).cached == {}  # a fresh run reuses nothing
    lines = reuse_lines(later)
    assert lines[0] == "reusing 1 cached fit(s); training 2"
    assert lines[1].startswith("early stopping in 1 fit(s): validation part 0.2 of each")
    assert lines[2] == "continuing 1 fit(s) from checkpoints: training 10 epochs instead of 12"


def test_a_failed_group_is_recorded_per_fit_with_its_error():
    results = failed_results([job(0, 0), job(0, 1)], FOLDS, ValueError("boom"))
    assert [(r.fold, r.n_train, r.n_test, r.engine) for r in results] == [
        (0, 3, 1, "failed"),
        (1, 3, 1, "failed"),
    ]
    assert results[0].error == "ValueError: boom" and results[0].accuracy is None
    assert not keeps_checkpoint(job(0, 0), results[0])
