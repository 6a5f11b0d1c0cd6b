"""Checks of a user's model function before any training, and what inspection reads off the
built model: a Dense stack with its exact settings, or the feature that needs the reference
engine."""

import textwrap

import keras
import pytest

from tasks.errors import ConfigError
from tasks.model.factory import model_meta
from tasks.model.inspection import check_model, inspect_network
from tasks.model.sources import resolve_model_reference
from tests.support import PIMA_META, TUTORIAL, combinations


def model_file(tmp_path, body):
    path = tmp_path / "user_model.py"
    path.write_text("import keras\n" + textwrap.dedent(body))
    return resolve_model_reference(f"{path}:create_model", tmp_path)


def dense_chain(*layers, optimizer="rmsprop", loss="binary_crossentropy"):
    model = keras.Sequential([keras.Input(shape=(8,)), *layers])
    model.compile(loss=loss, optimizer=optimizer)
    return model


def test_the_tutorials_model_is_a_dense_stack_with_keras_defaults():
    [checked] = combinations({"optimizer": ["rmsprop"]}, TUTORIAL)
    network = checked.network
    assert network.sizes == (8, 12, 8, 1)
    assert network.activations == ("relu", "relu", "sigmoid")
    assert network.biases == (True, True, True)
    assert network.optimizer == "rmsprop"
    assert network.settings == pytest.approx({"learning_rate": 0.001, "rho": 0.9, "epsilon": 1e-7})


def test_exact_optimizer_settings_widths_activations_and_biases_are_read():
    model = dense_chain(
        keras.layers.Dense(5, activation="tanh", use_bias=False),
        keras.layers.Dense(3, activation="elu"),
        keras.layers.Dense(1, activation="sigmoid"),
        optimizer=keras.optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-5),
    )
    network = inspect_network(model, "binary")
    assert (network.sizes, network.activations) == ((8, 5, 3, 1), ("tanh", "elu", "sigmoid"))
    assert network.biases == (False, True, True)
    assert network.optimizer == "adam"
    assert network.settings == pytest.approx(
        {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-5}
    )
    sgd = dense_chain(
        keras.layers.Dense(1, activation="sigmoid"),
        optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
    )
    assert inspect_network(sgd, "binary").settings == pytest.approx(
        {"learning_rate": 0.05, "momentum": 0.9, "nesterov": 1.0}
    )


def test_a_functional_dense_chain_is_recognised():
    inputs = keras.Input(shape=(8,))
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile(loss="binary_crossentropy", optimizer="sgd")
    assert inspect_network(model, "binary").sizes == (8, 4, 1)


def out():
    return keras.layers.Dense(1, activation="sigmoid")


@pytest.mark.parametrize(
    "build, reason",
    [
        (
            lambda: dense_chain(
                keras.layers.Dense(4), keras.layers.AlphaDropout(0.2, name="noise"), out()
            ),
            "layer 'noise' (AlphaDropout) is not supported by the fast engine",
        ),
        (
            lambda: dense_chain(
                keras.layers.Dense(4),
                keras.layers.Dropout(0.2, noise_shape=(None, 1), name="dropout"),
                out(),
            ),
            "layer 'dropout' (Dropout): noise_shape is not supported",
        ),
        (
            lambda: dense_chain(
                keras.layers.Dense(4),
                keras.layers.Dropout(0.2),
                keras.layers.Dropout(0.1, name="again"),
                out(),
            ),
            "layer 'again' (Dropout): two Dropout layers in a row",
        ),
        (
            lambda: dense_chain(keras.layers.Dense(4), out(), keras.layers.Dropout(0.2)),
            "a Dropout after the output layer",
        ),
        (
            lambda: dense_chain(keras.layers.BatchNormalization(renorm=True, name="bn"), out()),
            "layer 'bn' (BatchNormalization): renorm is not supported",
        ),
        (
            lambda: dense_chain(
                keras.layers.Reshape((8, 1)),
                keras.layers.Conv1D(2, 3),
                keras.layers.Flatten(),
                out(),
            ),
            "(Reshape) is not supported",
        ),
        (
            lambda: dense_chain(
                keras.layers.Dense(
                    4, kernel_regularizer=keras.regularizers.OrthogonalRegularizer(), name="reg"
                ),
                out(),
            ),
            "layer 'reg' (Dense): kernel_regularizer OrthogonalRegularizer is not supported",
        ),
        (
            lambda: dense_chain(keras.layers.Dense(4, activation=keras.ops.relu6), out()),
            "activation",
        ),
        (
            lambda: dense_chain(out(), optimizer=keras.optimizers.Adam(use_ema=True)),
            "optimizer setting use_ema=True",
        ),
        (
            lambda: dense_chain(
                out(), optimizer=keras.optimizers.RMSprop(gradient_accumulation_steps=2)
            ),
            "optimizer setting gradient_accumulation_steps=2",
        ),
        (
            lambda: dense_chain(out(), optimizer="ftrl"),
            "optimizer Ftrl is not supported",
        ),
        (
            lambda: dense_chain(out(), optimizer=keras.optimizers.SGD(loss_scale_factor=2.0)),
            "optimizer setting loss_scale_factor=2.0",
        ),
        (
            lambda: dense_chain(
                out(),
                optimizer=keras.optimizers.SGD(keras.optimizers.schedules.LearningRateSchedule()),
            ),
            "learning-rate schedule LearningRateSchedule is not supported",
        ),
        (
            lambda: dense_chain(out(), loss=keras.losses.BinaryCrossentropy(label_smoothing=0.1)),
            "label_smoothing",
        ),
        (lambda: dense_chain(out(), loss="hinge"), "loss 'hinge' is not supported"),
    ],
)
def test_each_unsupported_feature_is_named(build, reason):
    result = inspect_network(build(), "binary")
    assert isinstance(result, str) and reason in result


