"""The vectorized path (tasks.train.vectorized) trains copies of a model the stacked engine
cannot express (Reshape + Conv1D + Flatten, pooling, Concatenate branches, BatchNormalization,
Dropout, schedules) as the reference engine's fits would be, per (combination, fold): same
accuracy, log loss within 1e-4; early stopping, validation parts, class weights and
continuation as the reference engine."""

import textwrap

import numpy as np
import pytest

from tasks.data.folds import plan_folds
from tasks.data.preprocess import FoldFeatures
from tasks.model.sources import resolve_model_reference
from tasks.records import fit_seed
from tasks.train.reference import fit_and_score
from tasks.train.vectorized import run_vectorized
from tasks.train.vectorized import trainer as vectorized_trainer
from tests.support import PIMA_META, combinations, jobs

MODEL = """
import keras

L = keras.layers


def create_model(meta, kind="conv", learning_rate=0.01, filters=2, decay=False):
    width = meta["n_features_in_"]
    inputs = keras.Input((width,))
    if kind == "recurrent":  # the features as a sequence, through an LSTM
        x = L.LSTM(3)(L.Reshape((width, 1))(inputs))
    elif kind == "conv":
        x = L.Reshape((width, 1), name="rows")(inputs)
        x = L.Conv1D(filters, 3, activation="relu")(x)
        x = L.MaxPooling1D(2)(x)
        x = L.Flatten()(x)
    else:  # "noisy": BatchNormalization, pooling, Dropout and a Dense branch, concatenated
        x = L.Reshape((width, 1))(inputs)
        # No bias right before BatchNormalization: it cancels out, and its gradient (rounding
        # noise) scaled up by Adam agrees between engines only to ~1e-3 (docs/engines.md).
        x = L.BatchNormalization()(L.Conv1D(filters, 3, use_bias=False)(x))
        x = L.Concatenate()(
            [
                L.GlobalAveragePooling1D()(x),
                L.Dropout(0.3)(L.Flatten()(x)),
                L.Dense(4, activation="tanh")(inputs),
            ]
        )
    # Regularization (weights and activity) on the conv model: part of the loss either way.
    regularized = {"kernel_regularizer": "l2", "activity_regularizer": "l1"}
    regularized = regularized if kind == "conv" else {}
    x = L.Dense(4, activation="relu", **regularized)(x)
    outputs = L.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    rate = learning_rate
    if decay:
        rate = keras.optimizers.schedules.ExponentialDecay(learning_rate, 8, 0.5)
    model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(rate))
    return model


class Scaled(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x


def custom_model(meta):
    inputs = keras.Input((meta["n_features_in_"],))
    model = keras.Sequential([inputs, Scaled(), L.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam")
    return model
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("vectorized") / "vectorized_models.py"
    path.write_text(textwrap.dedent(MODEL))
    return resolve_model_reference(f"{path}:create_model", path.parent)


@pytest.fixture(scope="module")
def scaled(pima_arrays):
    """Pima standardized (both paths see the same features): on raw features saturated
    sigmoids turn float rounding into 1e-4 of log loss within two epochs."""
    features, labels = pima_arrays
    return (features - features.mean(axis=0)) / features.std(axis=0), labels


@pytest.fixture(scope="module")
def folds(pima_arrays):
    return {fold.index: fold for fold in plan_folds(pima_arrays[1], 3, 7)}


def vectorized_jobs(source, grid, fold_indices=(0,)):
    checked = combinations(grid, source)
    assert all(c.network is None and c.vectorized for c in checked), [c.reason for c in checked]
    return [
        job.model_copy(update={"vectorized": checked[job.combination].vectorized})
        for job in jobs(checked, fold_indices)
    ]


def train(source, pima_arrays, folds, fit_jobs):
    features, labels = pima_arrays
    results = run_vectorized(
        source, FoldFeatures(features), labels, folds, fit_jobs, 7, lambda model, view: PIMA_META
    )
    assert len(results) == len(fit_jobs), "the vectorized path fell back"
    return results


def reference(source, pima_arrays, folds, job):
    """The reference engine's fit of the same job: (test scores, train scores, state)."""
    features, labels = pima_arrays
    seed = fit_seed(7, job.model, job.fold)
    return fit_and_score(
        source, features, labels, folds[job.fold], job.model, PIMA_META, seed, job.start
    )


