"""Preprocessing inside cross-validation: fitted on each fold's training rows only, then applied
to that fold's rows, so no statistic of the test rows reaches training (no leakage).

The step is a hyperparameter like any other (`preprocess__scaling`, `preprocess__impute_zeros`,
`preprocess__numeric_impute`, `preprocess__missing_indicator`, `preprocess__categorical_impute`,
`preprocess__categorical_encoding`, `preprocess__min_frequency` in a grid) and feeds both
engines: it only changes the feature matrix a fit sees.

Numbers only, none missing (Pima): the step is the scikit-learn Pipeline it always was (zeros
as missing -> impute -> scale), and a refitted model is saved behind it as Keras layers.
Otherwise it is one ColumnTransformer: numeric columns imputed (and optionally flagged) then
scaled, categorical codes (tasks.data.dataset's contract: 0..k-1, NaN missing) imputed then
one-hot or ordinal encoded; the refit saves it beside the model with joblib (load_preprocessing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, RobustScaler, StandardScaler

from tasks.config import ModelParams
from tasks.data.dataset import DatasetHandle
from tasks.data.stacked import rows_digest, shared_stack
from tasks.data.user_transformer import (
    raw_rows,
    transformed,
    transformer_digest,
    user_fold_features,
)
from tasks.features import FEATURE_KINDS_META, FeatureKinds

if TYPE_CHECKING:
    import keras

# The user's rows (tasks.data.user_transformer.raw_rows) and targets.
UserRows = tuple[Any, np.ndarray]
SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
# Written beside best_model.keras when the saved model takes encoded rows (load_preprocessing).
PREPROCESSING_FILE = "best_preprocessing.joblib"


def zeros_as_missing(features: np.ndarray, columns: tuple[int, ...] = ()) -> np.ndarray:
    """Zeros in `columns` become NaN (a glucose or BMI of 0 means 'not measured')."""
    marked = np.array(features, dtype=np.float64)
    block = marked[:, list(columns)]
    block[block == 0] = np.nan
    marked[:, list(columns)] = block
    return marked


def as_float32(features: np.ndarray) -> np.ndarray:
    """float32, as the engines train on: wide one-hot blocks never exist in float64."""
    return np.asarray(features, dtype=np.float32)


def feature_kinds(dataset: DatasetHandle, features: np.ndarray) -> FeatureKinds:
    """The features' kinds and which columns have a missing cell anywhere: structure, read
    from the whole data so that every fold encodes to the same width."""
    with_missing = np.flatnonzero(np.isnan(features).any(axis=0)) if features.size else []
    return FeatureKinds(
        n_features=features.shape[1],
        categorical=dataset.categorical_indices,
        category_counts=dataset.category_counts,
        zero_coded=dataset.zero_column_indices,
        with_missing=tuple(int(column) for column in with_missing),
        names=tuple(dataset.feature_columns),
    )


def kinds_meta(kinds: FeatureKinds) -> dict[str, Any]:
    """What the model's `meta` carries when its input width depends on the preprocessing
    (tasks.config.model_input_meta); nothing for numbers only, none missing."""
    if kinds.plain:
        return {}
    return {
        "n_features_in_": kinds.encoded_width(ModelParams()),
        FEATURE_KINDS_META: kinds.model_dump(mode="json"),
    }


def _as_kinds(columns: FeatureKinds | tuple[int, ...] | list[int]) -> FeatureKinds | None:
    """Callers with numbers only pass the zero-coded columns' positions (None: no kinds)."""
    return columns if isinstance(columns, FeatureKinds) else None


