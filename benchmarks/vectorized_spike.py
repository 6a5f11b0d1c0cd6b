"""Spike for issue 26 point 2: ways to train N copies of one Keras model in one compiled
program, measured side by side in one process on Pima (512 training rows, batch 16, N=12 =
4 combinations x 3 folds, 40 epochs).

    python -m benchmarks.vectorized_spike [--epochs 40] [--models conv two_branch batchnorm
        schedule] [--options keras vmap loop]

Options: `keras` one plain `model.fit` per copy (the reference engine's cost); `vmap` Keras'
stateless call and the optimizer's update in a stateless scope, vectorized over the model axis
with `tf.vectorized_map`, a whole epoch per `tf.function(jit_compile=True)` call; `loop` the
same step written once per model (a Python loop, unrolled) inside one compiled epoch.
Printed: compile (first epoch) and steady seconds per epoch, the total for N fits.
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf

from benchmarks.any_model import (
    PIMA,
    batchnorm_model,
    conv_model,
    read_pima,
    schedule_model,
    two_branch_model,
)
from tasks.train.vectorized.program import StackedModels, model_state, stack_states

MODELS = {
    "conv": lambda meta: conv_model(meta, filters=4),
    "two_branch": lambda meta: two_branch_model(meta, units=8),
    "batchnorm": lambda meta: batchnorm_model(meta, units=16),
    "schedule": lambda meta: schedule_model(meta, units=12),
}
META = {"n_features_in_": 8, "task": "binary", "n_classes_": 2, "classes_": [0, 1]}


def data(copies: int) -> tuple[np.ndarray, np.ndarray]:
    features, labels = read_pima(PIMA)
    features = (features - features.mean(0)) / features.std(0)
    rows = np.stack([np.random.default_rng(i).permutation(768)[:512] for i in range(copies)])
    return features[rows].astype(np.float32), labels[rows].astype(np.float32)


def keras_fits(name: str, copies: int, epochs: int) -> dict[str, float]:
    x, y = data(copies)
    started = time.perf_counter()
    for index in range(copies):
        keras.utils.set_random_seed(index)
        model = MODELS[name](META)
        model.fit(x[index], y[index], batch_size=16, epochs=epochs, verbose=0)
    return {"total": time.perf_counter() - started}


def stacked(name: str, copies: int, epochs: int, mode: str) -> dict[str, float]:
    x, y = data(copies)
    models = []
    for index in range(copies):
        keras.utils.set_random_seed(index)
        models.append(MODELS[name](META))
    started = time.perf_counter()
    jit = mode != "graph"  # "graph": vmap on TensorFlow's graph runtime, no XLA
    stack = StackedModels(
        models[0], copies, mode="loop" if mode == "loop" else "vmap", jit_compile=jit
    )
    state = stack_states([model_state(model) for model in models])
    x, y = tf.constant(x), tf.constant(y)
    weights, active = tf.ones(y.shape), np.ones(copies, bool)
    steps = 512 // 16
    timings = []
    for epoch in range(epochs):
        orders = np.stack(
            [np.random.default_rng([i, epoch]).permutation(512) for i in range(copies)]
        )
        batches = orders.reshape(copies, steps, 16).transpose(1, 0, 2)
        begin = time.perf_counter()
        state, losses = stack.train(state, x, y, weights, batches, active)
        timings.append(time.perf_counter() - begin)
    return {
        "build": timings[0],
        "steady_epoch": float(np.median(timings[1:])) if epochs > 1 else float("nan"),
        "total": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--copies", type=int, default=12)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--options", nargs="+", default=["keras", "vmap", "graph", "loop"])
    arguments = parser.parse_args()
    tf.config.threading.set_inter_op_parallelism_threads(2)
    for name in arguments.models:
        for option in arguments.options:
            if option == "keras":
                figures = keras_fits(name, arguments.copies, arguments.epochs)
            else:
                figures = stacked(name, arguments.copies, arguments.epochs, option)
            line = {"model": name, "option": option, **{k: round(v, 3) for k, v in figures.items()}}
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
