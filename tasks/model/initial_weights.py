"""Initial weights for another seed without building the model again.

The fast engine starts every fit from the weights the user's function builds under the fit's
seed. A build costs 25-60 ms (serial: Keras' session is process-wide), more than the fit
itself on small data. Yet a Dense network's weights are a function of few things: each
variable's initializer (class, settings, shape, dtype) and, for a random one, the integer
seed Keras drew for it from Python's `random` when the layer was made (Keras 3's
`make_default_seed`; a seeded initializer then draws statelessly). So one real build under
seed A, with every Python `random` call it made logged, gives a recipe: repeat the same calls
on `random.Random(B)` and call the same initializers with the seeds they return.

A recipe is only made for layers and initializers whose weights come from that alone (Dense,
Embedding, BatchNormalization and LayerNormalization with Keras' own initializers, and layers
without weights: Input, Dropout, Activation, the Gaussian ones, Concatenate, Add, Flatten),
and it is checked against the build it came
from bit for bit; anything else (another layer, a custom initializer, a SeedGenerator, weights
set by the function itself) gets no recipe, and every seed is built for real.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras.src.initializers.random_initializers import RandomInitializer

from tasks.features import model_input_meta

# Python random calls as the routed module functions make them: (method, args, kwargs).
RandomCall = tuple[str, tuple, dict]
WEIGHTLESS_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Dropout,
    keras.layers.Activation,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.Concatenate,
    keras.layers.Add,
    keras.layers.Flatten,
)
# Each weighted layer's variables in its weight order, by the attribute naming its initializer
# (a variable the layer lacks, such as gamma with scale=False, is skipped).
INITIALIZED_VARIABLES: dict[type, tuple[tuple[str, str], ...]] = {
    keras.layers.Dense: (("kernel", "kernel_initializer"), ("bias", "bias_initializer")),
    keras.layers.Embedding: (("embeddings", "embeddings_initializer"),),
    keras.layers.BatchNormalization: (
        ("gamma", "gamma_initializer"),
        ("beta", "beta_initializer"),
        ("moving_mean", "moving_mean_initializer"),
        ("moving_variance", "moving_variance_initializer"),
    ),
    keras.layers.LayerNormalization: (
        ("gamma", "gamma_initializer"),
        ("beta", "beta_initializer"),
    ),
}


@dataclass(frozen=True)
class VariableRecipe:
    initializer: type
    config: dict[str, Any]  # the initializer's settings (its seed replaced on replay)
    shape: tuple[int, ...]
    dtype: str
    seed_call: int | None  # which logged call returned its seed (None: not drawn)


@dataclass(frozen=True)
class WeightRecipe:
    calls: tuple[RandomCall, ...]
    variables: tuple[VariableRecipe, ...]

    def weights(self, seed: int) -> list[np.ndarray]:
        """The weights a build under `seed` gives (same calls, same initializers)."""
        generator = random.Random(seed)
        drawn = [getattr(generator, name)(*args, **kwargs) for name, args, kwargs in self.calls]
        weights = []
        for variable in self.variables:
            config = dict(variable.config)
            if variable.seed_call is not None:
                config["seed"] = drawn[variable.seed_call]
            initializer = variable.initializer.from_config(config)
            weights.append(np.asarray(initializer(variable.shape, dtype=variable.dtype)))
        return weights


def recipe_of(
    model: keras.Model, log: list[tuple[str, tuple, dict, Any]], seed: int
) -> WeightRecipe | None:
    """The recipe of a model just built under `seed` with `log` its Python random calls
    (method, args, kwargs, result), or None when its weights may come from anything else."""
    variables = []
    for layer in model.layers:
        if isinstance(layer, WEIGHTLESS_LAYERS) and not layer.weights:
            continue
        named = INITIALIZED_VARIABLES.get(type(layer))
        if named is None:
            return None
        pairs = [
            (getattr(layer, initializer, None), getattr(layer, variable))
            for variable, initializer in named
            if getattr(layer, variable, None) is not None
        ]
        if len(layer.weights) != len(pairs) or any(
            variable is not weight
            for (_, variable), weight in zip(pairs, layer.weights, strict=True)
        ):
            return None
        for initializer, variable in pairs:
            recipe = _variable_recipe(initializer, variable, log)
            if recipe is None:
                return None
            variables.append(recipe)
    recipe = WeightRecipe(
        calls=tuple((name, args, kwargs) for name, args, kwargs, _ in log),
        variables=tuple(variables),
    )
    built = model.get_weights()
    replayed = recipe.weights(seed)
    same = len(built) == len(replayed) and all(
        a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        for a, b in zip(built, replayed, strict=False)
    )
    return recipe if same else None


def _variable_recipe(
    initializer: Any, variable: Any, log: list[tuple[str, tuple, dict, Any]]
) -> VariableRecipe | None:
    if not type(initializer).__module__.startswith("keras.src.initializers"):
        return None  # a custom initializer may draw from anything
    seed_call = None
    if isinstance(initializer, RandomInitializer):
        if not isinstance(initializer.seed, int):
            return None  # a SeedGenerator: its state moves with every draw
        if initializer._init_seed is not None:
            return _recipe(initializer, variable, None)  # its own seed, the same every build
        calls = [i for i, call in enumerate(log) if _same_int(call[3], initializer.seed)]
        if len(calls) != 1:
            return None
        seed_call = calls[0]
    return _recipe(initializer, variable, seed_call)


def _recipe(initializer: Any, variable: Any, seed_call: int | None) -> VariableRecipe:
    return VariableRecipe(
        initializer=type(initializer),
        config=initializer.get_config(),
        shape=tuple(int(size) for size in variable.shape),
        dtype=str(variable.dtype),
        seed_call=seed_call,
    )


def build_key(source: Any, meta: dict[str, Any], model: Any) -> tuple[str, str]:
    """What a build depends on besides the seed: the model function's code and where it comes
    from (a ModelSource), what it is told about the data, and its arguments (ModelParams)."""
    meta = model_input_meta(meta, model)  # the input width after the fit's preprocessing
    identity = source.model_dump_json() + json.dumps(meta, sort_keys=True, default=repr)
    arguments = json.dumps(model.seed_key(), sort_keys=True, default=repr)
    return hashlib.sha256(identity.encode()).hexdigest(), arguments


class RecipeBook:
    """This process's recipes per build key; None: that build has no recipe."""

    def __init__(self) -> None:
        self._recipes: dict[tuple[str, str], WeightRecipe | None] = {}
        self._lock = threading.Lock()

    def lookup(self, key: tuple[str, str]) -> tuple[bool, WeightRecipe | None]:
        """(whether a build of `key` was recorded, its recipe)."""
        with self._lock:
            return key in self._recipes, self._recipes.get(key)

    def record(self, key: tuple[str, str], recipe: WeightRecipe | None) -> None:
        with self._lock:
            self._recipes.setdefault(key, recipe)


# Filled by the model factory's check builds and by the first build of each arguments' fits.
RECIPES = RecipeBook()


class RecordingRandom:
    """random.Random(seed) that logs every call made on it (method, args, kwargs, result)."""

    def __init__(self, seed: int, log: list):
        self._generator = random.Random(seed)
        self._log = log

    def __getattr__(self, name: str):
        method = getattr(self._generator, name)

        def logged(*args, **kwargs):
            result = method(*args, **kwargs)
            self._log.append((name, args, kwargs, result))
            return result

        return logged


def _same_int(result: Any, seed: int) -> bool:
    return isinstance(result, int) and not isinstance(result, bool) and result == seed