@pytest.fixture(scope="module")
def conv_fits(source, scaled, folds):
    """Conv1D + MaxPooling1D copies (two learning rates) on two folds, batch 30 (a 2-row last
    batch), 2 epochs, and a 1-epoch copy of the first (its checkpoint): one program, compiled
    by XLA (as for many steps; the other tests run on TensorFlow's graph runtime)."""
    grid = {"learning_rate": [0.003, 0.03], "epochs": [2], "batch_size": [30]}
    fit_jobs = vectorized_jobs(source, grid, (0, 1))
    assert len({job.vectorized for job in fit_jobs}) == 1
    first = fit_jobs[0]
    short = first.model_copy(
        update={"combination": 9, "model": first.model.model_copy(update={"epochs": 1})}
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vectorized_trainer, "XLA_MIN_COPY_STEPS", 0)
        return fit_jobs, train(source, scaled, folds, [*fit_jobs, short])


def test_conv_copies_match_the_reference_engine_fit_by_fit(source, scaled, folds, conv_fits):
    fit_jobs, results = conv_fits
    for index in (0, 3):  # (rate 0.003, fold 0), (rate 0.03, fold 1)
        job, result = fit_jobs[index], results[index]
        scores, train_scores, state = reference(source, scaled, folds, job)
        assert result.engine == "vectorized" and result.seed == fit_seed(7, job.model, job.fold)
        assert result.accuracy == scores["accuracy"], job
        assert result.loss == pytest.approx(scores["log_loss"], rel=1e-4, abs=1e-5), job
        assert result.train_scores["log_loss"] == pytest.approx(
            train_scores["log_loss"], rel=1e-4, abs=1e-5
        )
        np.testing.assert_allclose(result.curve.train_loss, state.curve.train_loss, rtol=1e-4)
        assert result.n_train == 512 and result.n_test == 256
    # Each copy its own learning rate (a variable of its own optimizer, not the template's).
    assert len({round(r.loss, 6) for r in results[:4]}) == 4


def test_a_continued_copy_equals_the_longer_fit(source, scaled, folds, conv_fits):
    """A copy with fewer epochs stops stepping in the same program; its checkpoint continues
    on the vectorized path to the longer copy's result."""
    fit_jobs, results = conv_fits
    one = results[-1]
    assert one.checkpoint.engine == "vectorized" and one.checkpoint.epochs == 1
    assert len(one.curve.train_loss) == 1
    longer = fit_jobs[0].model_copy(update={"start": one.checkpoint})
    [continued] = train(source, scaled, folds, [longer])
    assert continued.start_epoch == 1 and len(continued.curve.train_loss) == 2
    assert continued.loss == pytest.approx(results[0].loss, rel=1e-5)


def test_early_stopping_validation_and_class_weights_as_the_reference(source, scaled, folds):
    """Copies with BatchNormalization, global pooling, Dropout and a Concatenate of branches,
    a validation part, class weights, a learning-rate schedule and early stopping on val_loss:
    the same stopped epoch, validation curve and scores (Dropout draws Keras' own masks)."""
    grid = {
        "kind": ["noisy"],
        "learning_rate": [0.05],
        "decay": [True],
        "epochs": [4],
        "batch_size": [64],
        "fit__validation_split": [0.2],
        "fit__class_weight": [{"0": 1.0, "1": 2.0}],
        # No later epoch improves by 1.0: both engines stop after epoch 2 and restore epoch 1.
        "early_stopping__patience": [0],
        "early_stopping__min_delta": [1.0],
        "early_stopping__restore_best_weights": [True],
    }
    fit_jobs = vectorized_jobs(source, grid, (0, 1))
    results = train(source, scaled, folds, fit_jobs)
    assert [result.stopped_epoch for result in results] == [2, 2]
    for job, result in zip(fit_jobs, results, strict=True):
        scores, _, state = reference(source, scaled, folds, job)
        assert result.stopped_epoch == len(state.curve.train_loss)
        np.testing.assert_allclose(result.curve.val_loss, state.curve.val_loss, rtol=1e-4)
        assert result.curve.val_accuracy == state.curve.val_accuracy
        assert result.loss == pytest.approx(scores["log_loss"], rel=1e-4, abs=1e-5)


