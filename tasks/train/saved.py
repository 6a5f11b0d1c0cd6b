"""A run folder's refitted model as an estimator that takes raw rows as they come: text
categories, missing markers, the user's own labels out (foldflow.load_model, foldflow predict).

Raw rows -> the input schema's codes (tasks.data.schema) -> the saved preprocessing
(tasks.data.preprocess.load_preprocessing) -> best_model.keras -> labels in the user's values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from tasks.data.columns import Where
from tasks.data.preprocess import load_preprocessing
from tasks.data.schema import InputSchema, load_input_schema, raw_features
from tasks.errors import ConfigError, DataError
from tasks.files import INCOMPLETE_MARKER

PREDICTION_COLUMN = "prediction"
FRAME_ROWS = Where("the DataFrame", first=0, unit="row")


class SavedModel:
    """best_model.keras with its preprocessing and input schema: `predict(frame)` gives labels
    (or values), `predict_proba(frame)` one column per class in `classes_` order."""

    def __init__(self, run_dir: Path | str):
        self.run_dir = Path(run_dir)
        if (self.run_dir / INCOMPLETE_MARKER).is_file():
            raise ConfigError(
                f"run folder {self.run_dir}: the run did not finish (see {INCOMPLETE_MARKER} "
                "in it), so its model may be missing or partial; run it again"
            )
        self.schema: InputSchema = load_input_schema(self.run_dir)
        record = json.loads((self.run_dir / "best_model.json").read_text())
        # With a transformer file the model takes its output, which imputes missing cells;
        # without one its own first layers scale, and cannot fill a missing cell.
        self.fills_missing = "transformer_file" in record.get("preprocessing", {})
        self._prepare = load_preprocessing(self.run_dir)
        self.model = keras.saving.load_model(self.run_dir / "best_model.keras")

    @property
    def task(self) -> str:
        return self.schema.task

    @property
    def feature_names_in_(self) -> np.ndarray:
        return np.asarray(self.schema.feature_columns, dtype=object)

    @property
    def classes_(self) -> np.ndarray:
        if self.schema.classes is None:
            raise AttributeError("a regression model has no classes_")
        return np.asarray(self.schema.classes)

    def raw_rows(self, frame: Any, where: Where = FRAME_ROWS) -> np.ndarray:
        """A DataFrame (or an array with the features in training order) as the raw matrix."""
        if not isinstance(frame, pd.DataFrame):
            array = np.asarray(frame, dtype=object)
            if array.ndim != 2 or array.shape[1] != len(self.schema.feature_columns):
                raise DataError(
                    f"{where.source}: expected a DataFrame, or rows of "
                    f"{len(self.schema.feature_columns)} features "
                    f"({', '.join(self.schema.feature_columns)}), got shape {array.shape}"
                )
            frame = pd.DataFrame(array, columns=self.schema.feature_columns)
        return raw_features(frame, self.schema, where)

    def outputs(self, rows: np.ndarray, where: Where = FRAME_ROWS) -> np.ndarray:
        """The model's outputs (probabilities or values) for raw-matrix rows."""
        if not self.fills_missing:
            self._refuse_missing(rows, where)
        return np.asarray(self.model.predict(self._prepare(rows), verbose=0))

    def _refuse_missing(self, rows: np.ndarray, where: Where) -> None:
        missing = np.argwhere(np.isnan(rows))
        if missing.size:
            row, column = (int(value) for value in missing[0])
            raise DataError(
                f"{where(row)}, column {self.schema.feature_columns[column]!r}: the cell is "
                "missing, and this model was trained on data without missing cells (it has "
                "no imputation to fill them)"
            )

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """One column per class, `classes_` order, each row summing to 1."""
        outputs = outputs.astype(np.float64)
        if outputs.ndim == 1 or outputs.shape[1] == 1:
            positive = outputs.reshape(-1)
            return np.column_stack([1.0 - positive, positive])
        return outputs

    def labels(self, outputs: np.ndarray) -> np.ndarray:
        """The predicted labels in the user's values (or the predicted values)."""
        if self.task == "regression":
            return outputs.reshape(-1).astype(np.float64)
        if outputs.ndim == 1 or outputs.shape[1] == 1:
            # scikeras' rule, as foldflow scores folds: class 1 where p > 1 - p (float32).
            positive = outputs.reshape(-1).astype(np.float32)
            return self.classes_[(positive > np.float32(1) - positive).astype(int)]
        return self.classes_[np.argmax(outputs, axis=1)]

    def predict(self, frame: Any) -> np.ndarray:
        return self.labels(self.outputs(self.raw_rows(frame)))

    def predict_proba(self, frame: Any) -> np.ndarray:
        if self.task == "regression":
            raise AttributeError("a regression model has no predict_proba")
        return self.probabilities(self.outputs(self.raw_rows(frame)))

    def predictions_table(self, rows: np.ndarray, where: Where = FRAME_ROWS) -> pd.DataFrame:
        """One row per input row: the prediction, and for a classifier `proba_<label>` per
        class."""
        outputs = self.outputs(rows, where)
        table = pd.DataFrame({PREDICTION_COLUMN: self.labels(outputs)})
        if self.task != "regression":
            for label, column in zip(self.classes_, self.probabilities(outputs).T, strict=True):
                table[f"proba_{label}"] = column
        return table


def load_model(run_folder: Path | str) -> SavedModel:
    """A run folder's refitted model, taking raw rows as they come:

    model = foldflow.load_model("runs/grid-...")
    model.predict(frame), model.predict_proba(frame), model.classes_
    """
    return SavedModel(run_folder)
