"""The fast engine reproduces the reference engine for functional graphs: two branches joined
by Concatenate, a skip connection through Add, and an Embedding of an integer-coded column
(x[:, i] -> Embedding -> Concatenate with the numbers), trained weights and scores alike; and
inspection names the graph part that still falls back."""

import textwrap

import keras
import numpy as np
import pytest

from tasks.data.folds import plan_folds
from tasks.model.inspection import inspect_network
from tasks.model.sources import resolve_model_reference
from tasks.records import fit_seed
from tasks.train.fast.graph import layout_of
from tasks.train.fast.trainer import train_stacked
from tasks.train.weights_cache import InitialWeights
from tests.support import PIMA_META, combinations, engines_agree, jobs

MODEL = """
import keras


def create_model(meta, kind="two_branch", optimizer="adam", rate=0.0):
    L = keras.layers
    inputs = keras.Input((meta["n_features_in_"],))
    if kind == "two_branch":
        # A bias right before BatchNormalization cancels out (tests/.../test_layers.py).
        wide = L.BatchNormalization()(L.Dense(12, activation="relu", use_bias=False)(inputs))
        deep = L.Dense(6, activation="tanh")(L.Dropout(rate)(inputs))
        hidden = L.Dense(8, activation="relu")(L.Concatenate()([wide, deep]))
    elif kind == "skip":
        first = L.Dense(8, activation="relu")(inputs)
        second = L.Dense(8)(L.Dropout(rate)(first))
        hidden = L.LayerNormalization()(L.GaussianNoise(rate)(L.Add()([first, second])))
    elif kind == "embedding":
        # Pima's first column (pregnancies, 0 to 17) as an integer code.
        codes = L.Embedding(20, 3)(inputs[:, 0])
        hidden = L.Dense(8, activation="relu")(L.Concatenate()([inputs[:, 1:], codes]))
    elif kind == "embedding_flat":
        codes = L.Flatten()(L.Embedding(20, 2)(inputs[:, :1]))
        numeric = L.BatchNormalization()(inputs[:, 1:8])
        hidden = L.Dense(8, activation="relu")(L.Concatenate()([codes, numeric]))
    model = keras.Model(inputs, L.Dense(1, activation="sigmoid")(hidden))
    chosen = {
        "adam": lambda: keras.optimizers.Adam(0.01),
        "rmsprop": lambda: keras.optimizers.RMSprop(0.01),
        "sgd": lambda: keras.optimizers.SGD(0.01, momentum=0.9),
    }[optimizer]()
    model.compile(loss="binary_crossentropy", optimizer=chosen)
    return model
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("graphs") / "graphs.py"
    path.write_text(textwrap.dedent(MODEL))
    return resolve_model_reference(f"{path}:create_model", path.parent)


@pytest.fixture(scope="module")
def folds(pima_arrays):
    return {fold.index: fold for fold in plan_folds(pima_arrays[1], 3, 7)}


# Raw features: the embedded column keeps its integer codes.
AGREEMENT_GRID = {
    "kind": ["two_branch", "skip", "embedding", "embedding_flat"],
    "optimizer": ["adam"],
    "epochs": [2],
    "batch_size": [32],
}


@pytest.fixture(scope="module")
def agreed(source, pima_arrays, folds):
    """(combinations, jobs, results) of AGREEMENT_GRID, each fit checked against the
    reference engine's (tests.support.engines_agree)."""
    return engines_agree(pima_arrays, folds, source, AGREEMENT_GRID, (0,))


def test_branches_skip_connections_and_embeddings_match_the_reference(agreed):
    checked, _, _ = agreed
    assert all(c.network.graph for c in checked)
    assert len({c.network.architecture for c in checked}) == 4


def test_trained_graph_weights_are_the_reference_weights(source, pima_arrays, folds):
    """The flat vector back in Keras' order: embeddings, BatchNormalization's moving averages,
    kernels and biases of the same fit."""
    from tasks.train.reference import train_keras_model

    features, labels = pima_arrays
    checked = combinations(
        {"kind": ["embedding_flat"], "optimizer": ["rmsprop"], "epochs": [2], "batch_size": [32]},
        source,
    )
    [job] = jobs(checked, (1,))
    [result] = train_stacked(features, labels, folds, [job], 7, InitialWeights(source, PIMA_META))
    fast = layout_of(job.network).unflatten(result.checkpoint.arrays["params"])
    fold = folds[1]
    model = train_keras_model(
        source,
        job.model,
        PIMA_META,
        features[fold.train],
        labels[fold.train],
        fit_seed(7, job.model, job.fold),
    )
    reference = model.get_weights()
    assert [w.shape for w in fast] == [w.shape for w in reference]
    for mine, theirs in zip(fast, reference, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=2e-4, atol=2e-5)


def _graph_with_every_weighted_layer():
    """Embedding, BatchNormalization (scale off), LayerNormalization, noise and merges."""
    L = keras.layers
    inputs = keras.Input((8,))
    codes = L.Flatten()(L.Embedding(20, 2)(inputs[:, :1]))
    numeric = L.BatchNormalization(scale=False)(L.GaussianNoise(0.1)(inputs[:, 1:]))
    hidden = L.Dense(6, activation="relu")(L.Concatenate()([codes, numeric]))
    hidden = L.LayerNormalization()(L.Add()([hidden, L.Dense(6)(L.Dropout(0.2)(hidden))]))
    model = keras.Model(inputs, L.Dense(1, activation="sigmoid")(L.Activation("tanh")(hidden)))
    model.compile(loss="binary_crossentropy", optimizer="adam")
    return model


