import numpy as np

from tasks.search.nested import NestedRow, nested_folds, nested_lines


def test_inner_folds_split_only_the_outer_training_rows():
    labels = np.array([0, 1] * 15)
    nested = nested_folds(labels, n_outer=3, n_inner=2, seed=7)
    assert len(nested) == 3
    for split in nested:
        outer_train, outer_test = set(split.outer.train), set(split.outer.test)
        assert not outer_train & outer_test
        for inner in split.inner:
            assert set(inner.train) | set(inner.test) == outer_train
            assert not (set(inner.train) | set(inner.test)) & outer_test
        # stratified inside the outer training part too
        assert labels[split.inner[0].test].mean() == 0.5


def test_nested_lines_put_the_outer_estimate_beside_the_inner_best():
    rows = [
        NestedRow(
            outer_fold=0,
            outer_score=0.6,
            inner_best_score=0.7,
            inner_best_std=0.01,
            best_params={"epochs": 1},
        ),
        NestedRow(
            outer_fold=1,
            outer_score=0.8,
            inner_best_score=0.8,
            inner_best_std=0.02,
            best_params={"epochs": 2},
        ),
    ]
    first, *per_fold = nested_lines(rows, "accuracy")
    assert first.startswith(
        "Nested CV (2 outer folds, accuracy): outer 0.700000 (0.100000); "
        "inner best 0.750000 (0.050000)"
    )
    assert first.endswith("overstates the outer score by 0.050000")
    assert (
        per_fold[1] == "outer fold 1: outer 0.800000, inner best 0.800000 (0.020000) with: "
        "{'epochs': 2}"
    )
