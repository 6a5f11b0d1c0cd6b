"""The fast engine reproduces the reference engine for what tabular models add to a Dense
stack: BatchNormalization (per model batch statistics, moving averages, inference mode),
LayerNormalization, Activation layers, and Keras' learning-rate schedules, per (combination,
fold); and inspection names what still falls back."""

import textwrap

import keras
import numpy as np
import pytest

from tasks.data.folds import plan_folds
from tasks.data.preprocess import fold_features
from tasks.model.inspection import inspect_network
from tasks.model.sources import resolve_model_reference
from tasks.records import fit_seed
from tasks.train.fast.network import Layout
from tasks.train.fast.trainer import train_stacked
from tasks.train.weights_cache import InitialWeights
from tests.support import PIMA_META, combinations, engines_agree, jobs, reference_scores

MODEL = """
import keras

S = keras.optimizers.schedules
SCHEDULES = {
    "constant": lambda: 0.01,
    "exponential": lambda: S.ExponentialDecay(0.02, decay_steps=8, decay_rate=0.5),
    "inverse_time": lambda: S.InverseTimeDecay(0.02, decay_steps=4, decay_rate=0.5, staircase=True),
    "piecewise": lambda: S.PiecewiseConstantDecay([10, 20], [0.03, 0.01, 0.003]),
    "polynomial_cycle": lambda: S.PolynomialDecay(0.03, 12, 0.001, power=2.0, cycle=True),
    "cosine_warmup": lambda: S.CosineDecay(
        0.0, decay_steps=20, alpha=0.1, warmup_target=0.03, warmup_steps=8
    ),
}


def create_model(meta, kind="bn", schedule="constant", optimizer="adam"):
    L = keras.layers
    body = {
        # The goal model: Dense -> BatchNormalization -> Activation -> Dense. A bias right
        # before BatchNormalization cancels out: its gradient is rounding noise, which Adam
        # scales up to full steps, so two engines agree on it only statistically.
        "bn": [
            L.Dense(12, use_bias=False), L.BatchNormalization(), L.Activation("relu"),
            L.Dense(8, activation="relu"),
            L.BatchNormalization(momentum=0.9, epsilon=0.01, center=False),
        ],
        "bn_input": [
            L.BatchNormalization(scale=False), L.Dense(12, activation="tanh"),
            L.BatchNormalization(), L.Dropout(0.0),
        ],
        "layer_norm": [
            L.Dense(12), L.LayerNormalization(), L.Activation("elu"),
            L.Dense(6, activation="relu"), L.LayerNormalization(epsilon=0.1, center=False),
        ],
        "activation": [L.Dense(12), L.Activation("tanh"), L.Dense(1), L.Activation("sigmoid")],
        "noise": [
            L.GaussianNoise(0.3), L.Dense(12, activation="relu"), L.GaussianDropout(0.3),
            L.Dense(8, activation="relu"),
        ],
        "noise_off": [
            L.GaussianNoise(0.0), L.Dense(12, activation="relu"), L.GaussianDropout(0.0),
            L.Dense(8, activation="relu"),
        ],
        "conv": [L.Reshape((8, 1), name="rows"), L.Conv1D(2, 3), L.Flatten()],
    }[kind]
    output = [] if kind == "activation" else [L.Dense(1, activation="sigmoid")]
    model = keras.Sequential([keras.Input((meta["n_features_in_"],)), *body, *output])
    rate = SCHEDULES[schedule]()
    chosen = {
        "adam": lambda: keras.optimizers.Adam(rate),
        "adamw": lambda: keras.optimizers.AdamW(rate, weight_decay=0.05),
        "sgd": lambda: keras.optimizers.SGD(rate, momentum=0.9),
        "rmsprop": lambda: keras.optimizers.RMSprop(rate),
    }[optimizer]()
    model.compile(loss="binary_crossentropy", optimizer=chosen)
    return model
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("layers") / "layers.py"
    path.write_text(textwrap.dedent(MODEL))
    return resolve_model_reference(f"{path}:create_model", path.parent)


@pytest.fixture(scope="module")
def folds(pima_arrays):
    return {fold.index: fold for fold in plan_folds(pima_arrays[1], 3, 7)}


def assert_engines_agree(pima_arrays, folds, source, grid, fold_indices=(0,)):
    """tests.support.engines_agree on fold(s) (0,) of this file's folds."""
    return engines_agree(pima_arrays, folds, source, grid, fold_indices)


