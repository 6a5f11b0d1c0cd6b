"""A scikit-learn Pipeline whose last step is a Keras wrapper: its other steps become the fits'
preprocessing, shipped by value to the task runs and fitted on each fold's training rows
(tasks.data.user_transformer), as scikit-learn's own search fits them.

Search keys reach every step as they do in scikit-learn: `clf__epochs` and `clf__model__units`
are the Keras step's keys (routed as for the bare wrapper), `pre__num__simpleimputer__strategy`
sets a parameter of a clone of the steps before it.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import clone
from sklearn.pipeline import Pipeline

from tasks.data.user_transformer import encode_transformer
from tasks.errors import ConfigError
from tasks.model.routing import TRANSFORMER_KEY

# Values a transformer key carries as itself in the flow's params (JSON, unchanged).
PLAIN = (str, int, float, bool, type(None))


def is_pipeline(estimator: Any) -> bool:
    return isinstance(estimator, Pipeline)


def split_pipeline(pipeline: Pipeline) -> tuple[Any, str, Any]:
    """(the steps before the last as one transformer, the last step's name, the last step)."""
    steps = list(pipeline.steps)
    if len(steps) < 2:
        raise ConfigError(
            "Pipeline: foldflow takes transformer steps followed by a Keras wrapper; "
            f"this one has {len(steps)} step(s)"
        )
    name, final = steps[-1]
    for step_name, step in steps[:-1]:
        if step is None or step == "passthrough":
            continue
        if not hasattr(step, "transform") or not hasattr(step, "fit"):
            raise ConfigError(
                f"Pipeline step {step_name!r} ({type(step).__name__}) is not a transformer: "
                "foldflow takes scikit-learn transformers before the Keras step"
            )
    params = pipeline.get_params(deep=False)
    transformer = Pipeline(steps[:-1], memory=None, verbose=False)
    if params.get("memory") is not None:
        raise ConfigError("Pipeline(memory=...) is not supported by foldflow")
    return transformer, name, final


def split_keys(candidate: dict[str, Any], final_name: str) -> tuple[dict, dict]:
    """(the Keras step's keys without their prefix, the transformer steps' keys)."""
    final, transformer = {}, {}
    for key, value in candidate.items():
        if key == final_name:
            raise ConfigError(
                f"search key {key!r} replaces the Keras step; foldflow searches its parameters "
                f"({final_name}__epochs, {final_name}__model__units, ...)"
            )
        if key.startswith(f"{final_name}__"):
            final[key.removeprefix(f"{final_name}__")] = value
        else:
            transformer[key] = value
    return final, transformer


def configured_transformer(transformer: Any, keys: dict[str, Any]) -> Any:
    """A clone of the transformer steps with a candidate's keys set; an unknown key is
    refused naming it."""
    configured = clone(transformer)
    if keys:
        try:
            configured.set_params(**keys)
        except ValueError as error:
            raise ConfigError(f"search keys {sorted(keys)}: {error}") from None
    return configured


def shipped_transformer(transformer: Any, keys: dict[str, Any], as_frame: bool) -> dict[str, Any]:
    """The routed key that ships the transformer steps (with `keys` set) to the fits."""
    shipped = encode_transformer(configured_transformer(transformer, keys), as_frame)
    return {TRANSFORMER_KEY: shipped}


def transformer_keys_routed(
    transformer: Any, keys: dict[str, Any], as_frame: bool
) -> dict[str, Any]:
    """A candidate's transformer keys as routed keys: plain values as `transformer__<key>`
    (readable in the flow's results, set in the task runs), or, when a value is an object
    (a step searched as a whole: `pre__num__scaler: [StandardScaler(), ...]`), the whole
    configured transformer shipped for this candidate. Unknown keys are refused here."""
    configured_transformer(transformer, keys)
    if all(isinstance(value, PLAIN) for value in keys.values()):
        return {f"{TRANSFORMER_KEY}__{key}": value for key, value in keys.items()}
    return shipped_transformer(transformer, keys, as_frame)


def fitted_pipeline(
    transformer: Any, keys: dict[str, Any], final_name: str, final: Any, X: Any, y: Any
) -> Pipeline:
    """best_estimator_: the transformer steps fitted on every row (the best candidate's keys
    set), then the refitted Keras model."""
    fitted = configured_transformer(transformer, keys).fit(X, y)
    return Pipeline([*fitted.steps, (final_name, final)])
