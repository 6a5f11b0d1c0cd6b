"""Fold planning (tasks.data.folds): stratified, shuffled, seeded folds, and a caller's own."""

import numpy as np
import pytest
from sklearn.model_selection import KFold

from tasks.config import ExplicitSplit
from tasks.data.folds import explicit_folds, plan_folds
from tasks.errors import ConfigError


def test_folds_are_stratified_disjoint_and_cover_every_row(pima_arrays):
    _, labels = pima_arrays
    folds = plan_folds(labels, n_splits=10, seed=7)
    assert len(folds) == 10
    test_rows = np.concatenate([fold.test for fold in folds])
    assert sorted(test_rows.tolist()) == list(range(len(labels)))
    for fold in folds:
        assert not set(fold.train) & set(fold.test)
        assert abs(labels[fold.test].mean() - labels.mean()) < 0.03


def test_folds_depend_only_on_the_seed(pima_arrays):
    _, labels = pima_arrays
    assert plan_folds(labels, 3, 7) == plan_folds(labels, 3, 7)
    assert plan_folds(labels, 3, 7) != plan_folds(labels, 3, 8)


def test_regression_folds_are_shuffled_seeded_kfold_and_classes_are_stratified():
    targets = np.linspace(0.0, 1.0, 30)
    folds = plan_folds(targets, 3, seed=7, task="regression")
    expected = KFold(3, shuffle=True, random_state=7).split(np.zeros((30, 1)))
    assert [fold.test for fold in folds] == [test.tolist() for _, test in expected]
    labels = np.array(["b", "a", "c"] * 10)
    for fold in plan_folds(labels, 5, seed=7, task="multiclass"):
        assert sorted(labels[fold.test].tolist()) == ["a", "a", "b", "b", "c", "c"]


def test_explicit_folds_keep_a_splitters_rows_and_refuse_bad_ones():
    splits = [ExplicitSplit(train=[0, 1], test=[2, 3]), ExplicitSplit(train=[2, 3], test=[0, 1])]
    folds = explicit_folds(splits, n_rows=4)
    assert [(fold.index, fold.train, fold.test) for fold in folds] == [
        (0, [0, 1], [2, 3]),
        (1, [2, 3], [0, 1]),
    ]
    with pytest.raises(ConfigError, match="split 0: row index 4 is outside the data's 4 rows"):
        explicit_folds([ExplicitSplit(train=[0], test=[4])], n_rows=4)
    with pytest.raises(ConfigError, match="split 0: row 1 is both in the training and the test"):
        explicit_folds([ExplicitSplit(train=[0, 1], test=[1])], n_rows=4)


def test_repeated_folds_are_scikit_learns_with_one_number_per_fold(pima_arrays):
    from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

    _, labels = pima_arrays
    folds = plan_folds(labels, 3, seed=7, n_repeats=2)
    expected = RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=7)
    assert [fold.test for fold in folds] == [
        test.tolist() for _, test in expected.split(np.zeros((len(labels), 1)), labels)
    ]
    assert [fold.index for fold in folds] == list(range(6))
    for repeat in (folds[:3], folds[3:]):  # each repeat covers every row once
        assert sorted(np.concatenate([fold.test for fold in repeat]).tolist()) == list(
            range(len(labels))
        )
    assert folds[0].test != folds[3].test  # shuffled anew
    targets = np.linspace(0.0, 1.0, 30)
    regression = plan_folds(targets, 3, seed=7, task="regression", n_repeats=2)
    expected = RepeatedKFold(n_splits=3, n_repeats=2, random_state=7).split(np.zeros((30, 1)))
    assert [fold.test for fold in regression] == [test.tolist() for _, test in expected]
