"""Model factory: a registry of Keras model builders and scikeras estimators that scikit-learn
recognises as a classifier or a regressor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from prefect import task
from scikeras.wrappers import KerasClassifier, KerasRegressor
from sklearn.utils import ClassifierTags, RegressorTags, Tags

from tasks.config import TASK_LOSSES, GridSpec, ModelParams, Task
from tasks.errors import ConfigError

OUTPUT_ACTIVATIONS = {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}


def build_mlp(
    meta: dict[str, Any],
    hidden_layers: tuple[int, ...] = (12, 8),
    activation: str = "relu",
    init: str = "glorot_uniform",
    optimizer: str = "adam",
    loss: str = "binary_crossentropy",
    seed: int | None = None,
) -> keras.Model:
    """The tutorial's MLP, generalised: Dense layers, then an output that fits the loss; compiled.

    One sigmoid unit for binary cross-entropy, a softmax unit per class (`meta["n_classes_"]`)
    for sparse categorical cross-entropy, one linear unit for a regression loss.

    Module-level (not a closure) so any worker process can import and pickle it. With a seed,
    each layer's initializer is seeded explicitly: initial weights then never depend on global
    random state, which threads running fits side by side would share.
    """
    n_features = meta["n_features_in_"]
    task = task_of_loss(loss)
    output_units = meta["n_classes_"] if task == "multiclass" else 1
    model = keras.Sequential([keras.Input(shape=(n_features,))])
    layer_sizes = [*hidden_layers, output_units]
    for layer_index, units in enumerate(layer_sizes):
        is_output = layer_index == len(layer_sizes) - 1
        model.add(
            keras.layers.Dense(
                units,
                activation=OUTPUT_ACTIVATIONS[task] if is_output else activation,
                kernel_initializer=seeded_initializer(init, seed, layer_index),
                # Explicit names: another thread's clear_session() may reset Keras' name counters
                # while this model is being built.
                name="output" if is_output else f"hidden_{layer_index + 1}",
            )
        )
    # XLA compilation costs ~0.5 s per model and leaks about twice the memory per fit, and it
    # does not speed up steps this small (measured), so each fit runs without it.
    metrics = None if task == "regression" else ["accuracy"]
    model.compile(loss=loss, optimizer=optimizer, metrics=metrics, jit_compile=False)
    return model


def task_of_loss(loss: str) -> Task:
    """The loss says what the model predicts: one class of two, one of many, or a number."""
    for name, losses in TASK_LOSSES.items():
        if loss in losses:
            return name  # type: ignore[return-value]
    raise ConfigError(f"unknown loss {loss!r}")


def seeded_initializer(
    name: str, seed: int | None, layer_index: int
) -> keras.initializers.Initializer:
    """The named Keras initializer, seeded per layer from the fit's seed when one is given."""
    initializer = keras.initializers.get(name)
    config = initializer.get_config()
    if seed is None or "seed" not in config:
        return initializer
    config["seed"] = (seed + 7919 * layer_index) % (2**31)
    return initializer.__class__.from_config(config)


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {"mlp": build_mlp}


class FoldflowClassifier(KerasClassifier):
    """scikeras' KerasClassifier, tagged as a classifier for scikit-learn >= 1.6.

    scikeras 0.13 only sets `_estimator_type`, which scikit-learn 1.6+ no longer reads, so
    `is_classifier` is False and `GridSearchCV(cv=3)` silently uses unstratified KFold.
    """

    _estimator_type = "classifier"

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        if tags.classifier_tags is None:
            tags.classifier_tags = ClassifierTags()
        return tags


class FoldflowRegressor(KerasRegressor):
    """scikeras' KerasRegressor, tagged as a regressor for scikit-learn >= 1.6 (as above)."""

    _estimator_type = "regressor"

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        if tags.regressor_tags is None:
            tags.regressor_tags = RegressorTags()
        return tags


def builder_for(name: str) -> Callable[..., keras.Model]:
    """Look up a registered model builder; an unknown name fails loudly."""
    try:
        return MODEL_BUILDERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model builder {name!r}; registered: {', '.join(sorted(MODEL_BUILDERS))}"
        ) from None


def make_classifier(params: ModelParams, seed: int | None = None) -> FoldflowClassifier:
    """An unfitted classifier whose hyperparameters route to the builder (`model__optimizer`)."""
    return make_estimator(params, seed)  # type: ignore[return-value]


def make_estimator(
    params: ModelParams, seed: int | None = None
) -> FoldflowClassifier | FoldflowRegressor:
    """An unfitted classifier, or a regressor for a regression loss; hyperparameters route to
    the builder (`model__optimizer`). Preprocessing is applied per fold before this sees X."""
    wrapper = FoldflowRegressor if task_of_loss(params.loss) == "regression" else FoldflowClassifier
    return wrapper(
        model__seed=seed,
        model=builder_for(params.builder),
        model__hidden_layers=params.hidden_layers,
        model__activation=params.activation,
        model__init=params.init,
        model__optimizer=params.optimizer,
        model__loss=params.loss,
        epochs=params.epochs,
        batch_size=params.batch_size,
        verbose=0,
    )


def model_combinations(
    base: ModelParams,
    grid: GridSpec | None,
    task: Task = "binary",
    zero_columns: tuple[str, ...] | None = None,
) -> list[tuple[dict[str, Any], ModelParams]]:
    """Every (routed params, model params) pair to evaluate, with the task's loss, each checked
    by building its unfitted estimator, so a bad value fails here and not after hours of
    training. `zero_columns` (None: not checked) are the dataset's zero-coded features."""
    combinations = [({}, base)] if grid is None else grid.combinations(base)
    fitted_to_task = []
    for routed, params in combinations:
        where = f"combination {routed}" if routed else "model"
        try:
            params = params.for_task(task)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
        if params.impute_zeros and zero_columns is not None and not zero_columns:
            raise ConfigError(
                f"{where}: impute_zeros needs impossible_zero_columns among the features in "
                "the dataset spec (which zeros mean 'missing'?)"
            )
        make_estimator(params)
        fitted_to_task.append((routed, params))
    return fitted_to_task


@task(name="build_model_factory")
def build_model_factory(
    base: ModelParams,
    grid: GridSpec | None = None,
    task: Task = "binary",
    zero_columns: tuple[str, ...] | None = None,
) -> list[tuple[dict[str, Any], ModelParams]]:
    """Validate the builder and every combination before any training starts."""
    return model_combinations(base, grid, task, zero_columns)
