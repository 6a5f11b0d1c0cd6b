"""A fit's initial weights, as the user's function builds them under the fit's seed, kept per
process: the fast engine starts exactly where the reference engine starts, and fits that
differ only in fit options share one build."""

from __future__ import annotations

import threading
from typing import Any

import cachetools
import numpy as np

from tasks.config import ModelParams
from tasks.model.factory import model_for_fit
from tasks.model.initial_weights import RECIPES, build_key, recipe_of
from tasks.model.sources import ModelSource


def _nbytes(weights: list[np.ndarray]) -> int:
    return sum(array.nbytes for array in weights)


# Initial weights made in this process, least recently used dropped beyond 256 MiB (a set
# larger than that is not kept): fits whose arguments and seed agree (they differ in batch
# size, epochs, fit options or preprocessing only) share them, also across the task runs of
# a grid. Keyed by (build key, seed): what the function builds from, not the fit options.
BUILT_WEIGHTS: cachetools.LRUCache = cachetools.LRUCache(maxsize=256 * 2**20, getsizeof=_nbytes)


class InitialWeights:
    """A fit's initial weights, as the function builds them under the fit's seed: the fast
    engine starts exactly where the reference engine starts, whatever the initializers."""

    def __init__(self, source: ModelSource, meta: dict[str, Any]):
        self.source, self.meta = source, meta

    def __call__(self, model: ModelParams, seed: int) -> list[np.ndarray]:
        return [array.copy() for array in _built_weights(self, model, seed)]

    def weights(self, model: ModelParams, seed: int) -> list[np.ndarray]:
        """From the arguments' recipe (tasks.model.initial_weights) when there is one, else built;
        a first build of the arguments records their recipe for the other seeds."""
        key = build_key(self.source, self.meta, model)
        recorded, recipe = RECIPES.lookup(key)
        if recipe is not None:
            return recipe.weights(seed)
        log: list | None = None if recorded else []
        keras_model = model_for_fit(self.source, model, self.meta, seed, log)
        weights = keras_model.get_weights()
        if log is not None:
            RECIPES.record(key, recipe_of(keras_model, log, seed))
        del keras_model
        return weights


def _weights_key(initial: InitialWeights, model: ModelParams, seed: int) -> tuple:
    return (*build_key(initial.source, initial.meta, model), seed)


# The lock guards the cache's lookups and stores only: two threads asking for the same new
# weights at once may both build them (the model factory serializes builds; both get equal
# weights and the first stored is kept), which is rare and cheaper than holding every
# thread behind one build.
@cachetools.cached(BUILT_WEIGHTS, key=_weights_key, lock=threading.Lock())
def _built_weights(initial: InitialWeights, model: ModelParams, seed: int) -> list[np.ndarray]:
    return initial.weights(model, seed)
