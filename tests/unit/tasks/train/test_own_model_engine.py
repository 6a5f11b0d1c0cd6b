"""The fast engine reproduces the reference engine for models it finds by inspection: the
tutorial's own create_model, non-default learning rates and optimizer settings, SGD with
momentum, layers without biases, per-layer activations, fit__shuffle and validation rows."""

import textwrap

import pytest

from tasks.data.folds import plan_folds
from tasks.model.sources import resolve_model_reference
from tests.support import TUTORIAL, engines_agree


@pytest.fixture(scope="module")
def folds(pima_arrays):
    return {fold.index: fold for fold in plan_folds(pima_arrays[1], 3, 7)}


def assert_engines_agree(pima_arrays, folds, source, grid, fold_indices=(0, 1)):
    """tests.support.engines_agree on fold(s) (0, 1) of this file's folds."""
    return engines_agree(pima_arrays, folds, source, grid, fold_indices)


def test_the_tutorials_create_model_trains_the_same_on_both_engines(pima_arrays, folds):
    # 512 training rows: batch 10 leaves a partial last batch, 64 does not; raw features, as
    # the tutorial trains.
    grid = {
        "optimizer": ["rmsprop", "adam", "sgd"],
        "init": ["uniform", "glorot_uniform"],
        "epochs": [2],
        "batch_size": [10, 64],
    }
    assert_engines_agree(pima_arrays, folds, TUTORIAL, grid, fold_indices=(2,))


def test_a_non_default_learning_rate_is_reproduced(pima_arrays, folds):
    grid = {
        "optimizer": ["adam", "rmsprop", "sgd"],
        "learning_rate": [0.02],
        "preprocess__scaling": ["standard"],
        "epochs": [2],
        "batch_size": [32],
    }
    assert_engines_agree(pima_arrays, folds, resolve_model_reference("mlp", "."), grid)


def test_optimizer_settings_momentum_biases_and_activations(pima_arrays, folds, tmp_path):
    path = tmp_path / "custom.py"
    path.write_text(
        textwrap.dedent(
            """
            import keras

            def create_model(meta, kind="adam"):
                optimizer = {
                    "adam": keras.optimizers.Adam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-5),
                    "rmsprop": keras.optimizers.RMSprop(0.005, rho=0.8, epsilon=1e-6),
                    "momentum": keras.optimizers.SGD(0.05, momentum=0.9),
                    "nesterov": keras.optimizers.SGD(0.05, momentum=0.8, nesterov=True),
                }[kind]
                model = keras.Sequential([
                    keras.Input((meta["n_features_in_"],)),
                    keras.layers.Dense(6, activation="tanh", use_bias=False),
                    keras.layers.Dense(4, activation="elu", bias_initializer="ones"),
                    keras.layers.Dense(1, activation="sigmoid"),
                ])
                model.compile(loss=keras.losses.BinaryCrossentropy(), optimizer=optimizer)
                return model
            """
        )
    )
    source = resolve_model_reference(f"{path}:create_model", tmp_path)
    grid = {
        "kind": ["adam", "rmsprop", "momentum", "nesterov"],
        "preprocess__scaling": ["standard"],
        "epochs": [2],
        "batch_size": [16],
    }
    assert_engines_agree(pima_arrays, folds, source, grid)


def test_unshuffled_batches_and_validation_rows_match(pima_arrays, folds):
    grid = {
        "optimizer": ["adam"],
        "fit__shuffle": [False, True],
        "fit__validation_split": [0.0, 0.25],
        "preprocess__scaling": ["standard"],
        "epochs": [2],
        "batch_size": [20],
    }
    assert_engines_agree(pima_arrays, folds, TUTORIAL, grid, fold_indices=(0,))


def test_validation_rows_come_from_the_training_rows_only(pima_arrays, folds):
    from tasks.records import split_validation

    fold = folds[0]
    kept, held = split_validation(fold.train, 0.25, seed=3)
    assert sorted(kept + held) == sorted(fold.train)
    assert not set(held) & set(fold.test) and len(held) == round(len(fold.train) * 0.25)
    assert split_validation(fold.train, 0.25, seed=3) == (kept, held)
    labels = pima_arrays[1]
    kept, held = split_validation(fold.train, 0.25, seed=3, labels=labels)
    assert sorted(kept + held) == sorted(fold.train) and len(held) == 128
    share = labels[fold.train].mean()
    assert abs(labels[held].mean() - share) < 1 / 128 and abs(labels[kept].mean() - share) < 1 / 384
