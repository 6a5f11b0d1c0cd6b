"""Routing, as scikeras does it and as the tutorial writes it: which grid key goes where.

`model__NAME` and a bare `NAME` that is a parameter of the model function go to the function;
`epochs` and `batch_size` go to training; `fit__NAME` to Keras `fit`; `preprocess__NAME` to the
per-fold preprocessing. Arguments are bound with the function's defaults, so a fit is the same
fit (same seed, same cache entry) however its keys were spelled.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tasks.config import DEFAULT_EARLY_STOPPING_VALIDATION, PREPROCESSING_FIELDS, ModelParams
from tasks.errors import ConfigError

TRAINING_KEYS = {"epochs": "epochs", "batch_size": "batch_size"}
FIT_KEYS = {
    "fit__shuffle": "shuffle",
    "fit__class_weight": "class_weight",
    "fit__validation_split": "validation_split",
}
# Every preprocessing choice (tasks.config.PREPROCESSING_FIELDS): `preprocess__NAME`.
PREPROCESS_KEYS = {f"preprocess__{name}": name for name in PREPROCESSING_FIELDS}
EARLY_STOPPING_KEYS = {
    f"early_stopping__{name}": name
    for name in ("patience", "monitor", "min_delta", "restore_best_weights")
}
# A Python Pipeline's own transformers, shipped by value (tasks.data.user_transformer).
TRANSFORMER_KEY = "transformer"
# Passed by foldflow when the function asks for them, as scikeras passes `meta` (and Keras'
# own scikit-learn wrappers `X` and `y`: see tasks.model.factory.shape_only_data).
META_PARAMETERS = (
    "meta", "n_features_in_", "n_classes_", "classes_", "task", "n_outputs_", "X", "y",
)  # fmt: skip
MAX_MESSAGE_VALUE = 200


@dataclass(frozen=True)
class FunctionSignature:
    """What routing needs to know of a model function."""

    name: str
    parameters: tuple[str, ...]  # routable by name, in order
    defaults: dict[str, Any]  # JSON-representable defaults (others stay the function's own)
    meta_parameters: tuple[str, ...]
    accepts_kwargs: bool

    def describe(self) -> str:
        """`create_model(optimizer, init)`, as messages show it."""
        shown = [*self.meta_parameters, *self.parameters]
        return f"{self.name}({', '.join(shown)}{', **kwargs' if self.accepts_kwargs else ''})"


def signature_of(function: Callable) -> FunctionSignature:
    name = getattr(function, "__name__", repr(function))
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model function {name}: cannot read its signature: {error}") from None
    parameters, defaults, meta = [], {}, []
    accepts_kwargs = False
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_kwargs = True
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        elif parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ConfigError(
                f"model function {name}: parameter {parameter.name!r} is positional-only; "
                "foldflow passes arguments by name"
            )
        elif parameter.name in META_PARAMETERS:
            meta.append(parameter.name)
        else:
            parameters.append(parameter.name)
            if parameter.default is not inspect.Parameter.empty and _is_plain(parameter.default):
                defaults[parameter.name] = _lists_as_tuples(parameter.default)
    return FunctionSignature(name, tuple(parameters), defaults, tuple(meta), accepts_kwargs)


def _is_plain(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _lists_as_tuples(value: Any) -> Any:
    """Lists as tuples, as grid values are: `[12, 8]` and `(12, 8)` are one argument."""
    if isinstance(value, list | tuple):
        return tuple(_lists_as_tuples(item) for item in value)
    return value


def destination(key: str, signature: FunctionSignature) -> tuple[str, str]:
    """(where, name): where is `model`, `training`, `fit` or `preprocess`."""
    if key in TRAINING_KEYS:
        return "training", TRAINING_KEYS[key]
    if key in FIT_KEYS:
        return "fit", FIT_KEYS[key]
    if key in PREPROCESS_KEYS:
        return "preprocess", PREPROCESS_KEYS[key]
    if key in EARLY_STOPPING_KEYS:
        return "early_stopping", EARLY_STOPPING_KEYS[key]
    if key == TRANSFORMER_KEY:  # a Python Pipeline's transformers (foldflow.estimators)
        return "transformer", "transformer"
    if key.startswith(f"{TRANSFORMER_KEY}__"):  # a parameter of one of its steps
        return "transformer_params", key.removeprefix(f"{TRANSFORMER_KEY}__")
    name = key.removeprefix("model__")
    if name in signature.meta_parameters or name in META_PARAMETERS:
        raise ConfigError(
            f"grid key {key!r}: {name!r} is passed by foldflow from the data "
            f"({', '.join(META_PARAMETERS)}), not searched"
        )
    if name in signature.parameters or (key.startswith("model__") and signature.accepts_kwargs):
        return "model", name
    raise ConfigError(
        f"grid key {key!r} is neither a parameter of {signature.describe()} nor a training "
        f"key; training keys: {', '.join(_training_keys())}"
        + (f"; did you mean 'fit__{key}'?" if f"fit__{key}" in FIT_KEYS else "")
    )


def _training_keys() -> list[str]:
    return [*TRAINING_KEYS, *FIT_KEYS, *PREPROCESS_KEYS, *EARLY_STOPPING_KEYS]


def is_training_key(key: str) -> bool:
    """A key that sets a ModelParams field (epochs, fit__, preprocess__, early_stopping__)."""
    return (
        key in TRAINING_KEYS
        or key in FIT_KEYS
        or key in PREPROCESS_KEYS
        or key in (EARLY_STOPPING_KEYS)
    )


def route(routed: dict[str, Any], signature: FunctionSignature) -> ModelParams:
    """One fit's ModelParams from routed keys, arguments bound with the function's defaults."""
    arguments = dict(signature.defaults)
    fields: dict[str, Any] = {}
    set_by: dict[tuple[str, str], str] = {}
    for key, value in routed.items():
        where, name = destination(key, signature)
        if (where, name) in set_by:
            raise ConfigError(f"keys {set_by[(where, name)]!r} and {key!r} both set {name!r}")
        set_by[(where, name)] = key
        if where == "model":
            arguments[name] = _lists_as_tuples(value)
        elif where == "transformer_params":
            fields.setdefault("transformer_params", {})[name] = value
        else:
            fields[name] = value
    if (
        fields.get("patience") is not None
        and str(fields.get("monitor", "val_loss")).startswith("val_")
        and "validation_split" not in fields
    ):
        # Early stopping on a validation score needs validation rows: the default part of
        # each fold's training rows (the flow's log says so).
        fields["validation_split"] = DEFAULT_EARLY_STOPPING_VALIDATION
    try:
        return ModelParams(arguments=arguments, **fields)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']} "
            f"(received {shorten(item.get('input'))})"
            for item in error.errors()
        )
        raise ConfigError(problems) from None


# Routing of training keys needs no model function: they land on ModelParams' own fields.
_NO_FUNCTION = FunctionSignature(
    name="model", parameters=(), defaults={}, meta_parameters=(), accepts_kwargs=False
)


def check_training_choices(combinations: list[dict[str, Any]]) -> None:
    """Each combination's training keys (epochs, fit__, preprocess__, early_stopping__) checked
    as its fits' ModelParams will check them, so a bad choice is refused before any flow run
    (the model function's own keys wait for the function)."""
    seen: set[str] = set()
    for combination in combinations:
        chosen = {key: value for key, value in combination.items() if is_training_key(key)}
        shown = json.dumps(chosen, sort_keys=True, default=str)
        if shown in seen:
            continue
        seen.add(shown)
        try:
            route(chosen, _NO_FUNCTION)
        except ConfigError as error:
            choices = ", ".join(f"{key}={shorten(value)}" for key, value in chosen.items())
            raise ConfigError(f"{choices}: {error}") from None


def shorten(value: Any) -> str:
    """A value's repr, bounded: messages never grow with the input."""
    text = repr(value)
    return text if len(text) <= MAX_MESSAGE_VALUE else text[:MAX_MESSAGE_VALUE] + "..."