def test_dropout_rates_are_read_per_dense_layer_input_and_positions_are_architecture():
    def network(first, second):
        return inspect_network(
            dense_chain(
                keras.layers.Dropout(first),
                keras.layers.Dense(4, activation="relu"),
                keras.layers.Dense(3, activation="relu"),
                keras.layers.Dropout(second),
                out(),
            ),
            "binary",
        )

    low, high = network(0.1, 0.0), network(0.3, 0.5)
    assert (low.dropout, high.dropout) == ((0.1, None, 0.0), (0.3, None, 0.5))
    assert low.dropout_layers == (True, False, True)
    assert low.architecture == high.architecture  # a grid over rates shares one program
    plain = inspect_network(dense_chain(keras.layers.Dense(4), out()), "binary")
    assert plain.dropout == () and plain.architecture != low.architecture
    inputs = keras.Input(shape=(8,))
    hidden = keras.layers.Dropout(0.2)(keras.layers.Dense(4)(inputs))
    functional = keras.Model(inputs, out()(hidden))
    functional.compile(loss="binary_crossentropy", optimizer="adam")
    assert inspect_network(functional, "binary").dropout == (None, 0.2)


def test_a_custom_layer_and_a_shared_layer_go_to_the_reference_engine():
    class Scaled(keras.layers.Dense):
        pass

    assert "(Scaled) is not supported" in inspect_network(
        dense_chain(Scaled(1, activation="sigmoid")), "binary"
    )
    inputs = keras.Input(shape=(8,))
    shared = keras.layers.Dense(8, name="shared")  # called twice: one set of weights
    joined = keras.layers.Concatenate()([shared(inputs), shared(inputs)])
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(joined))
    model.compile(loss="binary_crossentropy", optimizer="adam")
    assert "'shared' (Dense) is called more than once" in inspect_network(model, "binary")


def test_multiclass_and_regression_networks_are_read_with_their_loss():
    for loss, expected in [
        ("sparse_categorical_crossentropy", "sparse_categorical_crossentropy"),
        (keras.losses.CategoricalCrossentropy(), "categorical_crossentropy"),
    ]:
        softmax = keras.layers.Dense(3, activation="softmax")
        network = inspect_network(dense_chain(softmax, loss=loss), "multiclass")
        assert (network.loss, network.task, network.sizes) == (expected, "multiclass", (8, 3))
    for loss, expected in [
        ("mse", "mean_squared_error"),
        (keras.losses.MeanAbsoluteError(), "mean_absolute_error"),
    ]:
        network = inspect_network(dense_chain(keras.layers.Dense(1), loss=loss), "regression")
        assert (network.loss, network.task) == (expected, "regression")
    huber = dense_chain(keras.layers.Dense(1), loss="huber")
    assert "loss 'huber' is not supported" in inspect_network(huber, "regression")
    wrong = dense_chain(keras.layers.Dense(1), loss="mse")
    assert "output activation is linear, not sigmoid" in inspect_network(wrong, "binary")


def test_optimizer_settings_regularizers_and_weight_decay_are_read():
    model = dense_chain(
        keras.layers.Dense(
            4,
            kernel_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.02),
            bias_regularizer="l2",
        ),
        out(),
        optimizer=keras.optimizers.AdamW(0.01, weight_decay=0.05, amsgrad=True, clipvalue=0.5),
    )
    network = inspect_network(model, "binary")
    assert network.optimizer == "adam"
    assert network.settings == pytest.approx(
        {
            "learning_rate": 0.01,
            "weight_decay": 0.05,
            "clipvalue": 0.5,
            "beta_1": 0.9,
            "beta_2": 0.999,
            "epsilon": 1e-7,
            "amsgrad": 1.0,
        }
    )
    kernel_and_bias, output = network.regularizers
    assert kernel_and_bias == pytest.approx((0.01, 0.02, 0.0, 0.01)) and output == (0, 0, 0, 0)


