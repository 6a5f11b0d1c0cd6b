"""A fit's initial weights, as the user's function builds them under the fit's seed, kept per
process: the fast engine starts exactly where the reference engine starts, and fits that
differ only in fit options share one build."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from tasks.config import ModelParams
from tasks.model.factory import model_for_fit
from tasks.model.initial_weights import RECIPES, build_key, recipe_of
from tasks.model.sources import ModelSource


class InitialWeights:
    """A fit's initial weights, as the function builds them under the fit's seed: the fast
    engine starts exactly where the reference engine starts, whatever the initializers."""

    def __init__(self, source: ModelSource, meta: dict[str, Any]):
        self.source, self.meta = source, meta

    def __call__(self, model: ModelParams, seed: int) -> list[np.ndarray]:
        key = (*build_key(self.source, self.meta, model), seed)
        weights = BUILT_WEIGHTS.get(key)
        if weights is None:
            weights = self._weights(model, seed, key[:2])
            BUILT_WEIGHTS.put(key, weights)
        return [array.copy() for array in weights]

    def _weights(self, model: ModelParams, seed: int, key: tuple[str, str]) -> list[np.ndarray]:
        """From the arguments' recipe (tasks.model.initial_weights) when there is one, else built;
        a first build of the arguments records their recipe for the other seeds."""
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


class WeightsCache:
    """Initial weights made in this process, least recently used dropped beyond `max_bytes`:
    fits whose arguments and seed agree (they differ in batch size, epochs, fit options or
    preprocessing only) share them, also across the task runs of a grid."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> list[np.ndarray] | None:
        with self._lock:
            weights = self._entries.get(key)
            if weights is not None:
                self._entries.move_to_end(key)
            return weights

    def put(self, key: tuple, weights: list[np.ndarray]) -> None:
        size = sum(array.nbytes for array in weights)
        with self._lock:
            if key in self._entries or size > self.max_bytes:
                return
            self._entries[key] = weights
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= sum(array.nbytes for array in dropped)


BUILT_WEIGHTS = WeightsCache(max_bytes=256 * 2**20)
