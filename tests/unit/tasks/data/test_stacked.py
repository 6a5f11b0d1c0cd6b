"""The stacked matrices the fast engine trains on: built once per process for the same data
and views, shared by the groups that ask together, gone when the last is done."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pandas as pd
import pytest

from tasks.config import ModelParams
from tasks.data.preprocess import FoldFeatures
from tasks.data.stacked import (
    ALIGNMENT,
    aligned_float32,
    is_aligned_float32,
    keeping_last_stack,
    shared_stack,
)
from tests.unit.tasks.data.test_preprocess import MIXED_KINDS, mixed_matrix

TRAIN = [list(range(0, 40)), list(range(20, 60))]
MEDIAN, MEAN = ModelParams(), ModelParams(numeric_impute="mean")


def views_of(models=(MEDIAN, MEAN), folds=(0, 1), train=TRAIN):
    return [(fold, train[fold], model) for model in models for fold in folds]


def test_a_stacked_matrix_is_its_views_one_under_the_other_and_aligned():
    features = mixed_matrix()
    views = FoldFeatures(features, MIXED_KINDS)
    stacked = views.stacked(views_of())
    expected = np.concatenate([views.of(fold, rows, model) for fold, rows, model in views_of()])
    np.testing.assert_array_equal(stacked, expected)
    assert stacked.dtype == np.float32 and stacked.ctypes.data % ALIGNMENT == 0
    assert is_aligned_float32(stacked)


def test_groups_asking_for_the_same_views_share_one_matrix_encoded_once(monkeypatch):
    features = mixed_matrix()
    computed = []
    original = FoldFeatures._computed

    def counting(self, train_rows, model):
        computed.append(1)
        return original(self, train_rows, model)

    monkeypatch.setattr(FoldFeatures, "_computed", counting)
    got = []
    start = threading.Barrier(2)

    def group():  # each task run makes its own FoldFeatures over the process's arrays
        start.wait()
        got.append(FoldFeatures(features, MIXED_KINDS).stacked(views_of()))

    threads = [threading.Thread(target=group) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got[0] is got[1]
    assert len(computed) == 4  # 2 folds x 2 imputations, once each


def test_other_training_rows_or_data_are_another_matrix():
    features = mixed_matrix()
    first = FoldFeatures(features, MIXED_KINDS).stacked(views_of())
    other_rows = [list(range(10, 50)), TRAIN[1]]  # fold 0 of another seed
    second = FoldFeatures(features, MIXED_KINDS).stacked(views_of(train=other_rows))
    assert second is not first and not np.array_equal(first, second)
    copy = features.copy()  # equal content, another array: not assumed the same data
    assert FoldFeatures(copy, MIXED_KINDS).stacked(views_of()) is not first


def test_a_matrix_nobody_holds_is_dropped_and_built_again():
    source, calls = np.zeros(1), []

    def block(index):
        calls.append(index)
        return np.full((2, 3), index, dtype=np.float32)

    first = shared_stack(("test-dropped",), (source,), 2, block)
    assert shared_stack(("test-dropped",), (source,), 2, block) is first
    assert calls == [0, 1]
    del first
    gc.collect()
    again = shared_stack(("test-dropped",), (source,), 2, block)
    assert calls == [0, 1, 0, 1]
    np.testing.assert_array_equal(again[:, 0], [0, 0, 1, 1])


def test_a_failing_view_fails_every_asker_and_a_retry_builds_afresh():
    calls = []

    def failing(index):
        calls.append(index)
        raise RuntimeError("transformer failed")

    with pytest.raises(RuntimeError, match="transformer failed"):
        shared_stack(("test-failing",), (), 2, failing)
    built = shared_stack(("test-failing",), (), 2, lambda index: np.full((3, 2), index, "f4"))
    np.testing.assert_array_equal(built[:, 0], [0, 0, 0, 1, 1, 1])


def test_views_of_different_widths_are_refused_by_name():
    with pytest.raises(ValueError, match="one width"):
        shared_stack(("test-widths",), (), 2, lambda index: np.zeros((3, 2 + index), "f4"))


def test_an_aligned_array_starts_on_the_boundary():
    for rows in (1, 7, 1000):
        array = aligned_float32((rows, 3))
        assert array.shape == (rows, 3) and array.ctypes.data % ALIGNMENT == 0


def test_groups_one_after_another_share_the_matrix_while_the_run_keeps_it():
    """One worker runs the groups in turn: the last matrix built stays until another is asked
    for or the run's fits end (keeping_last_stack), so the next group over the same views
    encodes nothing."""
    source, calls = np.zeros(1), []

    def block(index):
        calls.append(index)
        return np.full((2, 3), index, dtype=np.float32)

    with keeping_last_stack():
        first = weakref.ref(shared_stack(("test-kept",), (source,), 2, block))
        gc.collect()
        assert first() is not None
        assert shared_stack(("test-kept",), (source,), 2, block) is first()
        assert calls == [0, 1]
        other = weakref.ref(shared_stack(("test-kept-other",), (source,), 2, block))
        gc.collect()
        assert first() is None and other() is not None  # one kept at a time
    gc.collect()
    assert other() is None


def test_the_kept_matrix_keeps_what_it_was_made_from():
    """A group's user rows (tasks.data.user_transformer.raw_rows) live only while someone
    holds them: the kept matrix holds them, so the next group is given the same rows and
    finds the same matrix."""
    made = pd.DataFrame({"x": [1.0, 2.0]})
    rows = weakref.ref(made)
    with keeping_last_stack():
        shared_stack(("test-kept-sources",), (made,), 1, lambda index: np.zeros((2, 1), "f4"))
        del made
        gc.collect()
        assert rows() is not None
    gc.collect()
    assert rows() is None