# --- checks before any training, each naming the function and the combination -------------


def test_a_function_that_raises_for_one_combination_is_named_with_its_line(tmp_path):
    source = model_file(
        tmp_path,
        """
        def create_model(optimizer="rmsprop"):
            if optimizer == "adam":
                raise RuntimeError("adam is not for this model")
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, "sigmoid")])
            model.compile(loss="binary_crossentropy", optimizer=optimizer)
            return model
        """,
    )
    with pytest.raises(ConfigError) as error:
        combinations({"optimizer": ["rmsprop", "adam"]}, source)
    assert (
        "create_model (" in str(error.value)
        and "with {'optimizer': 'adam'} raised at line 5: RuntimeError: adam is not for this model"
        in str(error.value)
    )


SIGMOID = "keras.layers.Dense(1, activation='sigmoid')"


@pytest.mark.parametrize(
    "body, message",
    [
        ("return None", "returned NoneType, not a keras.Model"),
        (
            f"return keras.Sequential([keras.Input((8,)), {SIGMOID}])",
            "returned a model that is not compiled",
        ),
        (
            f"m = keras.Sequential([keras.Input((7,)), {SIGMOID}])\n"
            "    m.compile(loss='binary_crossentropy', optimizer='adam')\n    return m",
            "input shape is (None, 7), but the dataset has 8 features",
        ),
        (
            "m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation='softmax')])"
            "\n"
            "    m.compile(loss='sparse_categorical_crossentropy', optimizer='adam')\n    return m",
            "output is 2 unit(s) with activation softmax; a binary task needs one sigmoid unit",
        ),
        (
            "m = keras.Sequential([keras.layers.Dense(1, activation='sigmoid')])\n"
            "    m.compile(loss='binary_crossentropy', optimizer='adam')\n    return m",
            "without a defined input",
        ),
    ],
)
def test_what_the_function_returns_is_checked(tmp_path, body, message):
    source = model_file(tmp_path, f"def create_model(units=1):\n    {body}\n")
    with pytest.raises(ConfigError) as error:
        combinations({"units": [1]}, source)
    assert message in str(error.value) and "create_model (" in str(error.value)


def test_outputs_are_checked_per_task():
    regression = dense_chain(keras.layers.Dense(1, activation="sigmoid"), loss="mse")
    with pytest.raises(ConfigError, match="a regression task needs one linear unit"):
        check_model(regression, model_meta("regression", 8, None), "f")
    multiclass = dense_chain(keras.layers.Dense(2, activation="softmax"))
    with pytest.raises(ConfigError, match=r"one softmax unit per class \(3\)"):
        check_model(multiclass, model_meta("multiclass", 8, ["a", "b", "c"]), "f")
    check_model(dense_chain(keras.layers.Dense(1, activation="sigmoid")), PIMA_META, "f")


def test_meta_is_passed_so_the_width_is_not_hard_coded(tmp_path):
    source = model_file(
        tmp_path,
        """
        def create_model(meta, n_features_in_, task, units=4):
            assert meta["n_features_in_"] == n_features_in_ and task == "binary"
            model = keras.Sequential([
                keras.Input((n_features_in_,)),
                keras.layers.Dense(units, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ])
            model.compile(loss="binary_crossentropy", optimizer="adam")
            return model
        """,
    )
    [checked] = combinations({"units": [4]}, source, meta=model_meta("binary", 5, [0, 1]))
    assert checked.network.sizes == (5, 4, 1)


def test_each_distinct_argument_set_is_built_once(tmp_path):
    """A 1,000-combination grid builds only its distinct function arguments."""
    source = model_file(
        tmp_path,
        """
        import collections
        CALLS = collections.Counter()

        def create_model(optimizer="adam", units=2):
            CALLS[(optimizer, units)] += 1
            model = keras.Sequential([
                keras.Input((8,)),
                keras.layers.Dense(units, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ])
            model.compile(loss="binary_crossentropy", optimizer=optimizer)
            return model
        """,
    )
    grid = {
        "optimizer": ["adam", "sgd"],
        "units": [2, 3],
        "epochs": list(range(1, 26)),
        "batch_size": list(range(1, 11)),
    }
    checked = combinations(grid, source)
    assert len(checked) == 1000
    import sys

    calls = sys.modules[f"foldflow_model_{source.sha256[:16]}"].CALLS
    assert sorted(calls.values()) == [1, 1, 1, 1]


def test_class_weight_must_name_classes_and_runs_on_the_fast_engine():
    [checked] = combinations({"fit__class_weight": [{0: 1.0, 1: 2.0}]}, TUTORIAL)
    assert checked.network is not None
    with pytest.raises(ConfigError, match=r"names \['yes'\], which are not classes"):
        combinations({"fit__class_weight": [{"yes": 2.0}]}, TUTORIAL)
