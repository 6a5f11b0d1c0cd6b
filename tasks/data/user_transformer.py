"""A user's own scikit-learn transformer (the steps of a Pipeline before its Keras model) as a
fit's preprocessing: shipped by value inside the fit's params, fitted on the fold's training
rows only, applied to every row of the fold.

A fitted transformer is reused within a process for the same data, transformer, step
parameters and training rows (`data_key`: rows_key), so the width check before training and
every group's views fit each (fold, preprocessing) once.

The transformer travels unfitted, pickled and base64-encoded (`ModelParams.transformer`), so
the fit's cache key holds it with every parameter it was given: another transformer, or the
same one with another `pre__...` value, is another fit, never a stale score. Plain pickle
names a module-level function by reference (workers import it); a lambda cannot travel and
is refused with the reason. It receives the rows as the user gave them: a DataFrame with the
user's columns, text categories as text and NaN where missing (rebuilt from the data
contract's codes: tasks.data.dataset), or a matrix when the user passed one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import threading
import weakref
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from cachetools import LRUCache
from sklearn.base import clone

from tasks.config import ModelParams
from tasks.data.stacked import rows_digest
from tasks.errors import ConfigError
from tasks.records import Fold

# The shipped payload: (unfitted transformer, whether the user's X was a DataFrame).
_PROTOCOL = 4
UNSEEN_CATEGORY = "<a category unseen in training>"


def encode_transformer(transformer: Any, as_frame: bool) -> str:
    """The unfitted transformer as text for a fit's params; refused with the reason when it
    cannot travel to the task runs (a lambda, a local function, an open file...)."""
    try:
        data = pickle.dumps((clone(transformer), bool(as_frame)), protocol=_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ConfigError(
            f"the Pipeline's transformers cannot be shipped to foldflow's task runs: {error}; "
            "use module-level functions (e.g. in FunctionTransformer), not lambdas or local "
            "functions"
        ) from None
    return base64.b64encode(data).decode("ascii")


@lru_cache(maxsize=64)
def decode_transformer(text: str) -> tuple[Any, bool]:
    """(unfitted transformer, as_frame) from encode_transformer's text (cloned on every use)."""
    transformer, as_frame = pickle.loads(base64.b64decode(text.encode("ascii")))  # noqa: S301
    return transformer, as_frame


def transformer_digest(text: str, params: dict[str, Any] | None = None) -> str:
    """A short name for a shipped transformer and its step parameters, for keys that must
    not hold all of it."""
    digest = hashlib.sha256(text.encode("ascii"))
    digest.update(json.dumps(params or {}, sort_keys=True, default=repr).encode())
    return digest.hexdigest()[:16]


# Frames made by raw_rows, while they and their features live: the task runs of one process
# get one frame for the same data, so their stacked views are shared (tasks.data.stacked).
_FRAMES: dict[tuple, tuple[weakref.ref, weakref.ref]] = {}
_FRAMES_LOCK = threading.Lock()


def raw_rows(
    features: np.ndarray, feature_columns: list[str], categories: dict[str, list[str]]
) -> pd.DataFrame:
    """The features as the user gave them: numbers as float64, category codes back to their
    text (tasks.data.dataset's contract), NaN where missing, under the user's column names.
    The same frame again for the same features array (by identity), columns and categories
    while it is held anywhere."""
    if not _frozen(features):  # rows that may still change: a frame of their own each time
        return _raw_rows(features, feature_columns, categories)
    key = (id(features), tuple(feature_columns), json.dumps(categories, sort_keys=True))
    with _FRAMES_LOCK:
        source, made = _FRAMES.get(key, (None, None))
        frame = made() if made is not None and source() is features else None
    if frame is not None:
        return frame
    frame = _raw_rows(features, feature_columns, categories)
    entry = (weakref.ref(features), weakref.ref(frame))
    with _FRAMES_LOCK:
        for dead in [k for k, (s, f) in _FRAMES.items() if s() is None or f() is None]:
            del _FRAMES[dead]
        _FRAMES[key] = entry
    return frame


def _frozen(features: Any) -> bool:
    """An array no one can write to, through itself or the arrays it views (the data a run
    loaded: tasks.data.dataset.load_arrays)."""
    array = features
    while isinstance(array, np.ndarray):
        if array.flags.writeable:
            return False
        array = array.base
    return array is None


def _raw_rows(
    features: np.ndarray, feature_columns: list[str], categories: dict[str, list[str]]
) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for index, name in enumerate(feature_columns):
        values = np.asarray(features[:, index], dtype=np.float64)
        if name in categories:
            labels = np.asarray(categories[name], dtype=object)
            text = np.full(len(values), np.nan, dtype=object)
            present = ~np.isnan(values)
            codes = values[present].astype(np.int64)
            # A category the training rows never had (tasks.data.schema's code -1, at
            # prediction) reaches the transformer as text none of them had either.
            text[present] = np.where(codes >= 0, labels[np.maximum(codes, 0)], UNSEEN_CATEGORY)
            columns[name] = text
        else:
            columns[name] = values
    return pd.DataFrame(columns, columns=list(feature_columns))