def _zero_columns(columns: FeatureKinds | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    kinds = _as_kinds(columns)
    return kinds.zero_coded if kinds is not None else tuple(columns)


def _imputer(model: ModelParams) -> SimpleImputer:
    # keep_empty_features: a column missing in every training row of a fold keeps its place.
    return SimpleImputer(
        strategy=model.numeric_impute, fill_value=model.numeric_fill, keep_empty_features=True
    )


def make_preprocessor(
    model: ModelParams, columns: FeatureKinds | tuple[int, ...] | list[int] = ()
) -> Pipeline | ColumnTransformer | None:
    """The unfitted scikit-learn step for `model`'s preprocessing; None when there is none.

    `columns`: the FeatureKinds, or for numbers only the zero-coded columns' positions."""
    kinds = _as_kinds(columns)
    if kinds is not None and not kinds.plain:
        return _column_transformer(model, kinds)
    zero_columns = _zero_columns(columns)
    steps: list[tuple[str, Any]] = []
    if model.impute_zeros and zero_columns:
        steps.append(
            (
                "zeros_as_missing",
                FunctionTransformer(zeros_as_missing, kw_args={"columns": tuple(zero_columns)}),
            )
        )
        steps.append(("impute", _imputer(model)))
    if model.scaling != "none":
        steps.append(("scale", SCALERS[model.scaling]()))
    return Pipeline(steps) if steps else None


def _column_transformer(model: ModelParams, kinds: FeatureKinds) -> ColumnTransformer:
    """Numeric columns, their missing indicators, then categorical columns, in that order."""
    numeric, categorical = kinds.numeric, kinds.categorical
    parts: list[tuple[str, Any, list[int]]] = []
    if numeric:
        steps: list[tuple[str, Any]] = []
        zero_coded = tuple(numeric.index(c) for c in kinds.zero_coded if c in numeric)
        if model.impute_zeros and zero_coded:
            steps.append(
                (
                    "zeros_as_missing",
                    FunctionTransformer(
                        zeros_as_missing,
                        kw_args={"columns": zero_coded},
                        feature_names_out="one-to-one",
                    ),
                )
            )
        # Always there: new rows at prediction may lack any number.
        steps.append(("impute", _imputer(model)))
        if model.scaling != "none":
            steps.append(("scale", SCALERS[model.scaling]()))
        steps.append(("float32", FunctionTransformer(as_float32, feature_names_out="one-to-one")))
        parts.append(("numeric", Pipeline(steps), list(numeric)))
    flagged = [c for c in kinds.with_missing if c in numeric]
    if model.missing_indicator and flagged:
        indicator = Pipeline(
            [
                # features="all": a column per flagged column in every fold (a fixed width).
                ("flag", MissingIndicator(features="all", sparse=False)),
                ("float32", FunctionTransformer(as_float32, feature_names_out="one-to-one")),
            ]
        )
        parts.append(("missing_indicator", indicator, flagged))
    if categorical:
        steps = []
        if model.categorical_impute == "most_frequent":
            most_frequent = SimpleImputer(strategy="most_frequent", keep_empty_features=True)
            steps.append(("impute", most_frequent))
        own_missing = tuple(
            model.categorical_impute == "missing" and c in kinds.with_missing for c in categorical
        )
        encoder = FixedWidthCategories(
            counts=tuple(kinds.category_counts),
            encoding=model.categorical_encoding,
            missing_category=own_missing,
            min_frequency=model.min_frequency,
        )
        steps.append(("encode", encoder))
        parts.append(("categorical", Pipeline(steps), list(categorical)))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


class FixedWidthCategories(TransformerMixin, BaseEstimator):
    """Category codes (0..k-1, NaN missing) one-hot or ordinal encoded, to a width that depends
    on the dataset and the choice only, never on the fold.

    Why a fixed width: the fast engine stacks the fits of every fold into one program, which
    takes one input width; scikit-learn's OneHotEncoder learns its categories (and its
    infrequent group) from each fold's rows, so its width would change from fold to fold.
    Here every column has a place for each of its k known categories (the handle's
    category counts), then one for "missing" where the data has missing cells and
    `missing_category` says so, then one shared by the rare categories when `min_frequency`
    is set. A category absent from the fold's training rows keeps its column, all zeros (as
    at prediction a category never seen in training is all zeros: its weights never trained).
    Categories seen fewer than `min_frequency` times (a fraction of the training rows when
    below 1) set the rare column instead of their own. Ordinal: the code itself (missing as k,
    one column each); min_frequency does not apply.
    """

    def __init__(
        self,
        counts: tuple[int, ...] = (),
        encoding: str = "onehot",
        missing_category: tuple[bool, ...] = (),
        min_frequency: int | float | None = None,
    ):
        self.counts = counts
        self.encoding = encoding
        self.missing_category = missing_category
        self.min_frequency = min_frequency

    def _layout(self) -> list[tuple[int, int | None, int | None]]:
        """(offset, missing column, rare column) of each input column's block."""
        blocks, offset = [], 0
        own = self.missing_category or (False,) * len(self.counts)
        for count, missing in zip(self.counts, own, strict=True):
            end = offset + count
            missing_column = end if missing else None
            end += 1 if missing else 0
            rare_column = end if self.min_frequency is not None else None
            end += 1 if self.min_frequency is not None else 0
            blocks.append((offset, missing_column, rare_column))
            offset = end
        self.width_ = offset
        return blocks

    def fit(self, codes: np.ndarray, y: Any = None) -> FixedWidthCategories:
        codes = np.asarray(codes, dtype=np.float64)
        self.blocks_ = self._layout()
        if self.encoding == "ordinal":
            self.width_ = len(self.counts)
        threshold = 1.0
        if self.min_frequency is not None:
            frequency = float(self.min_frequency)
            threshold = frequency if frequency >= 1 else np.ceil(frequency * len(codes))
        self.seen_, self.own_column_, self.missing_seen_ = [], [], []
        for index, count in enumerate(self.counts):
            column = codes[:, index]
            present = column[~np.isnan(column)].astype(np.int64)
            present = present[(present >= 0) & (present < count)]
            seen = np.bincount(present, minlength=count)
            self.seen_.append(seen)
            self.own_column_.append(seen >= max(threshold, 1.0))
            self.missing_seen_.append(bool(np.isnan(column).any()))
        self.n_features_in_ = len(self.counts)
        return self

    def transform(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.float64)
        if self.encoding == "ordinal":
            filled = np.where(np.isnan(codes), np.asarray(self.counts, dtype=np.float64), codes)
            return filled.astype(np.float32)
        encoded = np.zeros((len(codes), self.width_), dtype=np.float32)
        for index, (offset, missing_column, rare_column) in enumerate(self.blocks_):
            column = codes[:, index]
            missing = np.isnan(column)
            known = ~missing & (column >= 0) & (column < self.counts[index])
            rows = np.flatnonzero(known)
            code = column[rows].astype(np.int64)
            own = self.own_column_[index][code]
            encoded[rows[own], offset + code[own]] = 1.0
            if rare_column is not None:
                rare = self.seen_[index][code] > 0
                encoded[rows[~own & rare], rare_column] = 1.0
            if missing_column is not None and self.missing_seen_[index]:
                encoded[missing, missing_column] = 1.0
        return encoded

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = (
            [f"x{i}" for i in range(len(self.counts))]
            if input_features is None
            else list(input_features)
        )
        if self.encoding == "ordinal":
            return np.asarray(names, dtype=object)
        out = []
        for name, count, (_, missing_column, rare_column) in zip(
            names, self.counts, self.blocks_, strict=True
        ):
            out += [f"{name}={code}" for code in range(count)]
            out += [f"{name}=missing"] if missing_column is not None else []
            out += [f"{name}=rare"] if rare_column is not None else []
        return np.asarray(out, dtype=object)


def fit_preprocessor(
    features: np.ndarray, train_rows: list[int] | np.ndarray, model: ModelParams, zero_columns
) -> Pipeline | ColumnTransformer | None:
    """The step fitted on the training rows alone (`zero_columns`: FeatureKinds, or the
    zero-coded columns' positions for numbers only)."""
    preprocessor = make_preprocessor(model, zero_columns)
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

    def __init__(
        self,
        features: np.ndarray,
        zero_columns: FeatureKinds | tuple[int, ...] = (),
        user_rows: UserRows | None = None,
        user_data_key: str | None = None,
    ):
        self.features = features
        self.zero_columns = (
            zero_columns if isinstance(zero_columns, FeatureKinds) else tuple(zero_columns)
        )
        # The rows as the user gave them, for fits whose preprocessing is the user's own
        # transformer (ModelParams.transformer: a Python Pipeline's steps).
        self.user_rows = user_rows
        # What those rows are made of (user_transformer.rows_key): their fits are then shared.
        self.user_data_key = user_data_key
        self._views: dict[tuple, np.ndarray] = {}

    def key(self, fold_index: int, model: ModelParams) -> tuple:
        """Fits with equal keys see equal matrices; without preprocessing every fold shares one."""
        if model.transformer is not None:
            digest = transformer_digest(model.transformer, model.transformer_params)
            return (fold_index, "transformer", digest)
        if make_preprocessor(model, self.zero_columns) is None:
            return ("raw",)
        return (fold_index, tuple(sorted(model.preprocessing.items())))

    def of(self, fold_index: int, train_rows: list[int], model: ModelParams) -> np.ndarray:
        key = self.key(fold_index, model)
        if key not in self._views:
            self._views[key] = self._computed(train_rows, model)
        return self._views[key]

    def _computed(self, train_rows: list[int] | np.ndarray, model: ModelParams) -> np.ndarray:
        if model.transformer is not None:
            if self.user_rows is None:
                raise ValueError("a fit with the user's own transformer needs the user's rows")
            rows, labels = self.user_rows
            return user_fold_features(
                model.transformer, model.transformer_params, rows, labels, train_rows,
                self.user_data_key,
            )  # fmt: skip
        return fold_features(self.features, train_rows, model, self.zero_columns)

    def stacked(self, views: list[tuple[int, list[int], ModelParams]]) -> np.ndarray:
        """The views (fold index, its training rows, the fit's params) one under the other,
        float32 and 64-byte aligned: one matrix per process for the same data and views,
        encoded once by the threads that ask for it (tasks.data.stacked says why)."""
        sources = (self.features, *(self.user_rows or ()))
        names = [self.key(fold_index, model) for fold_index, _, model in views]
        # Fold 0 of another seed or outer fold has other rows: a view is named by its rows too.
        fitted_on = [
            "" if name == ("raw",) else rows_digest(train_rows)
            for name, (_, train_rows, _) in zip(names, views, strict=True)
        ]
        key = (
            "stacked",
            tuple(id(source) for source in sources),
            repr(self.zero_columns),
            tuple(zip(names, fitted_on, strict=True)),
        )

        def block(index: int) -> np.ndarray:
            _, train_rows, model = views[index]
            return self._computed(train_rows, model)

        return shared_stack(key, sources, len(views), block)


def preprocessing_record(
    preprocessor: Pipeline | ColumnTransformer | None, feature_columns: list[str]
) -> dict:
    """The fitted step as plain numbers (JSON), so a saved model's inputs can be prepared
    without unpickling anything: impute medians, then (x - center) / scale. A
    ColumnTransformer (categories, missing cells) is named instead: it is saved beside the
    model (PREPROCESSING_FILE) and the saved model takes its output."""
    record: dict[str, Any] = {"feature_columns": feature_columns}
    if preprocessor is None:
        return record
    if isinstance(preprocessor, ColumnTransformer):
        record["transformer_file"] = PREPROCESSING_FILE
        record["encoded_columns"] = [str(name) for name in _encoded_names(preprocessor)]
        return record
    steps = dict(preprocessor.steps)
    if "impute" in steps:
        columns = steps["zeros_as_missing"].kw_args["columns"]
        medians = steps["impute"].statistics_
        # The training rows' median (or the mean, or the constant: preprocess__numeric_impute).
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
    elif isinstance(scaler, RobustScaler):
        record["center"] = scaler.center_.tolist()
        record["scale"] = scaler.scale_.tolist()
    return record


def _encoded_names(transformer: ColumnTransformer) -> list[str]:
    try:
        return list(transformer.get_feature_names_out())
    except (AttributeError, ValueError, TypeError):
        return []


def with_preprocessing(model: keras.Model, record: dict[str, Any]) -> keras.Model:
    """`model` behind its fitted preprocessing, as built-in Keras ops and layers, so the saved
    model takes raw feature rows (and loads with plain `keras.saving.load_model`).

    Without preprocessing, or with a saved transformer (`transformer_file`: the model takes
    its output), the model is returned as it is.
    """
    imputed = record.get("zeros_imputed_with_median", {})
    if "transformer_file" in record or (not imputed and "center" not in record):
        return model
    # TensorFlow loads only where a model is trained or built; this one was trained already
    # (the refit), so the compiled-program cache is on (tasks.train.xla_cache).
    import keras

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


def save_preprocessor(preprocessor: Any, path: Path) -> None:
    """The fitted ColumnTransformer, for load_preprocessing."""
    joblib.dump(preprocessor, path)


def load_preprocessing(run_dir: Path | str):
    """A function from raw feature rows (float matrix in the run's feature order, categories
    as codes into the dataset's `categories`, NaN where missing) to best_model.keras' input:

        prepare = load_preprocessing(run_dir)
        model = keras.saving.load_model(Path(run_dir) / "best_model.keras")
        probabilities = model.predict(prepare(raw_rows))

    When best_model.json names no transformer file, the saved model prepares its inputs
    itself (its first layers) and `prepare` returns the rows as float32.
    """
    run_dir = Path(run_dir)
    record = json.loads((run_dir / "best_model.json").read_text()).get("preprocessing", {})
    name = record.get("transformer_file")
    if name is None:
        return as_float32
    transformer = joblib.load(run_dir / name)
    if record.get("user"):  # a Python Pipeline's own transformers: the user's rows in
        columns, categories = record["feature_columns"], record.get("categories", {})
        as_frame = record.get("as_frame", True)

        def prepare_user_rows(rows: np.ndarray) -> np.ndarray:
            return transformed(transformer, raw_rows(rows, columns, categories), as_frame)

        return prepare_user_rows

    def prepare(rows: np.ndarray) -> np.ndarray:
        return as_float32(transformer.transform(np.asarray(rows, dtype=np.float64)))

    return prepare
