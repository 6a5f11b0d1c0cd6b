"""Traced Keras models reused across the reference engine's fits of the same model.

Keras traces a model's train and predict functions for each new model object: ~0.5 s or more
per fit, often longer than a small fit itself. Two fits of the same model function with the
same arguments differ only in their starting numbers (the seed's weights, the dropout seed
state, the optimizer's fresh slots). So a fit takes an idle model of the same structure that
has already been traced, gives it every variable of the fresh model and of its freshly built
optimizer, and trains that: the same program on the same numbers, without tracing again
(tests/unit/tasks/train/test_traced_models.py checks that the results are bit for bit those of
the fresh model).

Only models made wholly of Keras' own parts qualify: a user's layer, activation, loss, metric
or schedule may draw random numbers or read the seed while it is traced, which a reused trace
would not repeat. A traced program with a stateful random op is never reused either."""

from __future__ import annotations

import functools
import itertools
import json
import math
import threading
import types
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np

MAX_IDLE = 8  # traced models kept per process, least recently used dropped first
MAX_IDLE_BYTES = 256 * 2**20  # and their variables' bytes (a large network is not kept idle)
# Op types whose numbers come from TensorFlow's global seed and op counters at trace time.
STATEFUL_RANDOM_PREFIXES = (
    "Random",
    "TruncatedNormal",
    "ParameterizedTruncatedNormal",
    "Multinomial",
    "StatefulUniform",
    "StatefulStandardNormal",
    "StatefulTruncatedNormal",
    "StatefulRandom",
)
STATEFUL_RANDOM_EXCEPTIONS = ("RandomIndexShuffle",)  # stateless: it takes its seed as input


class _Idle:
    """Idle traced models by structure, and the structures found unsafe to reuse."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.models: OrderedDict[str, list[keras.Model]] = OrderedDict()
        self.unsafe: set[str] = set()

    def take(self, structure: str) -> keras.Model | None:
        with self.lock:
            waiting = self.models.get(structure)
            if not waiting:
                return None
            model = waiting.pop()
            if not waiting:
                del self.models[structure]
            return model

    def give_back(self, structure: str, model: keras.Model) -> None:
        with self.lock:
            if structure in self.unsafe:
                return
            self.models.setdefault(structure, []).append(model)
            self.models.move_to_end(structure)
            while self.models and (
                sum(len(models) for models in self.models.values()) > MAX_IDLE
                or sum(map(variable_bytes, itertools.chain(*self.models.values()))) > MAX_IDLE_BYTES
            ):
                oldest = next(iter(self.models))
                self.models[oldest].pop(0)
                if not self.models[oldest]:
                    del self.models[oldest]

    def mark_unsafe(self, structure: str) -> None:
        with self.lock:
            self.unsafe.add(structure)
            self.models.pop(structure, None)

    def clear(self) -> None:
        with self.lock:
            self.models.clear()
            self.unsafe.clear()


IDLE = _Idle()


@contextmanager
def reusing_traced(fresh: keras.Model) -> Iterator[keras.Model]:
    """The model to fit in place of `fresh`: an idle traced model of the same structure holding
    `fresh`'s starting numbers, or `fresh` itself. Handed back for the next fit when the block
    ends without an error (after one, its state is unknown and it is dropped)."""
    structure = model_structure(fresh)
    traced = None if structure is None else IDLE.take(structure)
    if traced is not None and not load_starting_state(traced, fresh):
        traced = None
    model = fresh if traced is None else traced
    yield model
    if structure is None:
        return
    if traced is None and has_stateful_random_ops(model):
        IDLE.mark_unsafe(structure)
        return
    IDLE.give_back(structure, model)


def variable_bytes(model: keras.Model) -> int:
    """Bytes of the model's and its optimizer's variables."""
    optimizer = getattr(model, "optimizer", None)
    variables = [*model.variables, *(optimizer.variables if optimizer is not None else [])]
    return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)


def model_structure(model: keras.Model) -> str | None:
    """Everything that shapes the traced programs, as text (layer names left out: Keras numbers
    them per session); None if some part is not Keras' own."""
    if not _wholly_keras(model):
        return None
    try:
        layers = model._flatten_layers(include_self=True)
        names = {layer.name: f"<layer {i}>" for i, layer in reversed(list(enumerate(layers)))}
        described = {
            "model": _without_names(model.get_config(), names),
            "compile": model.get_compile_config(),
            "variables": [(tuple(v.shape), str(v.dtype), v.trainable) for v in model.variables],
            "class": type(model).__qualname__,
        }
        return json.dumps(described, sort_keys=True, default=repr)
    except Exception:  # a part Keras cannot describe: fit the fresh model
        return None


