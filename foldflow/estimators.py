"""What a scikit-learn-style estimator means to foldflow: the model function, the routed base
params, the task; and the refitted model as an estimator again (`best_estimator_`)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import type_of_target

from foldflow.pipelines import (
    is_pipeline,
    shipped_transformer,
    split_keys,
    split_pipeline,
    transformer_keys_routed,
)
from tasks.errors import ConfigError
from tasks.records import plain_value

# scikeras wrapper parameters that are Keras `fit` options: foldflow's routed keys.
WRAPPER_FIT_KEYS = {
    "shuffle": "fit__shuffle",
    "validation_split": "fit__validation_split",
    "class_weight": "fit__class_weight",
}
# scikeras parameters that change nothing foldflow does: the function compiles its model
# (so the wrapper's optimizer, loss and metrics are unused, as in scikeras), verbosity.
_IGNORED = {"model", "build_fn", "optimizer", "loss", "metrics", "verbose", "random_state"}
_UNSUPPORTED_DEFAULTS = {
    "warm_start": False,
    "validation_batch_size": None,
    "callbacks": None,
    "run_eagerly": False,
}


# Keras' own wrappers (keras.wrappers.SKLearnClassifier / SKLearnRegressor): `fit_kwargs` keys
# foldflow honours, as routed keys; Keras' `fit` defaults apply to those left out.
KERAS_FIT_KEYS = {"epochs": "epochs", "batch_size": "batch_size", **WRAPPER_FIT_KEYS}
KERAS_FIT_DEFAULTS = {"epochs": 1, "batch_size": 32}
KERAS_WRAPPER_KEYS = ("model_kwargs", "fit_kwargs")


class EstimatorPlan(BaseModel):
    """The model function and what the estimator fixes for every combination."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    function: Any  # the model-building function
    base_params: dict[str, Any]
    kind: str  # "classifier", "regressor" or "infer" (a bare function: from y)
    random_state: int | None = None
    # Keras' wrapper: its model_kwargs and fit_kwargs, searched as whole dicts (scikit-learn's
    # set_params replaces them), so every candidate carries its own (`keras_candidate`).
    keras_kwargs: dict[str, dict[str, Any] | None] | None = None
    # A Pipeline's steps before its Keras step (foldflow.pipelines), that step's name, and
    # whether X is a DataFrame (the steps then see the user's columns).
    transformer: Any = None
    final_step: str | None = None
    as_frame: bool = True


def _wrapper_kind(estimator: Any) -> str | None:
    names = {cls.__name__ for cls in type(estimator).__mro__}
    if names & {"KerasClassifier", "SKLearnClassifier"}:
        return "classifier"
    if names & {"KerasRegressor", "SKLearnRegressor"}:
        return "regressor"
    return None


def _is_keras_wrapper(estimator: Any) -> bool:
    return any(cls.__name__ == "SKLBase" for cls in type(estimator).__mro__)


def keras_routed_params(model_kwargs: Any, fit_kwargs: Any) -> dict[str, Any]:
    """A Keras wrapper's model_kwargs and fit_kwargs as foldflow's routed keys, with Keras'
    `fit` defaults (1 epoch, batch 32) where fit_kwargs leaves them out."""
    for name, value in (("model_kwargs", model_kwargs), ("fit_kwargs", fit_kwargs)):
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{name}={value!r}: Keras' wrapper takes a dict or None")
    routed = {f"model__{key}": value for key, value in (model_kwargs or {}).items()}
    fit = {**KERAS_FIT_DEFAULTS, **(fit_kwargs or {})}
    for key, value in fit.items():
        if key == "verbose":
            continue
        if key not in KERAS_FIT_KEYS:
            raise ConfigError(
                f"fit_kwargs[{key!r}]={value!r} is not supported by foldflow; it honours "
                f"{', '.join(KERAS_FIT_KEYS)}"
            )
        if value is None:
            value = KERAS_FIT_DEFAULTS.get(key)  # None for batch_size is Keras' 32 too
        if value is not None:
            routed[KERAS_FIT_KEYS[key]] = value
    return routed


