"""Initial weights from a recipe (tasks.model.initial_weights) must be the weights a real build of
the function gives under the same seed, bit for bit, or there must be no recipe."""

import random

import keras
import numpy as np

from tasks.model.factory import build_model
from tasks.model.initial_weights import recipe_of

META = {"n_features_in_": 8}


def recorded(function, seed=3):
    log: list = []
    model = build_model(function, {}, META, seed, log)
    return recipe_of(model, log, seed)


def built(function, seed):
    return build_model(function, {}, META, seed).get_weights()


def assert_equal_weights(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)


def mixed_initializers():
    """Several kinds of initializer, a Dropout (it draws a seed too), the function's own
    Python random draws between layers, and a seed the function fixes itself."""
    width = 4 + random.randint(0, 0)  # a draw of the function's own, always 4
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(width, kernel_initializer="he_normal", bias_initializer="ones"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(6, kernel_initializer="orthogonal", activation="relu"),
            keras.layers.Dense(
                5,
                kernel_initializer=keras.initializers.RandomUniform(-0.3, 0.3),
                bias_initializer=keras.initializers.Constant(0.5),
            ),
            keras.layers.Dense(
                1, kernel_initializer=keras.initializers.GlorotNormal(seed=42), use_bias=False
            ),
        ]
    )
    random.random()
    model.compile(loss="binary_crossentropy", optimizer="adam")
    return model


def test_a_recipe_gives_the_weights_a_build_gives_for_other_seeds():
    recipe = recorded(mixed_initializers)
    assert recipe is not None
    for seed in (0, 3, 7, 123456, 2**31 - 1):
        assert_equal_weights(recipe.weights(seed), built(mixed_initializers, seed))
    # other seeds give other weights, a fixed seed gives the same
    first, second = recipe.weights(1), recipe.weights(2)
    assert not np.array_equal(first[0], second[0])
    assert np.array_equal(first[-1], second[-1])


def test_no_recipe_where_weights_may_come_from_elsewhere():
    class Halves(keras.initializers.Initializer):
        def __call__(self, shape, dtype=None):
            return keras.ops.full(shape, np.random.rand(), dtype=dtype)

    def custom_initializer():
        return keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(2, kernel_initializer=Halves())]
        )

    def weights_set_by_the_function():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
        model.layers[0].set_weights([np.full((8, 2), np.random.rand()), np.zeros(2)])
        return model

    def seed_generator():
        generator = keras.random.SeedGenerator(5)
        initializer = keras.initializers.GlorotUniform(seed=generator)
        return keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(2, kernel_initializer=initializer)]
        )

    def another_layer():
        return keras.Sequential([keras.Input((8,)), keras.layers.PReLU(), keras.layers.Dense(1)])

    for function in (
        custom_initializer,
        weights_set_by_the_function,
        seed_generator,
        another_layer,
    ):
        assert recorded(function) is None, function.__name__
