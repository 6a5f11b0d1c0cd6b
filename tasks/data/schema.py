"""The saved model's input schema: what raw rows must look like for a run folder's model, and
their conversion into the data contract's matrix (numbers, category codes, NaN missing).

The refit writes it beside best_model.keras (input_schema.json) so that new rows are read
by the training data's own rules: the same columns, delimiter, header and missing markers,
and each categorical column's categories in code order. No TensorFlow here: `foldflow
predict` refuses a file whose columns do not match before loading it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from tasks.data.columns import Where
from tasks.data.csv_reader import read_csv
from tasks.data.dataset import DatasetHandle, class_order, load_arrays
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError, DataError
from tasks.files import write_text_atomically

INPUT_SCHEMA_FILE = "input_schema.json"
# The code a category never seen in training gets: outside 0..k-1, so one-hot encodes it as
# all zeros (FixedWidthCategories), as a category a fold's training rows lacked is at training.
UNSEEN_CATEGORY = -1


class InputSchema(BaseModel):
    """The training data's layout and reading rules, the feature kinds and categories, and
    what the model's outputs mean (classes in encoding order, the positive one)."""

    model_config = ConfigDict(frozen=True)

    format: str = "csv"
    header: bool = True
    delimiter: str = ","
    columns: list[str]  # every column of the training file, used or not
    feature_columns: list[str]  # the model's input order
    kinds: dict[str, Literal["numeric", "categorical"]]
    categories: dict[str, list[str]] = {}  # code i of a column is categories[column][i]
    missing_values: list[str] = []
    target: str
    task: str
    classes: list[Any] | None = None  # output i means classes[i]; None for a regression
    positive_label: Any = None


def input_schema(dataset: DatasetHandle, spec: DatasetSpec) -> InputSchema:
    """The schema of the data the refit trained on (`spec` gives the reading rules)."""
    labels = load_arrays(dataset)[1]
    return InputSchema(
        format=spec.format,
        header=spec.header,
        delimiter=spec.delimiter,
        columns=dataset.columns or [*dataset.feature_columns, dataset.target],
        feature_columns=dataset.feature_columns,
        kinds={
            column: "categorical" if column in dataset.categorical_columns else "numeric"
            for column in dataset.feature_columns
        },
        categories=dataset.categories,
        missing_values=spec.missing_values,
        target=dataset.target,
        task=dataset.task,
        classes=class_order(labels, dataset.task, dataset.positive_label),
        positive_label=dataset.positive_label,
    )


def save_input_schema(run_dir: Path, dataset: DatasetHandle, spec: DatasetSpec) -> Path:
    """input_schema.json in the run folder, written atomically beside best_model.keras."""
    path = Path(run_dir) / INPUT_SCHEMA_FILE
    schema = input_schema(dataset, spec)
    write_text_atomically(path, json.dumps(schema.model_dump(mode="json"), indent=2) + "\n")
    return path


def load_input_schema(run_dir: Path | str) -> InputSchema:
    """The schema a run folder's refit saved; refused when the folder has no refitted model."""
    run_dir = Path(run_dir)
    if not (run_dir / "best_model.keras").is_file():
        raise ConfigError(
            f"{run_dir} holds no best_model.keras: predictions need a grid or search run "
            "with its refit (not --no-refit)"
        )
    path = run_dir / INPUT_SCHEMA_FILE
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} has no {INPUT_SCHEMA_FILE} (written by a refit since foldflow "
            "predict exists): run the search again to predict from it"
        )
    return InputSchema.model_validate_json(path.read_text())


def check_columns(columns: list[str], schema: InputSchema, name: str) -> None:
    """Every feature column present, and no column the training data did not have."""
    known = set(schema.columns)
    for column in columns:
        if column not in known:
            raise DataError(
                f"{name}: column {column!r} was not in the training data (its columns: "
                f"{', '.join(schema.columns)})"
            )
    present = set(columns)
    for column in schema.feature_columns:
        if column not in present:
            raise DataError(
                f"{name}: column {column!r} is missing; the model takes the features "
                f"{', '.join(schema.feature_columns)}"
            )


def _first_fields(path: Path, delimiter: str, name: str) -> list[str]:
    """The first line's fields (header names or the first row's cells)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as stream:
            line = stream.readline()
    except OSError as error:
        raise DataError(f"{name} cannot be read: {error.strerror or error}") from None
    return [field.strip(" \t") for field in next(csv.reader([line], delimiter=delimiter), [])]


def _file_columns(path: Path, schema: InputSchema, name: str) -> list[str]:
    """The file's columns: its header's, or (headerless) the training file's, with or
    without the target, told apart by the first line's field count."""
    fields = _first_fields(path, schema.delimiter, name)
    if schema.header:
        return fields
    without_target = [column for column in schema.columns if column != schema.target]
    for columns in (schema.columns, without_target):
        if len(fields) == len(columns):
            return columns
    raise DataError(
        f"{name}, line 1: {len(fields)} fields, but the training data had {len(schema.columns)} "
        f"({', '.join(schema.columns)}), or {len(without_target)} without the target "
        f"{schema.target!r}"
    )


