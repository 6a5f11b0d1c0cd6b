"""Learning rates per step: each stacked model's rate at every step of a program call, from
its Keras learning-rate schedule at the model's own iterations (Keras calls the schedule with
the optimizer's iterations before each update), else its constant rate.

The schedule is Keras' own object, rebuilt from its config and evaluated with its own ops, so
every built-in schedule computes exactly what it computes inside Keras' optimizer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import cachetools
import keras
import numpy as np
import tensorflow as tf

from tasks.train.fast.optimizers import SETTINGS
from tasks.train.fast.schedules import CHUNK_STEPS, Trajectory

assert SETTINGS[0] == "learning_rate"  # the program replaces this column per step

_RATE_FUNCTIONS: cachetools.LRUCache[str, Callable] = cachetools.LRUCache(maxsize=64)
_LOCK = threading.Lock()


def rate_function(schedule: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The schedule (DenseNetwork.schedule) as a traced function of a vector of int64 steps,
    one per process and schedule (Keras' iterations are int64 under TensorFlow)."""
    with _LOCK:
        found = _RATE_FUNCTIONS.get(schedule)
        if found is None:
            rebuilt = keras.optimizers.schedules.deserialize(json.loads(schedule))

            @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.int64)])
            def rates(steps: tf.Tensor) -> tf.Tensor:
                # map_fn: a schedule may branch on its scalar step (CosineDecay's warm-up).
                return tf.map_fn(
                    lambda step: tf.cast(rebuilt(step), tf.float32),
                    steps,
                    fn_output_signature=tf.float32,
                )

            found = _RATE_FUNCTIONS[schedule] = rates
        return found


def learning_rates(
    group: list[Trajectory], settings: np.ndarray, steps: np.ndarray, rows: np.ndarray, n: int
) -> np.ndarray:
    """[CHUNK_STEPS, M] learning rates of a program call's first `n` steps: a model's
    iterations advance only on the steps it has real rows in (as the program counts them)."""
    table = np.repeat(settings[None, :, 0], CHUNK_STEPS, axis=0).astype(np.float32)
    active = (rows[:n] >= 0).any(axis=2)
    before = np.cumsum(active, axis=0) - active
    for index, trajectory in enumerate(group):
        if not trajectory.network.schedule or not active[:, index].any():
            continue
        iterations = np.int64(steps[index]) + before[:, index].astype(np.int64)
        rates = rate_function(trajectory.network.schedule)(tf.constant(iterations))
        table[:n, index] = rates.numpy()
    return table