def configured(text: str, params: dict[str, Any] | None = None) -> Any:
    """A clone of the shipped transformer with a candidate's step parameters set (routed
    `transformer__pre__num__simpleimputer__strategy` sets `pre__num__simpleimputer__strategy`)."""
    transformer = clone(decode_transformer(text)[0])
    return transformer.set_params(**params) if params else transformer


def rows_key(arrays_sha256: str, feature_columns: list[str], categories: dict) -> str:
    """What the user's rows (raw_rows) and targets are made of: the arrays' SHA-256
    (tasks.data.dataset.arrays_digest: features and labels), the columns and the categories'
    text. A fitted transformer is reused only for the same key (fit_user_transformer)."""
    digest = hashlib.sha256(arrays_sha256.encode())
    digest.update(json.dumps([feature_columns, categories], sort_keys=True).encode())
    return digest.hexdigest()


# Fitted transformers of this process by (rows_key, transformer and step parameters, training
# rows): small (statistics, categories), and kept only for a few folds x choices.
_FITTED: LRUCache = LRUCache(maxsize=64)
_FITTED_LOCK = threading.Lock()


def fit_user_transformer(
    text: str,
    params: dict[str, Any] | None,
    rows: pd.DataFrame,
    labels: np.ndarray,
    train_rows: Any,
    data_key: str | None = None,
) -> Any:
    """A clone of the shipped transformer, its step parameters set, fitted on `train_rows`
    (with their targets, as a Pipeline passes `y` to its transformers). With `data_key` (the
    rows' rows_key) a fit made before in this process for the same key, transformer, step
    parameters and training rows is given back instead (not to be changed by the caller)."""
    key = None
    if data_key is not None:
        key = (data_key, transformer_digest(text, params), rows_digest(train_rows))
        with _FITTED_LOCK:
            fitted = _FITTED.get(key)
        if fitted is not None:
            return fitted
    as_frame = decode_transformer(text)[1]
    fitted = configured(text, params)
    train = np.asarray(train_rows)
    data = rows.iloc[train] if as_frame else rows.to_numpy()[train]
    fitted.fit(data, np.asarray(labels)[train])
    if key is not None:
        with _FITTED_LOCK:
            _FITTED[key] = fitted
    return fitted


def transform_rows(text: str, fitted: Any, rows: pd.DataFrame) -> np.ndarray:
    """Every row through a fitted transformer, as the dense float32 matrix the engines take."""
    return transformed(fitted, rows, decode_transformer(text)[1])


def transformed(fitted: Any, rows: pd.DataFrame, as_frame: bool) -> np.ndarray:
    """Rows (as the user gave them) through a fitted transformer: a dense float32 matrix."""
    output = fitted.transform(rows if as_frame else rows.to_numpy())
    if hasattr(output, "toarray"):  # a sparse one-hot block
        output = output.toarray()
    return np.ascontiguousarray(np.asarray(output, dtype=np.float32))


def user_fold_features(
    text: str,
    params: dict[str, Any] | None,
    rows: pd.DataFrame,
    labels: np.ndarray,
    train_rows: Any,
    data_key: str | None = None,
) -> np.ndarray:
    """Every row transformed by the user's transformer fitted on `train_rows` only."""
    fitted = fit_user_transformer(text, params, rows, labels, train_rows, data_key)
    return transform_rows(text, fitted, rows)


def _output_width(
    text: str,
    params: dict[str, Any],
    rows: pd.DataFrame,
    labels: np.ndarray,
    train_rows: Any,
    data_key: str | None,
) -> int:
    fitted = fit_user_transformer(text, params, rows, labels, train_rows, data_key)
    return transform_rows(text, fitted, rows.iloc[:1]).shape[1]


def common_widths(
    models: list[ModelParams],
    rows: pd.DataFrame,
    labels: np.ndarray,
    folds: list[Fold],
    data_key: str | None = None,
) -> dict[str, int]:
    """Each distinct user transformer's output width (by ModelParams.transformer_key) when
    every fold's training rows give the same one: its Keras step can then be planned once and
    trained on the fast engine. Left out when folds differ (a category missing from some
    fold's training rows) or when fitting fails: those fits train one by one on the reference
    engine, which reports the transformer's own error. With `data_key` (rows_key) the fits
    stay for the views the groups then train on (fit_user_transformer)."""
    widths: dict[str, int] = {}
    tried: set[str] = set()
    for model in models:
        key = model.transformer_key()
        if key is None or key in tried:
            continue
        tried.add(key)
        try:
            found = {
                _output_width(
                    model.transformer, model.transformer_params, rows, labels, f.train, data_key
                )
                for f in folds
            }
        except Exception:  # noqa: BLE001 (the user's transformer: its error comes with its fits)
            continue
        if len(found) == 1:
            widths[key] = found.pop()
    return widths