def test_a_graph_gets_an_initial_weight_recipe_equal_to_real_builds():
    """No real build per seed for the new layers: the recipe replays Keras' seed draws."""
    from tasks.model.factory import build_model
    from tasks.model.initial_weights import recipe_of

    meta = {"n_features_in_": 8}
    log: list = []
    model = build_model(_graph_with_every_weighted_layer, {}, meta, 3, log)
    recipe = recipe_of(model, log, 3)
    assert recipe is not None
    for seed in (0, 7, 2**31 - 1):
        built = build_model(_graph_with_every_weighted_layer, {}, meta, seed).get_weights()
        replayed = recipe.weights(seed)
        assert len(replayed) == len(built)
        for mine, theirs in zip(replayed, built, strict=True):
            np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("multiply", "layer 'joined' (Multiply) is not supported by the fast engine"),
        ("mask_zero", "layer 'codes' (Embedding): mask_zero is not supported"),
        ("clipnorm", "layer 'codes' (Embedding) with clipnorm is not supported"),
        ("adamax", "layer 'codes' (Embedding) with optimizer Adamax is not supported"),
        ("slice_step", "(GetItem): only x[:, i] and x[:, a:b]"),
        ("linear_output", "a graph whose output is not a Dense layer is not supported"),
    ],
)
def test_inspection_names_the_graph_part_that_falls_back(change, reason):
    L = keras.layers
    inputs = keras.Input((8,))
    numeric = inputs[:, 1::2] if change == "slice_step" else inputs[:, 1:]
    codes = L.Embedding(20, 2, mask_zero=change == "mask_zero", name="codes")(inputs[:, 0])
    merge = L.Multiply if change == "multiply" else L.Concatenate
    hidden = merge(name="joined")([numeric, codes] if change != "multiply" else [codes, codes])
    output = L.Dense(1, activation="sigmoid")(L.Dense(4)(hidden))
    if change == "linear_output":
        output = L.Activation("sigmoid")(L.Dense(1)(hidden))
    model = keras.Model(inputs, output)
    optimizer = {
        "clipnorm": keras.optimizers.Adam(clipnorm=1.0),
        "adamax": keras.optimizers.Adamax(),
    }.get(change, "adam")
    model.compile(loss="binary_crossentropy", optimizer=optimizer)
    found = inspect_network(model, "binary")
    assert isinstance(found, str) and reason in found, found


def test_a_graph_is_its_own_architecture_and_dropout_rates_are_per_model():
    def two_branch(rate):
        L = keras.layers
        inputs = keras.Input((8,))
        wide = L.Dense(4, activation="relu")(L.Dropout(rate)(inputs))
        hidden = L.Concatenate()([wide, L.Dense(3, activation="relu")(inputs)])
        model = keras.Model(inputs, L.Dense(1, activation="sigmoid")(hidden))
        model.compile(loss="binary_crossentropy", optimizer="adam")
        return inspect_network(model, "binary")

    low, high = two_branch(0.1), two_branch(0.4)
    assert (low.dropout, high.dropout) == ((0.1,), (0.4,))
    assert low.architecture == high.architecture  # a grid over the rate shares one program
    assert low.sizes == (8, 4, 3, 1) and [n.kind for n in low.graph].count("dense") == 3


def test_an_embedding_code_outside_its_table_is_refused_before_training():
    """Keras' fit fails on such a code; a compiled gather would clamp it without a word."""
    L = keras.layers
    inputs = keras.Input((3,))
    codes = L.Flatten()(L.Embedding(4, 2)(inputs[:, 2:3]))
    model = keras.Model(inputs, L.Dense(1, activation="sigmoid")(codes))
    model.compile(loss="binary_crossentropy", optimizer="adam")
    layout = layout_of(inspect_network(model, "binary"))
    features = np.array([[0.5, 9.0, 3.0], [1.0, 2.0, 0.0]], dtype=np.float32)
    layout.check_codes(features)  # codes 3 and 0 (other columns are not looked up)
    features[1, 2] = 4.0
    with pytest.raises(ValueError, match=r"input_dim 4\) reads column 2 .* row 1 holds 4\.0"):
        layout.check_codes(features)


def test_dropout_and_noise_on_a_branch_act_in_training_only(agreed, source, pima_arrays, folds):
    """The skip model's rate 0 fit is the reference engine's (AGREEMENT_GRID); rate 0.5 drops
    units and adds noise. Dropout's rate is per model; GaussianNoise's stddev is
    architecture, as in a chain."""
    features, labels = pima_arrays
    checked, _, results = agreed
    [plain] = [r for c, r in zip(checked, results, strict=True) if c.routed["kind"] == "skip"]
    [noisy] = combinations({**AGREEMENT_GRID, "kind": ["skip"], "rate": [0.5]}, source)
    assert noisy.network.dropout == (0.5,)
    [fit] = train_stacked(
        features, labels, folds, jobs([noisy], (0,)), 7, InitialWeights(source, PIMA_META)
    )
    assert np.isfinite(fit.loss) and fit.loss != plain.loss
