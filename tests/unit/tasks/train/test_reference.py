import threading

import numpy as np
import pytest
from sklearn.model_selection import KFold

from tasks.config import ExplicitSplit
from tasks.errors import ConfigError
from tasks.model.factory import model_meta
from tasks.records import FitJob, epoch_order, fit_seed
from tasks.train.dispatch import (
    InitialWeights,
    describe_jobs,
    explicit_folds,
    plan_folds,
    score_fold_from,
)
from tests.support import (
    BUILTIN,
    DROPOUT,
    PIMA_META,
    combinations,
    jobs,
    mlp_params,
    params,
    reference_scores,
)


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


def test_fit_seed_depends_on_run_seed_params_and_fold_but_not_epochs():
    model = mlp_params()
    assert fit_seed(7, model, 0) == fit_seed(7, model.model_copy(update={"epochs": 3}), 0)
    assert fit_seed(7, model, 0) != fit_seed(7, model, 1)
    assert fit_seed(7, model, 0) != fit_seed(8, model, 0)
    assert fit_seed(7, model, 0) != fit_seed(7, mlp_params(optimizer="rmsprop"), 0)


def test_epoch_order_is_a_seeded_permutation():
    order = epoch_order(3, 0, 20)
    assert sorted(order.tolist()) == list(range(20))
    assert np.array_equal(order, epoch_order(3, 0, 20))
    assert not np.array_equal(order, epoch_order(3, 1, 20))


