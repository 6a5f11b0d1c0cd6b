"""The fast engine's planning at scale (pure): thousands of fits and 100,000-row folds plan
into few, memory-bounded programs, and fit keys hash each fold's rows once."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tasks.config import ModelParams
from tasks.records import DenseNetwork, FitJob, Fold
from tasks.train.fast import planning, trainer
from tasks.train.fast.planning import candidate_caps, plan_groups, stack_limit
from tasks.train.fast.trainer import predict_in_blocks
from tasks.train.fit_cache import fit_key
from tests.support import BUILTIN, keyed_dataset

NETWORK = DenseNetwork(
    sizes=(8, 12, 8, 1),
    activations=("relu", "relu", "sigmoid"),
    biases=(True, True, True),
    optimizer="adam",
    settings={"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
)


def many_jobs(n_trajectories: int, batch_size: int, epochs=(50, 100)) -> list[FitJob]:
    """Distinct trajectories (one per fold number), each scored at every epoch count."""
    return [
        FitJob(
            combination=index,
            params={"epochs": e},
            model=ModelParams(epochs=e, batch_size=batch_size),
            fold=fold,
            network=NETWORK,
        )
        for fold in range(n_trajectories)
        for index, e in enumerate(epochs)
    ]


@pytest.mark.parametrize("batch_size", [10, 4096])
def test_five_thousand_trajectories_plan_into_few_bounded_groups(batch_size):
    jobs = many_jobs(5000, batch_size)
    groups = plan_groups(jobs, workers=2, train_rows=100_000)
    assert sorted((j.combination, j.fold) for g in groups for j in g) == sorted(
        (j.combination, j.fold) for j in jobs
    )
    sizes = [len({job.fold for job in group}) for group in groups]
    assert max(sizes) <= stack_limit(batch_size)  # bounded batch rows per program step
    # every group is one of at most two shapes (near-equal pieces): few compiled programs
    assert len(set(sizes)) <= 2
    assert len(groups) <= max(
        math.ceil(5000 / stack_limit(batch_size)), 2 * planning.MAX_PIECES_PER_WORKER
    )
    for group in groups:  # the jobs of one trajectory stay together
        assert {(j.fold, j.model.epochs) for j in group} == {
            (fold, e) for fold in {j.fold for j in group} for e in (50, 100)
        }


def test_candidate_caps_cover_every_distinct_plan():
    for sizes in ([54], [7, 19, 100], [1, 2, 3], [5000, 333]):
        workers = 2
        smallest = math.ceil(max(sizes) / (planning.MAX_PIECES_PER_WORKER * workers))

        def counts(cap, sizes=sizes):
            return tuple(math.ceil(size / cap) for size in sizes)

        every = {counts(cap) for cap in range(smallest, max(sizes) + 1)}
        caps = candidate_caps(sizes, workers)
        assert caps == sorted(caps, reverse=True) and caps[0] == max(sizes)
        assert {counts(cap) for cap in caps} == every
        assert len(caps) <= 4 * sum(math.isqrt(size) + 1 for size in sizes)


def test_predictions_in_blocks_equal_one_call(monkeypatch):
    features = np.arange(40, dtype=np.float32).reshape(20, 2)
    test_rows = np.array([list(range(0, 20)), list(range(19, -1, -1))], dtype=np.int32)

    def predict(params, features, rows):  # a model whose output is its row's first feature
        gathered = np.asarray(features)[np.asarray(rows)][..., :1]
        return tf.constant(gathered + np.asarray(params)[:, None, :1])

    params = np.array([[0.0], [100.0]], dtype=np.float32)
    whole = predict(params, features, test_rows)
    monkeypatch.setattr(trainer, "PREDICT_ROW_BUDGET", 6)  # 3 rows per block for 2 models
    assert np.array_equal(predict_in_blocks(predict, params, features, test_rows), whole)


def test_fit_keys_follow_the_fold_rows_not_the_list_object():
    dataset = keyed_dataset("x")
    source = BUILTIN
    [job] = many_jobs(1, 10, epochs=(5,))
    rows = list(range(100_000))
    fold = Fold(index=0, train=rows[:70_000], test=rows[70_000:])
    same = Fold(index=0, train=list(rows[:70_000]), test=list(rows[70_000:]))
    moved = Fold(index=0, train=rows[1:70_001], test=[0, *rows[70_001:]])
    keys = [fit_key(job, f, dataset, source, 7, "code") for f in (fold, same, fold, moved)]
    assert keys[0] == keys[1] == keys[2] != keys[3]
