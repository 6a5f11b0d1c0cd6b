"""Preprocessing inside cross-validation: fitted on each fold's training rows only, then applied
to that fold's rows, so no statistic of the test rows reaches training (no leakage).

The step is a hyperparameter like any other (`preprocess__scaling`, `preprocess__impute_zeros`
in a grid) and feeds both engines: it only changes the feature matrix a fit sees. A refitted
model is saved behind the same step, fitted on every row, as Keras layers.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, StandardScaler

from tasks.config import ModelParams

SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler}


def zeros_as_missing(features: np.ndarray, columns: tuple[int, ...] = ()) -> np.ndarray:
    """Zeros in `columns` become NaN (a glucose or BMI of 0 means 'not measured')."""
    marked = np.array(features, dtype=np.float64)
    block = marked[:, list(columns)]
    block[block == 0] = np.nan
    marked[:, list(columns)] = block
    return marked


def make_preprocessor(model: ModelParams, zero_columns: tuple[int, ...]) -> Pipeline | None:
    """The unfitted scikit-learn step for `model`'s preprocessing; None when there is none."""
    steps: list[tuple[str, Any]] = []
    if model.impute_zeros and zero_columns:
        steps.append(
            (
                "zeros_as_missing",
                FunctionTransformer(zeros_as_missing, kw_args={"columns": tuple(zero_columns)}),
            )
        )
        steps.append(("impute", SimpleImputer(strategy="median", keep_empty_features=True)))
    if model.scaling != "none":
        steps.append(("scale", SCALERS[model.scaling]()))
    return Pipeline(steps) if steps else None


def fit_preprocessor(
    features: np.ndarray, train_rows: list[int] | np.ndarray, model: ModelParams, zero_columns
) -> Pipeline | None:
    """The step fitted on the training rows alone."""
    preprocessor = make_preprocessor(model, tuple(zero_columns))
    if preprocessor is not None:
        preprocessor.fit(np.asarray(features, dtype=np.float64)[np.asarray(train_rows)])
    return preprocessor


def fold_features(
    features: np.ndarray, train_rows: list[int] | np.ndarray, model: ModelParams, zero_columns
) -> np.ndarray:
    """Every row transformed by a step fitted on `train_rows` only (float32, like the data).

    Without preprocessing the features come back untouched, so the tutorial's fits see
    exactly the bytes they always saw.
    """
    preprocessor = fit_preprocessor(features, train_rows, model, zero_columns)
    if preprocessor is None:
        return features
    transformed = preprocessor.transform(np.asarray(features, dtype=np.float64))
    return np.ascontiguousarray(transformed, dtype=np.float32)


class FoldFeatures:
    """Transformed feature matrices per (fold, preprocessing), each computed once per call."""

    def __init__(self, features: np.ndarray, zero_columns: tuple[int, ...] = ()):
        self.features = features
        self.zero_columns = tuple(zero_columns)
        self._views: dict[tuple, np.ndarray] = {}

    def key(self, fold_index: int, model: ModelParams) -> tuple:
        """Fits with equal keys see equal matrices; without preprocessing every fold shares one."""
        if make_preprocessor(model, self.zero_columns) is None:
            return ("raw",)
        return (fold_index, tuple(sorted(model.preprocessing.items())))

    def of(self, fold_index: int, train_rows: list[int], model: ModelParams) -> np.ndarray:
        key = self.key(fold_index, model)
        if key not in self._views:
            self._views[key] = fold_features(self.features, train_rows, model, self.zero_columns)
        return self._views[key]


def preprocessing_record(preprocessor: Pipeline | None, feature_columns: list[str]) -> dict:
    """The fitted step as plain numbers (JSON), so a saved model's inputs can be prepared
    without unpickling anything: impute medians, then (x - center) / scale."""
    record: dict[str, Any] = {"feature_columns": feature_columns}
    if preprocessor is None:
        return record
    steps = dict(preprocessor.steps)
    if "impute" in steps:
        columns = steps["zeros_as_missing"].kw_args["columns"]
        medians = steps["impute"].statistics_
        record["zeros_imputed_with_median"] = {
            feature_columns[c]: float(medians[c]) for c in columns
        }
    scaler = steps.get("scale")
    if isinstance(scaler, StandardScaler):
        record["center"] = scaler.mean_.tolist()
        record["scale"] = scaler.scale_.tolist()
    elif isinstance(scaler, MinMaxScaler):
        record["center"] = scaler.data_min_.tolist()
        record["scale"] = (1 / scaler.scale_).tolist()
    return record


def with_preprocessing(model: keras.Model, record: dict[str, Any]) -> keras.Model:
    """`model` behind its fitted preprocessing, as built-in Keras ops and layers, so the saved
    model takes raw feature rows (and loads with plain `keras.saving.load_model`).

    Without preprocessing the model is returned as it is.
    """
    imputed = record.get("zeros_imputed_with_median", {})
    if not imputed and "center" not in record:
        return model
    columns = record["feature_columns"]
    inputs = keras.Input(shape=(len(columns),), name="raw_features")
    prepared = inputs
    if imputed:
        is_zero_coded = np.array([column in imputed for column in columns])
        medians = np.array([imputed.get(column, 0.0) for column in columns], dtype=np.float32)
        missing = keras.ops.logical_and(keras.ops.equal(prepared, 0.0), is_zero_coded)
        prepared = keras.ops.where(missing, medians, prepared)
    if "center" in record:
        prepared = keras.layers.Normalization(
            mean=record["center"],
            variance=np.square(np.asarray(record["scale"], dtype=np.float64)).tolist(),
            name="scale",
        )(prepared)
    return keras.Model(inputs, model(prepared), name="preprocessed_model")