def keras_candidate(plan: EstimatorPlan, candidate: dict[str, Any]) -> dict[str, Any]:
    """One candidate of a search over a Keras wrapper as routed keys: its model_kwargs and
    fit_kwargs, or the estimator's where it does not search them."""
    assert plan.keras_kwargs is not None
    other = sorted(set(candidate) - set(KERAS_WRAPPER_KEYS))
    if other:
        raise ConfigError(
            f"search keys {other}: Keras' {plan.kind} wrapper has no such parameter; search "
            "model_kwargs and fit_kwargs (dicts), as with scikit-learn's search"
        )
    kwargs = {**plan.keras_kwargs, **candidate}
    return keras_routed_params(kwargs["model_kwargs"], kwargs["fit_kwargs"])


def _plan_keras_wrapper(estimator: Any, kind: str) -> EstimatorPlan:
    params = estimator.get_params(deep=False)
    name = type(estimator).__name__
    function = params.get("model")
    if not inspect.isfunction(function):
        raise ConfigError(
            f"{name}(model={type(function).__name__}): foldflow needs a function that builds "
            "and compiles the model (it builds one per fit), not a model instance"
        )
    if params.get("warm_start"):
        raise ConfigError(f"{name}(warm_start=True) is not supported by foldflow")
    kwargs = {key: params.get(key) for key in KERAS_WRAPPER_KEYS}
    fixed = keras_routed_params(kwargs["model_kwargs"], kwargs["fit_kwargs"])
    return EstimatorPlan(function=function, base_params=fixed, kind=kind, keras_kwargs=kwargs)


def plan_estimator(estimator: Any) -> EstimatorPlan:
    """A scikeras KerasClassifier/KerasRegressor or Keras' SKLearnClassifier/SKLearnRegressor
    built from a model function, or the function itself; anything foldflow would not honour
    is refused by name."""
    if is_pipeline(estimator):
        return _plan_pipeline(estimator)
    kind = _wrapper_kind(estimator)
    if kind is not None and _is_keras_wrapper(estimator):
        return _plan_keras_wrapper(estimator, kind)
    if kind is None:
        if callable(estimator) and not hasattr(estimator, "get_params"):
            return EstimatorPlan(function=estimator, base_params={}, kind="infer")
        raise ConfigError(
            f"estimator {type(estimator).__name__}: foldflow takes a scikeras KerasClassifier "
            "or KerasRegressor or Keras' SKLearnClassifier or SKLearnRegressor built from a "
            "model function, or the model function itself"
        )
    params = estimator.get_params(deep=False)
    function = params.get("model") or params.get("build_fn")
    if not callable(function) or hasattr(function, "get_weights"):
        raise ConfigError(
            f"{type(estimator).__name__}(model=...): foldflow needs a function that builds "
            f"and compiles the model, got {type(function).__name__}"
        )
    base: dict[str, Any] = {}
    for key, value in params.items():
        if key in _IGNORED:
            continue
        if key in _UNSUPPORTED_DEFAULTS:
            if value != _UNSUPPORTED_DEFAULTS[key]:
                raise ConfigError(
                    f"{type(estimator).__name__}({key}={value!r}) is not supported by foldflow"
                )
        elif key == "epochs":
            base["epochs"] = value
        elif key == "batch_size":
            base["batch_size"] = 32 if value is None else value  # Keras' default, as scikeras
        elif key in WRAPPER_FIT_KEYS:
            if value is not None:
                base[WRAPPER_FIT_KEYS[key]] = value
        elif key.startswith(("model__", "fit__")):
            base[key] = value
        else:
            raise ConfigError(
                f"{type(estimator).__name__}({key}={value!r}): foldflow routes model__*, fit__*, "
                "epochs, batch_size, shuffle, validation_split and class_weight only"
            )
    seed = params.get("random_state")
    return EstimatorPlan(
        function=function,
        base_params=base,
        kind=kind,
        random_state=seed if isinstance(seed, int) else None,
    )


def _plan_pipeline(pipeline: Any) -> EstimatorPlan:
    """A Pipeline of scikit-learn transformers then a Keras wrapper: the wrapper's plan, with
    the transformers as every fit's preprocessing."""
    transformer, name, final = split_pipeline(pipeline)
    if _wrapper_kind(final) is None:
        raise ConfigError(
            f"Pipeline's last step {name!r} ({type(final).__name__}): foldflow takes a scikeras "
            "KerasClassifier or KerasRegressor or Keras' SKLearnClassifier or SKLearnRegressor "
            "built from a model function"
        )
    plan = plan_estimator(final)
    return plan.model_copy(update={"transformer": transformer, "final_step": name})