def test_batch_normalization_stacks_match_the_reference(source, pima_arrays, folds):
    # Batch 10 leaves a 2-row last batch (512 training rows): its statistics are over its own
    # real rows only. Raw features (BatchNormalization on them); two optimizers in a program.
    grid = {
        "kind": ["bn", "bn_input"],
        "optimizer": ["adam", "sgd"],
        "epochs": [1],
        "batch_size": [10],
    }
    assert_engines_agree(pima_arrays, folds, source, grid)


def test_batch_normalization_moving_averages_are_the_reference_weights(source, pima_arrays, folds):
    """The trained flat vector, back in Keras' order, holds Keras' moving mean and variance
    (and gamma, beta, kernels) of the same fit."""
    from tasks.train.reference import train_keras_model

    features, labels = pima_arrays
    checked = combinations({"kind": ["bn"], "epochs": [2], "batch_size": [32]}, source)
    [job] = jobs(checked, (1,))
    [result] = train_stacked(features, labels, folds, [job], 7, InitialWeights(source, PIMA_META))
    fast = Layout.of(job.network).unflatten(result.checkpoint.arrays["params"])
    seed = fit_seed(7, job.model, job.fold)
    fold = folds[1]
    train_labels = labels[fold.train]
    model = train_keras_model(
        source, job.model, PIMA_META, features[fold.train], train_labels, seed
    )
    reference = model.get_weights()
    assert [w.shape for w in fast] == [w.shape for w in reference]
    for mine, theirs in zip(fast, reference, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=2e-4, atol=2e-5)


def test_layer_normalization_activation_and_noise_free_layers_match_the_reference(
    source, pima_arrays, folds
):
    grid = {
        "kind": ["layer_norm", "activation", "noise_off"],
        "optimizer": ["rmsprop"],
        "preprocess__scaling": ["standard"],
        "epochs": [2],
        "batch_size": [32],
    }
    assert_engines_agree(pima_arrays, folds, source, grid)


def test_learning_rate_schedules_match_the_reference(source, pima_arrays, folds):
    # 512 rows / batch 64 = 8 steps per epoch, 4 epochs = 32 steps: past each schedule's
    # boundaries, decay steps and warm-up.
    grid = {
        "kind": ["bn"],
        "schedule": [
            "exponential", "inverse_time", "piecewise", "polynomial_cycle", "cosine_warmup"
        ],
        "optimizer": ["adamw"],
        "preprocess__scaling": ["standard"],
        "epochs": [4],
        "batch_size": [64],
    }  # fmt: skip
    checked, _, _ = assert_engines_agree(pima_arrays, folds, source, grid)
    # The schedule is per model, not architecture: one program serves them all.
    assert len({c.network.architecture for c in checked}) == 1


def test_a_schedule_fit_continued_from_a_checkpoint_equals_the_uninterrupted_fit(
    source, pima_arrays, folds
):
    """The schedule reads Keras' iterations, which a checkpoint carries."""
    features, labels = pima_arrays
    grid = {"kind": ["bn"], "schedule": ["cosine_warmup"], "epochs": [2], "batch_size": [64]}
    [combination] = combinations(grid, source)
    [whole] = jobs([combination], (0,))
    initial = InitialWeights(source, PIMA_META)
    [uninterrupted] = train_stacked(features, labels, folds, [whole], 7, initial)
    half = whole.model_copy(update={"model": whole.model.model_copy(update={"epochs": 1})})
    [first] = train_stacked(features, labels, folds, [half], 7, initial)
    rest = whole.model_copy(update={"start": first.checkpoint})
    [continued] = train_stacked(features, labels, folds, [rest], 7, initial)
    np.testing.assert_array_equal(
        continued.checkpoint.arrays["params"], uninterrupted.checkpoint.arrays["params"]
    )


def _model(*layers, optimizer="adam"):
    model = keras.Sequential([keras.Input((8,)), *layers])
    model.compile(loss="binary_crossentropy", optimizer=optimizer)
    return model


@pytest.mark.parametrize(
    ("layers", "reason"),
    [
        (
            lambda L: [
                L.Dense(4),
                L.BatchNormalization(renorm=True, name="bn"),
                L.Dense(1, "sigmoid"),
            ],
            "layer 'bn' (BatchNormalization): renorm is not supported by the fast engine",
        ),
        (
            lambda L: [
                L.Dense(4),
                L.BatchNormalization(synchronized=True, name="bn"),
                L.Dense(1, "sigmoid"),
            ],
            "layer 'bn' (BatchNormalization): synchronized is not supported by the fast engine",
        ),
        (
            lambda L: [
                L.Dense(4),
                L.BatchNormalization(gamma_regularizer="l2", name="bn"),
                L.Dense(1, "sigmoid"),
            ],
            "layer 'bn' (BatchNormalization): gamma_regularizer is not supported",
        ),
        (
            lambda L: [L.Dense(4), L.Activation("softmax", name="bn"), L.Dense(1, "sigmoid")],
            "layer 'bn' (Activation): activation 'softmax' is not supported",
        ),
        (
            lambda L: [
                L.Dense(4),
                L.Dropout(0.1),
                L.BatchNormalization(name="bn"),
                L.Dense(1, "sigmoid"),
            ],
            "layer 'bn' (BatchNormalization): a Dropout right before it is not supported",
        ),
        (
            lambda L: [L.Dense(1, "sigmoid"), L.BatchNormalization(name="bn")],
            "layer 'bn' (BatchNormalization) after the output layer is not supported",
        ),
    ],
)
def test_inspection_names_the_layer_setting_that_falls_back(layers, reason):
    built = layers(keras.layers)
    assert inspect_network(_model(*built), "binary").startswith(reason)