def load_starting_state(traced: keras.Model, fresh: keras.Model) -> bool:
    """Give `traced` every starting number of `fresh` (its variables, its optimizer's freshly
    built slots); False, leaving `fresh` to be fitted, if the two do not match one to one."""
    fresh.optimizer.build(fresh.trainable_variables)
    pairs = [
        (traced.variables, fresh.variables),
        (traced.optimizer.variables, fresh.optimizer.variables),
    ]
    for ours, theirs in pairs:
        if len(ours) != len(theirs) or any(
            tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype
            for a, b in zip(ours, theirs, strict=True)
        ):
            return False
    for ours, theirs in pairs:
        for variable, value in zip(ours, theirs, strict=True):
            variable.assign(value)
    return True


def has_stateful_random_ops(model: keras.Model) -> bool:
    """Whether any program Keras traced for the model draws from TensorFlow's stateful random
    ops (their numbers depend on the global seed when traced); True if it cannot be read."""
    try:
        for function in (model.train_function, model.test_function, model.predict_function):
            for concrete in _concrete_functions(function):
                if any(_is_stateful_random(op) for op in _op_types(concrete.graph.as_graph_def())):
                    return True
    except Exception:
        return True
    return False


def _concrete_functions(function: Any) -> list[Any]:
    """The programs traced for one of Keras' functions: a tf.function, or the tf.functions its
    Python wrapper closes over (Keras wraps the traced step in plain functions)."""
    found, todo, seen = [], [function], set()
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        listed = getattr(item, "_list_all_concrete_functions", None)
        if listed is not None:
            found += list(listed())
        elif isinstance(item, types.FunctionType):
            todo += [cell.cell_contents for cell in item.__closure__ or ()]
            todo.append(getattr(item, "__wrapped__", None))
    return found


def _op_types(graph_def: Any) -> Iterator[str]:
    for node in graph_def.node:
        yield node.op
    for function in graph_def.library.function:
        for node in function.node_def:
            yield node.op


def _is_stateful_random(op: str) -> bool:
    return op.startswith(STATEFUL_RANDOM_PREFIXES) and op not in STATEFUL_RANDOM_EXCEPTIONS


def _wholly_keras(model: keras.Model) -> bool:
    """Model, layers, the callables and objects layers call, optimizer, schedule, losses and
    metrics all from Keras itself (Lambda layers wrap a user's function: not Keras' own)."""
    if model.run_eagerly or model.optimizer is None:
        return False
    for layer in model._flatten_layers(include_self=True):
        if not _is_keras(layer) or isinstance(layer, keras.layers.Lambda):
            return False
        if not all(_keras_or_plain(value) for value in vars(layer).values() if _called(value)):
            return False
    compiled = getattr(model, "_compile_config", None)
    arguments = {} if compiled is None else dict(compiled.config)
    arguments["optimizer"] = model.optimizer
    arguments["schedule"] = getattr(model.optimizer, "_learning_rate", None)
    return all(_keras_or_plain(value) for value in arguments.values())


def _called(value: Any) -> bool:
    """A function or Keras callable object a layer holds (activation, regularizer, ...)."""
    return isinstance(value, types.FunctionType | types.MethodType | functools.partial) or (
        isinstance(
            value,
            keras.regularizers.Regularizer
            | keras.constraints.Constraint
            | keras.initializers.Initializer,
        )
    )


def _keras_or_plain(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple):
        return all(_keras_or_plain(item) for item in value)
    if isinstance(value, dict):
        return all(_keras_or_plain(item) for item in value.values())
    if isinstance(value, types.MethodType):
        return _is_keras(value.__self__) and _is_keras(value.__func__)
    return _is_keras(value)


def _is_keras(value: Any) -> bool:
    if isinstance(value, types.FunctionType):
        module = value.__module__ or ""
    else:
        module = type(value).__module__ or ""
    return module == "keras" or module.startswith("keras.")


def _without_names(config: Any, names: dict[str, str]) -> Any:
    """The config with every layer name replaced by the layer's position."""
    if isinstance(config, dict):
        return {key: _without_names(value, names) for key, value in config.items()}
    if isinstance(config, list | tuple):
        return [_without_names(item, names) for item in config]
    if isinstance(config, str) and config in names:
        return names[config]
    return config