def test_reference_fit_gives_the_same_score_twice_and_in_parallel_threads(pima_arrays):
    features, labels = pima_arrays
    fold = plan_folds(labels, 3, 7)[1]
    model = mlp_params(epochs=2, batch_size=32, init="uniform")
    seed = fit_seed(7, model, fold.index)
    alone = reference_scores(features, labels, fold, model, seed)
    assert 0.0 <= alone["accuracy"] <= 1.0 and alone["log_loss"] > 0
    threaded: list[dict[str, float]] = []
    threads = [
        threading.Thread(
            target=lambda: threaded.append(reference_scores(features, labels, fold, model, seed))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert threaded == [alone, alone]


def test_task_run_names_say_which_fits_they_hold():
    routed = {"optimizer": "adam", "init": "uniform", "epochs": 150, "batch_size": 5}
    job = FitJob(combination=3, params=routed, model=mlp_params(**routed), fold=2)
    assert describe_jobs([job]) == "adam | uniform | e150 | b5 | fold2"
    folds = [job.model_copy(update={"fold": fold}) for fold in range(5, 10)]
    assert describe_jobs(folds) == "adam | uniform | e150 | b5 | fold5-9 (5 fits)"
    group = [job, job.model_copy(update={"combination": 4, "fold": 0})]
    assert describe_jobs(group) == "2 fits | combos 3-4 | b5 | folds 0,2"


def test_regression_folds_are_shuffled_seeded_kfold_and_classes_are_stratified():
    targets = np.linspace(0.0, 1.0, 30)
    folds = plan_folds(targets, 3, seed=7, task="regression")
    expected = KFold(3, shuffle=True, random_state=7).split(np.zeros((30, 1)))
    assert [fold.test for fold in folds] == [test.tolist() for _, test in expected]
    labels = np.array(["b", "a", "c"] * 10)
    for fold in plan_folds(labels, 5, seed=7, task="multiclass"):
        assert sorted(labels[fold.test].tolist()) == ["a", "a", "b", "b", "c", "c"]


def test_text_labels_score_as_their_codes_on_both_engines(pima_arrays):
    from tasks.train.fast.trainer import train_stacked

    features, labels = pima_arrays
    text = np.where(labels == 1, "pos", "neg")  # sorted order keeps neg=0, pos=1
    folds = {fold.index: fold for fold in plan_folds(text, 3, 7)}
    assert folds == {fold.index: fold for fold in plan_folds(labels, 3, 7)}
    fits = jobs(combinations(None, base={"epochs": 1, "batch_size": 64}), (0, 1))
    assert all(job.network is not None for job in fits)
    text_meta = model_meta("binary", 8, ["neg", "pos"])
    on_text = train_stacked(features, text, folds, fits, 7, InitialWeights(BUILTIN, text_meta))
    on_codes = train_stacked(features, labels, folds, fits, 7, InitialWeights(BUILTIN, PIMA_META))
    assert [r.scores for r in on_text] == [r.scores for r in on_codes]
    model = fits[0].model
    seed = fit_seed(7, model, 0)
    assert reference_scores(
        features, text, folds[0], model, seed, meta=text_meta
    ) == reference_scores(features, labels, folds[0], model, seed)


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


def test_a_reference_fit_continued_from_its_checkpoint_equals_the_uninterrupted_fit(pima_arrays):
    """Observed: bit-equal scores (weights, Adam's slots and the dropout seed restored)."""
    features, labels = pima_arrays
    source = DROPOUT
    fold = plan_folds(labels, 3, 7)[0]
    short, longer = (params(source, epochs=e, batch_size=64) for e in (2, 4))
    seed = fit_seed(7, longer, fold.index)
    _, state = score_fold_from(source, features, labels, fold, short, PIMA_META, seed)
    assert state.engine == "reference" and state.epochs == 2
    direct, direct_state = score_fold_from(source, features, labels, fold, longer, PIMA_META, seed)
    resumed, resumed_state = score_fold_from(
        source, features, labels, fold, longer, PIMA_META, seed, state
    )
    assert resumed == direct
    assert resumed_state.curve == direct_state.curve and len(direct_state.curve.train_loss) == 4
    halved = {
        name: array / 2 if name == "model_0" else array for name, array in state.arrays.items()
    }
    other = state.model_copy(update={"arrays": halved})
    tampered, _ = score_fold_from(source, features, labels, fold, longer, PIMA_META, seed, other)
    assert tampered != direct  # the state is really used


def test_initial_weights_are_built_once_per_arguments_and_seed(tmp_path):
    """Builds are serial and slow: the model factory's check build of each arguments gives
    their fits' initial weights for every seed (its recipe, tasks.model.initial_weights), fits that
    differ only in batch size share them, and callers get their own copies."""
    import sys
    import textwrap

    from tasks.model.sources import resolve_model_reference

    path = tmp_path / "counted.py"
    path.write_text(
        textwrap.dedent(
            """
            import collections
            import keras
            CALLS = collections.Counter()

            def create_model(units=2):
                CALLS[units] += 1
                model = keras.Sequential([
                    keras.Input((8,)),
                    keras.layers.Dense(units, activation="relu"),
                    keras.layers.Dense(1, activation="sigmoid"),
                ])
                model.compile(loss="binary_crossentropy", optimizer="adam")
                return model
            """
        )
    )
    source = resolve_model_reference(f"{path}:create_model", tmp_path)
    initial = InitialWeights(source, PIMA_META)
    [small, wide] = [c.model for c in combinations({"units": [2, 3]}, source)]
    first = initial(small, 11)
    again = initial(small.model_copy(update={"batch_size": 64}), 11)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    first[0][...] = 0.0  # a caller's copy, not the remembered weights
    assert not np.array_equal(initial(small, 11)[0], first[0])
    assert not np.array_equal(initial(small, 12)[0], again[0])
    initial(wide, 11)
    calls = sys.modules[f"foldflow_model_{source.sha256[:16]}"].CALLS
    # one check build per arguments; seeds 11 and 12 come from its recipe
    assert dict(calls) == {2: 1, 3: 1}
    # Another task run of the grid (a new InitialWeights in this process) builds nothing new;
    # what the function is told about the data is part of what it builds from.
    other_task = InitialWeights(source, PIMA_META)
    assert all(np.array_equal(a, b) for a, b in zip(other_task(small, 11), again, strict=True))
    assert dict(calls) == {2: 1, 3: 1}
    InitialWeights(source, {**PIMA_META, "n_features_in_": 8, "note": "other data"})(small, 11)
    assert dict(calls) == {2: 2, 3: 1}