def _reading_spec(columns: list[str], schema: InputSchema) -> DatasetSpec:
    """A spec that reads every column as written (text, None where missing) by the training
    data's rules; the reader wants a target, so the last column stands in for one."""
    return DatasetSpec(
        name="predict",
        url="file:predict",
        header=schema.header,
        delimiter=schema.delimiter,
        columns=None if schema.header else columns,
        target=columns[-1],
        categorical=columns[:-1],
        task="multiclass",
        missing_values=schema.missing_values,
    )


def read_rows(path: Path | str, schema: InputSchema) -> tuple[pd.DataFrame, Where]:
    """A file laid out like the training data (with or without its target column), as read,
    and how messages name its rows. Its columns are checked before its rows are read."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise DataError(f"{name} is not a file")
    with open(path, "rb") as stream:
        is_parquet = stream.read(4) == b"PAR1"
    if is_parquet:
        try:
            frame = pd.read_parquet(path, engine="pyarrow")
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise DataError(f"{name} is not a readable Parquet file: {error}") from None
        frame.columns = [str(column) for column in frame.columns]
        check_columns(list(frame.columns), schema, name)
        return frame.reset_index(drop=True), Where(name, unit="row")
    columns = _file_columns(path, schema, name)
    check_columns(columns, schema, name)
    if len(columns) < 2:  # the reader's spec needs a second column to stand in for a target
        frame = pd.read_csv(path, sep=schema.delimiter, header=0 if schema.header else None)
        frame.columns = columns
    else:
        frame = read_csv(path, _reading_spec(columns, schema), name)[0]
    return frame, Where(name, first=2 if schema.header else 1)


def _missing(series: pd.Series, missing_values: list[str]) -> np.ndarray:
    """Null cells and the missing markers (an empty cell always is one)."""
    mask = series.isna().to_numpy().copy()
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        mask |= series.astype(str).str.strip().isin({"", *missing_values}).to_numpy()
    return mask


def _as_text(value: Any) -> str:
    """A cell as the training data named its category: numbers as written by
    tasks.data.columns (1.0 -> '1'), text stripped."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _number_key(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _category_codes(series: pd.Series, categories: list[str], missing: np.ndarray) -> np.ndarray:
    """Codes into the training categories; NaN where missing; UNSEEN_CATEGORY where new.
    '1.0' finds the category '1' (and 1 finds '1.0') when no category is written as given."""
    position = {category: code for code, category in enumerate(categories)}
    by_number: dict[float, int] = {}
    for code, category in enumerate(categories):
        number = _number_key(category)
        if number is not None:
            by_number.setdefault(number, code)
    codes = np.full(len(series), np.nan)
    for row in np.flatnonzero(~missing):
        text = _as_text(series.iloc[row])
        code = position.get(text)
        if code is None:
            number = _number_key(text)
            code = by_number.get(number, UNSEEN_CATEGORY) if number is not None else None
        codes[row] = UNSEEN_CATEGORY if code is None else code
    return codes


def _numbers(series: pd.Series, missing: np.ndarray, column: str, where: Where) -> np.ndarray:
    """A numeric feature as float64, NaN where missing; text is refused naming its row."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    kept = series.astype(object).where(~missing, None)
    values = pd.to_numeric(kept, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(np.isnan(values) & ~missing)
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{where(row)}, column {column!r}: value {str(series.iloc[row])[:40]!r} is not a "
            "number, and the model was trained on numbers in this column"
        )
    return values


def raw_features(frame: pd.DataFrame, schema: InputSchema, where: Where) -> np.ndarray:
    """Raw rows as the model's raw input (float64, the features in training order): numbers,
    NaN where missing; categorical columns as codes into the training categories."""
    frame = frame.set_axis([str(column) for column in frame.columns], axis=1)
    check_columns(list(frame.columns), schema, where.source)
    matrix = np.empty((len(frame), len(schema.feature_columns)), dtype=np.float64)
    for index, column in enumerate(schema.feature_columns):
        series = frame[column].reset_index(drop=True)
        missing = _missing(series, schema.missing_values)
        if schema.kinds[column] == "categorical":
            matrix[:, index] = _category_codes(series, schema.categories[column], missing)
        else:
            matrix[:, index] = _numbers(series, missing, column, where)
    return matrix
