"""Model factory: a registry of Keras model builders and a scikeras classifier that scikit-learn
recognises as a classifier."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from prefect import task
from scikeras.wrappers import KerasClassifier
from sklearn.utils import ClassifierTags, Tags

from tasks.config import GridSpec, ModelParams
from tasks.errors import ConfigError


def build_mlp(
    meta: dict[str, Any],
    hidden_layers: tuple[int, ...] = (12, 8),
    activation: str = "relu",
    init: str = "glorot_uniform",
    optimizer: str = "adam",
    loss: str = "binary_crossentropy",
    seed: int | None = None,
) -> keras.Model:
    """The tutorial's MLP, generalised: Dense layers, then one sigmoid unit; compiled.

    Module-level (not a closure) so any worker process can import and pickle it. With a seed,
    each layer's initializer is seeded explicitly: initial weights then never depend on global
    random state, which threads running fits side by side would share.
    """
    n_features = meta["n_features_in_"]
    model = keras.Sequential([keras.Input(shape=(n_features,))])
    layer_sizes = [*hidden_layers, 1]
    for layer_index, units in enumerate(layer_sizes):
        is_output = layer_index == len(layer_sizes) - 1
        model.add(
            keras.layers.Dense(
                units,
                activation="sigmoid" if is_output else activation,
                kernel_initializer=seeded_initializer(init, seed, layer_index),
                # Explicit names: another thread's clear_session() may reset Keras' name counters
                # while this model is being built.
                name="output" if is_output else f"hidden_{layer_index + 1}",
            )
        )
    # XLA compilation costs ~0.5 s per model and leaks about twice the memory per fit, and it
    # does not speed up steps this small (measured), so each fit runs without it.
    model.compile(loss=loss, optimizer=optimizer, metrics=["accuracy"], jit_compile=False)
    return model


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
    return FoldflowClassifier(
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
    base: ModelParams, grid: GridSpec | None
) -> list[tuple[dict[str, Any], ModelParams]]:
    """Every (routed params, model params) pair to evaluate, each checked by building its
    unfitted classifier, so a bad value fails here and not after hours of training."""
    combinations = [({}, base)] if grid is None else grid.combinations(base)
    for _, params in combinations:
        make_classifier(params)
    return combinations


@task(name="build_model_factory")
def build_model_factory(
    base: ModelParams, grid: GridSpec | None = None
) -> list[tuple[dict[str, Any], ModelParams]]:
    """Validate the builder and every combination before any training starts."""
    return model_combinations(base, grid)