def test_inspection_refuses_a_custom_schedule_and_reads_a_keras_one():
    class Halving(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return 0.01 / (1.0 + step)

    dense = [keras.layers.Dense(4), keras.layers.Dense(1, activation="sigmoid")]
    refused = inspect_network(_model(*dense, optimizer=keras.optimizers.Adam(Halving())), "binary")
    assert refused == "learning-rate schedule Halving is not supported by the fast engine"
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    dense = [keras.layers.Dense(4), keras.layers.Dense(1, activation="sigmoid")]
    network = inspect_network(_model(*dense, optimizer=keras.optimizers.SGD(schedule)), "binary")
    assert "ExponentialDecay" in network.schedule and network.settings["learning_rate"] == 0.1


def test_the_engine_line_names_the_layer_that_falls_back(source):
    from tasks.model.factory import engine_plan_lines

    checked = combinations(
        {"kind": ["conv", "bn"], "schedule": ["constant", "cosine_warmup"]}, source
    )
    assert [c.network is None for c in checked] == [True, True, False, False]
    assert engine_plan_lines(checked) == [
        "vectorized path: layer 'rows' (Reshape) is not supported by the fast engine "
        "(2 combination(s))"
    ]


def test_gaussian_draws_are_standard_normal_fresh_per_step_and_layer():
    import tensorflow as tf

    from tasks.train.fast.network import dropout_uniform, standard_normal

    seeds, steps = tf.constant([3, 99], tf.int32), tf.constant([0.0, 17.0])

    def normals(steps, key):
        first = dropout_uniform(seeds, steps, key, 64, 200)
        return standard_normal(first, dropout_uniform(seeds, steps, key + 1, 64, 200)).numpy()

    drawn = normals(steps, 4096)
    assert np.isfinite(drawn).all()
    assert np.abs(drawn.mean(axis=(1, 2))).max() < 0.03  # 12,800 draws per model
    assert np.abs(drawn.std(axis=(1, 2)) - 1).max() < 0.03
    assert np.abs((np.abs(drawn) < 1).mean() - 0.6827) < 0.015
    for other in (normals(steps + 1, 4096), normals(steps, 4098)):
        assert abs(np.corrcoef(other.ravel(), drawn.ravel())[0, 1]) < 0.03


def test_gaussian_noise_and_dropout_agree_with_the_reference_statistically(
    source, pima_arrays, folds
):
    """Noise draws differ between the engines (seeded per fit either way): each fast mean
    over the folds lies within the larger fold std of the reference mean."""
    features, labels = pima_arrays
    grid = {
        "kind": ["noise"],
        "optimizer": ["adam"],
        "preprocess__scaling": ["standard"],
        "epochs": [5],
        "batch_size": [32],
    }
    checked = combinations(grid, source)
    assert checked[0].network.between[0][0].kind == "gaussian_noise"
    fast_jobs = jobs(checked, (0, 1, 2))
    results = train_stacked(
        features, labels, folds, fast_jobs, 7, InitialWeights(source, PIMA_META)
    )
    fast = {"accuracy": [], "log_loss": []}
    reference = {"accuracy": [], "log_loss": []}
    for job, result in zip(fast_jobs, results, strict=True):
        seed = fit_seed(7, job.model, job.fold)
        view = fold_features(features, folds[job.fold].train, job.model, ())
        expected = reference_scores(view, labels, folds[job.fold], job.model, seed, source=source)
        for metric in fast:
            fast[metric].append(result.scores[metric])
            reference[metric].append(expected[metric])
    for metric in fast:
        gap = abs(np.mean(fast[metric]) - np.mean(reference[metric]))
        assert gap <= max(np.std(fast[metric]), np.std(reference[metric])), metric
    assert fast["log_loss"] != reference["log_loss"]  # other draws: not the same fits
