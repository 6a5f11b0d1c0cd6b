"""Traced Keras models reused across the reference engine's fits (tasks.train.traced_models):
bit for bit the fresh model's results; never for a model with parts of the user's own, nor for
a program that draws from TensorFlow's stateful random ops."""

import textwrap

import keras
import numpy as np
import pytest

from tasks.data.folds import plan_folds
from tasks.model.sources import resolve_model_reference
from tasks.records import fit_seed
from tasks.train import traced_models
from tasks.train.reference import fit_and_score, score_fold_from
from tasks.train.traced_models import IDLE, has_stateful_random_ops, model_structure
from tests.support import PIMA_META, params

# Batch normalization, dropout (its seed state), a learning-rate schedule, Adam's slots.
KERAS_OWN = """
import keras

def create_model(meta, units=12, dropout=0.3):
    model = keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Dropout(dropout),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=5, decay_rate=0.9)
    model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(schedule),
                  metrics=["accuracy"])
    return model
"""

NOISY_LAYER = """
import keras
import tensorflow as tf

class Noise(keras.layers.Layer):
    def call(self, inputs, training=False):
        return inputs + tf.random.uniform(tf.shape(inputs)) if training else inputs

def create_model(meta):
    model = keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        Noise(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(loss="binary_crossentropy", optimizer="adam")
    return model
"""


def source_of(tmp_path, text, name="own.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return resolve_model_reference(f"{path}:create_model", tmp_path)


@pytest.fixture(autouse=True)
def no_idle_models():
    IDLE.clear()
    yield
    IDLE.clear()


def idle_models():
    return [model for models in IDLE.models.values() for model in models]


def test_a_reused_model_gives_bit_for_bit_the_fresh_models_results(tmp_path, pima_arrays):
    features, labels = pima_arrays
    source = source_of(tmp_path, KERAS_OWN)
    folds = plan_folds(labels, 3, 7)
    model = params(
        source, epochs=3, batch_size=64, fit__validation_split=0.2, early_stopping__patience=1
    )

    def fit(fold):
        return fit_and_score(
            source, features, labels, folds[fold], model, PIMA_META, fit_seed(7, model, fold)
        )

    fit(0)
    (traced,) = idle_models()
    reused = fit(1)
    assert idle_models() == [traced]  # the fold-0 model trained fold 1 and came back
    IDLE.clear()
    fresh = fit(1)
    assert idle_models() != [traced]
    assert reused[:2] == fresh[:2]  # test and train scores
    assert reused[2].arrays.keys() == fresh[2].arrays.keys()
    for name, array in fresh[2].arrays.items():
        assert np.array_equal(reused[2].arrays[name], array), name


def test_a_fit_continued_from_a_checkpoint_on_a_reused_model_is_the_fresh_ones(
    tmp_path, pima_arrays
):
    features, labels = pima_arrays
    source = source_of(tmp_path, KERAS_OWN)
    fold = plan_folds(labels, 3, 7)[2]
    short, longer = params(source, epochs=2, batch_size=64), params(source, epochs=4, batch_size=64)
    seed = fit_seed(7, short, fold.index)
    _, start = score_fold_from(source, features, labels, fold, short, PIMA_META, seed)
    assert idle_models()
    reused = score_fold_from(source, features, labels, fold, longer, PIMA_META, seed, start)
    IDLE.clear()
    fresh = score_fold_from(source, features, labels, fold, longer, PIMA_META, seed, start)
    assert reused[0] == fresh[0]
    for name, array in fresh[1].arrays.items():
        assert np.array_equal(reused[1].arrays[name], array), name


def build(source, seed, **arguments):
    from tasks.model.factory import model_for_fit

    return model_for_fit(source, params(source, **arguments), PIMA_META, seed)


def test_the_structure_is_the_same_for_any_seed_and_differs_with_the_arguments(tmp_path):
    source = source_of(tmp_path, KERAS_OWN)
    structure = model_structure(build(source, 1))
    assert structure is not None
    assert model_structure(build(source, 2)) == structure
    assert model_structure(build(source, 1, units=13)) != structure
    assert model_structure(build(source, 1, dropout=0.5)) != structure


@pytest.mark.parametrize(
    "part",
    [
        "keras.layers.Lambda(lambda x: x * 2.0)",
        "keras.layers.Dense(4, activation=lambda x: x * 2.0)",
        "keras.layers.Dense(4, kernel_regularizer=Penalty())",
        "Twice()",
    ],
)
def test_models_with_a_part_of_the_users_own_are_never_reused(tmp_path, part):
    text = f"""
    import keras

    class Twice(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    class Penalty(keras.regularizers.Regularizer):
        def __call__(self, weights):
            return 0.01 * keras.ops.sum(weights)

    def create_model(meta):
        model = keras.Sequential([
            keras.Input(shape=(meta["n_features_in_"],)),
            {part},
            keras.layers.Dense(1, activation="sigmoid"),
        ])
        model.compile(loss="binary_crossentropy", optimizer="adam")
        return model
    """
    assert model_structure(build(source_of(tmp_path, text), 1)) is None


def test_a_users_loss_function_is_never_reused(tmp_path):
    text = KERAS_OWN.replace('loss="binary_crossentropy"', "loss=own_loss").replace(
        "def create_model",
        "def own_loss(y, p):\n    return keras.losses.binary_crossentropy(y, p)\n\n"
        "def create_model",
    )
    assert model_structure(build(source_of(tmp_path, text), 1)) is None


def test_a_program_with_a_stateful_random_op_is_found_and_never_reused(
    tmp_path, pima_arrays, monkeypatch
):
    features, labels = pima_arrays
    noisy, plain = source_of(tmp_path, NOISY_LAYER, "noisy.py"), source_of(tmp_path, KERAS_OWN)
    fold = plan_folds(labels, 3, 7)[0]
    fitted = []
    for source in (noisy, plain):
        model = build(source, 1)
        model.fit(features[fold.train], labels[fold.train], epochs=1, verbose=0)
        model.predict(features[:10], verbose=0)
        fitted.append(model)
    assert has_stateful_random_ops(fitted[0]) and not has_stateful_random_ops(fitted[1])
    # Were the noisy layer Keras' own, its program would still not be reused.
    monkeypatch.setattr(traced_models, "model_structure", lambda model: "as if Keras' own")
    model = params(noisy, epochs=1)
    fit_and_score(noisy, features, labels, fold, model, PIMA_META, 1)
    assert idle_models() == [] and "as if Keras' own" in IDLE.unsafe


def test_idle_models_are_bounded_in_number_and_bytes(monkeypatch):
    monkeypatch.setattr(traced_models, "MAX_IDLE", 2)
    models = [keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]) for _ in range(3)]
    for number, model in enumerate(models):
        IDLE.give_back(f"structure {number}", model)
    assert idle_models() == models[1:]  # the least recently used went first

    wide = keras.Sequential([keras.Input((100,)), keras.layers.Dense(100)])
    assert traced_models.variable_bytes(wide) == (100 * 100 + 100) * 4
    monkeypatch.setattr(traced_models, "MAX_IDLE_BYTES", 30_000)
    IDLE.give_back("wide", wide)
    assert idle_models() == []  # 40,400 bytes: alone over the bound, nothing is kept
