"""Can the vectorized path (tasks.train.vectorized) train copies of this built model, and which
copies share a compiled program?

A model qualifies when Keras' stateless API computes exactly what its `fit` does: a plain
Sequential or functional model of Keras' own layers in float32, one input and one output,
compiled with a Keras optimizer without EMA, gradient accumulation or loss scaling. Copies
share a program when everything the program is traced from is equal: the layers' configs, the
loss and the optimizer's config, all but a plain learning rate (a variable of each copy).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import keras

# Optimizer settings the stateless update does not reproduce as `fit` applies them.
_OPTIMIZER_OFF = {"use_ema": False, "gradient_accumulation_steps": None, "loss_scale_factor": None}


def vectorized_architecture(model: keras.Model) -> str:
    """A key naming the compiled program copies of `model` share, or "" when the vectorized
    path cannot train it (`vectorized_reason` says why)."""
    if vectorized_reason(model):
        return ""
    names = {layer.name: f"layer{index}" for index, layer in enumerate(model.layers)}
    names[model.name] = "model"
    optimizer = dict(model.optimizer.get_config())
    optimizer.pop("name", None)
    if isinstance(model.optimizer._learning_rate, keras.Variable):
        optimizer.pop("learning_rate", None)  # each copy's own variable
    payload = {
        "model": _renamed(model.get_config(), names),
        "class": type(model).__name__,
        "loss": _plain(model.loss),
        "optimizer": [type(model.optimizer).__name__, _plain(optimizer)],
    }
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def vectorized_reason(model: keras.Model) -> str:
    """Why the vectorized path cannot train `model` ("" when it can)."""
    from keras.src.models.functional import Functional

    if type(model) not in (keras.Sequential, Functional):
        return f"model class {type(model).__name__} may train its own way (a subclass)"
    for layer in _all_layers(model):
        if not type(layer).__module__.startswith("keras.src."):
            return f"layer {layer.name!r} ({type(layer).__name__}) is not one of Keras' own"
        if layer.dtype_policy.name != "float32":
            return f"layer {layer.name!r} computes in {layer.dtype_policy.name}, not float32"
    optimizer = model.optimizer
    if not type(optimizer).__module__.startswith("keras.src."):
        return f"optimizer {type(optimizer).__name__} is not one of Keras' own"
    config = optimizer.get_config()
    for key, off in _OPTIMIZER_OFF.items():
        if config.get(key, off) != off:
            return f"optimizer setting {key}={config[key]!r} is not vectorized"
    rate = optimizer._learning_rate
    if not isinstance(rate, keras.Variable) and not (
        isinstance(rate, keras.optimizers.schedules.LearningRateSchedule)
        and type(rate).__module__.startswith("keras.src.")
    ):
        return "a learning rate that is neither a number nor a Keras schedule is not vectorized"
    if not isinstance(model.loss, str | keras.losses.Loss) and not callable(model.loss):
        return f"loss {model.loss!r} is not vectorized"
    return ""


def _all_layers(model: keras.Model) -> list[Any]:
    found, pending = [], list(model.layers)
    while pending:
        layer = pending.pop()
        found.append(layer)
        pending.extend(getattr(layer, "layers", []) or [])
    return found


def _plain(value: Any) -> Any:
    """A loss or config as JSON-able data (a Keras object by its serialized config)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, keras.losses.Loss | keras.optimizers.schedules.LearningRateSchedule):
        return keras.saving.serialize_keras_object(value)
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    return value


def _renamed(value: Any, names: dict[str, str]) -> Any:
    """A config with layer names replaced by their position (two builds name layers apart:
    dense_3 and dense_7 are the same layer of the same architecture)."""
    if isinstance(value, dict):
        return {key: _renamed(item, names) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_renamed(item, names) for item in value]
    if isinstance(value, str):
        return names.get(value, value)
    return value