def for_data(plan: EstimatorPlan, X: Any) -> EstimatorPlan:
    """The plan for this X: a Pipeline's transformers, shipped in the base params, see a
    DataFrame when X is one."""
    if plan.transformer is None:
        return plan
    as_frame = hasattr(X, "columns")
    shipped = shipped_transformer(plan.transformer, {}, as_frame)
    base = {**plan.base_params, **shipped}
    return plan.model_copy(update={"as_frame": as_frame, "base_params": base})


def routed_candidate(plan: EstimatorPlan, candidate: dict[str, Any]) -> dict[str, Any]:
    """A candidate as the flows take it: routed keys, plain JSON values. A Pipeline's keys:
    its Keras step's as the bare wrapper's, its transformer steps' as `transformer__<key>`
    (tasks.data.user_transformer sets them on a clone of the shipped transformers)."""
    transformer_keys: dict[str, Any] = {}
    if plan.transformer is not None:
        assert plan.final_step is not None
        candidate, transformer_keys = split_keys(candidate, plan.final_step)
    if plan.keras_kwargs is not None:
        candidate = keras_candidate(plan, candidate)
    routed = {routed_grid_key(key): plain_value(value) for key, value in candidate.items()}
    if plan.transformer is not None:
        routed.update(transformer_keys_routed(plan.transformer, transformer_keys, plan.as_frame))
    return routed


def routed_grid_key(key: str) -> str:
    """A search key as foldflow routes it (scikeras' `shuffle` is `fit__shuffle`)."""
    return WRAPPER_FIT_KEYS.get(key, key)


def task_of(kind: str, y: np.ndarray) -> str:
    """binary / multiclass / regression, from the estimator's kind and the target."""
    target_type = type_of_target(y)
    if kind == "regressor" or (kind == "infer" and target_type == "continuous"):
        return "regression"
    if target_type == "binary":
        return "binary"
    if target_type == "multiclass":
        return "multiclass"
    raise ConfigError(f"y is {target_type!r}: a classifier needs binary or multiclass labels")


class FittedKerasModel(BaseEstimator):
    """The refitted best model (best_model.keras) as an estimator: predict, predict_proba
    (classifiers) and score, on raw feature rows like those given to `fit`."""

    def __init__(self, path: str | None = None):
        self.path = path

    def fit(self, X: Any, y: Any = None) -> FittedKerasModel:
        """Fitted once, by foldflow's search (scikit-learn's Pipeline asks it has `fit`)."""
        raise NotImplementedError(
            "this is the search's refitted model; fit foldflow's search again to retrain it"
        )

    def _load(self) -> None:
        import keras

        record = json.loads(Path(self.path).with_name("best_model.json").read_text())
        self.model_ = keras.saving.load_model(self.path)
        self.task_ = record["task"]
        if self.task_ != "regression":
            self.classes_ = np.asarray(record["classes"])

    def _outputs(self, X: Any) -> np.ndarray:
        names = getattr(self, "feature_names_in_", None)
        if hasattr(X, "columns") and names is not None:
            # A DataFrame's columns by name, in the order the model was fitted on.
            X = X.set_axis([str(column) for column in X.columns], axis=1)[list(names)]
        rows = np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X, dtype=np.float32)
        return np.asarray(self.model_.predict(rows, verbose=0))


class FittedKerasClassifier(ClassifierMixin, FittedKerasModel):
    def predict_proba(self, X: Any) -> np.ndarray:
        outputs = self._outputs(X)
        if self.task_ == "binary":
            positive = outputs.ravel().astype(np.float64)
            return np.column_stack([1.0 - positive, positive])
        return outputs.astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        probabilities = self.predict_proba(X)
        if self.task_ == "binary":
            # scikeras' rule, as foldflow scores folds: class 1 where p > 1 - p (float32).
            positive = self._outputs(X).ravel()
            return self.classes_[(positive > np.float32(1) - positive).astype(int)]
        return self.classes_[np.argmax(probabilities, axis=1)]


class FittedKerasRegressor(RegressorMixin, FittedKerasModel):
    def predict(self, X: Any) -> np.ndarray:
        return self._outputs(X).ravel().astype(np.float64)


def load_fitted(path: Path, task: str) -> FittedKerasModel:
    """best_model.keras of a run folder as a fitted estimator."""
    fitted_class = FittedKerasRegressor if task == "regression" else FittedKerasClassifier
    fitted = fitted_class(path=str(path))
    fitted._load()
    return fitted


def describe(function: Callable) -> str:
    return getattr(function, "__qualname__", repr(function))