def test_copies_share_a_key_across_seeds_and_rates_and_not_across_shapes(source):
    import keras

    from tasks.model.factory import build_model, load_model_function
    from tasks.model.vectorizable import vectorized_architecture, vectorized_reason

    function = load_model_function(source)
    keys = [
        vectorized_architecture(build_model(function, arguments, PIMA_META, seed, []))
        for arguments, seed in [
            ({"learning_rate": 0.01}, 1),
            ({"learning_rate": 0.1}, 2),
            ({"filters": 3}, 1),
            ({"kind": "noisy"}, 1),
        ]
    ]
    assert keys[0] == keys[1] and len(set(keys)) == 3
    custom = load_model_function(source.model_copy(update={"function": "custom_model"}))(PIMA_META)
    assert vectorized_architecture(custom) == ""
    assert vectorized_reason(custom) == "layer 'scaled' (Scaled) is not one of Keras' own"
    subclass = type("Mine", (keras.Sequential,), {})([keras.Input((8,)), keras.layers.Dense(1)])
    assert "subclass" in vectorized_reason(subclass)


def test_planning_puts_one_architecture_in_one_task_run(source):
    from tasks.train.fast.planning import plan_groups

    grid = {"learning_rate": [0.01, 0.02], "filters": [2, 3], "epochs": [1]}
    fit_jobs = vectorized_jobs(source, grid, (0, 1, 2))
    groups = plan_groups(fit_jobs, workers=2)
    assert sorted(len(group) for group in groups) == [6, 6]
    assert all(len({job.vectorized for job in group}) == 1 for group in groups)


@pytest.fixture(scope="module")
def scaled_handle(scaled, tmp_path_factory):
    """The scaled data as a dataset handle, for the task run's own entry (run_fit_jobs)."""
    import pandas as pd

    from tasks.data.dataset import DatasetHandle

    features, labels = scaled
    columns = list("abcdefgh")
    path = tmp_path_factory.mktemp("data") / "scaled.parquet"
    pd.DataFrame(features, columns=columns).assign(outcome=labels).to_parquet(path)
    return DatasetHandle(
        name="pima", parquet_path=str(path), sha256="scaled", feature_columns=columns,
        target="outcome",
    )  # fmt: skip


def test_a_task_run_trains_its_copies_vectorized_and_falls_back_when_the_path_fails(
    source, scaled_handle, folds, monkeypatch, caplog
):
    """The flows' one entry: vectorized jobs come back as `vectorized` fits; when TensorFlow
    cannot run the path, the same jobs come back from the reference engine, and a warning says
    why."""
    from tasks.train.dispatch import run_fit_jobs

    grid = {"learning_rate": [0.01], "epochs": [1], "batch_size": [128]}
    fit_jobs = vectorized_jobs(source, grid, (1,))
    fits = run_fit_jobs(scaled_handle, list(folds.values()), fit_jobs, 7, source)
    assert [fit.engine for fit in fits] == ["vectorized"]

    def refuse(*_, **__):
        raise NotImplementedError("no vectorized form for this op")

    monkeypatch.setattr("tasks.train.vectorized.train_vectorized", refuse)
    fallen = run_fit_jobs(scaled_handle, list(folds.values()), fit_jobs, 7, source)
    assert [fit.engine for fit in fallen] == ["reference"]
    assert [fit.accuracy for fit in fallen] == [fit.accuracy for fit in fits]
    assert "vectorized path failed for 1 fit(s), reference engine instead" in caplog.text


def test_recurrent_copies_match_the_reference(source, scaled, folds):
    """An LSTM (a loop over the sequence inside each copy's step) vectorizes too."""
    grid = {
        "kind": ["recurrent"],
        "learning_rate": [0.03],
        "epochs": [1],
        "batch_size": [128],
    }
    fit_jobs = vectorized_jobs(source, grid)
    for job, result in zip(fit_jobs, train(source, scaled, folds, fit_jobs), strict=True):
        scores = reference(source, scaled, folds, job)[0]
        assert result.accuracy == scores["accuracy"]
        assert result.loss == pytest.approx(scores["log_loss"], rel=1e-4, abs=1e-5)


def test_the_refit_of_a_vectorized_combination_equals_the_reference_refit(source, scaled):
    """The refit trains where the combination's fits did: one copy on every row, the same
    trained model as the reference engine's refit (weights and optimizer state)."""
    from tasks.train.refit import refit_on_all_rows

    [combination] = combinations({"epochs": [1], "batch_size": [128]}, source)
    features, labels = scaled
    arguments = (source, features, labels, combination.model, None, PIMA_META, 5)
    vectorized = refit_on_all_rows(*arguments, combination.vectorized)
    reference = refit_on_all_rows(*arguments)
    assert int(vectorized.optimizer.iterations) == int(reference.optimizer.iterations) == 6
    for ours, theirs in zip(vectorized.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
