"""Column kinds and the data contract: a feature column is numeric (numbers, NaN where
missing) or categorical (codes 0..k-1 into its sorted categories, NaN where missing); the
target keeps the user's own labels. One path for CSV, Parquet and in-memory data, so every
source is read the same way and every refusal names the user's file, line (or row) and column.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError, DataError

FLOAT32_MAX = float(np.finfo(np.float32).max)
LINES_LISTED = 5
# Dates and times as files write them: 2024-01-31, 2024-01-31T10:00:00Z, 31/01/2024, 31.01.2024,
# 10:00, 10:00:00 pm. A model cannot learn from their text; they need turning into numbers.
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s?[AaPp][Mm])?"
_DATE_OR_TIME = re.compile(
    r"^(?:\d{4}-\d{1,2}-\d{1,2}(?:[ T]" + _TIME + r"(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}(?: " + _TIME + r")?"
    r"|" + _TIME + r")$"
)


class Where(NamedTuple):
    """How messages name a row: the user's file and its line (a CSV's), or its row."""

    source: str
    first: int = 1
    unit: str = "line"
    rows: tuple[int, ...] | None = None  # the original row of each kept row, once rows dropped

    def number(self, row: int) -> int:
        return (self.rows[row] if self.rows is not None else row) + self.first

    def __call__(self, row: int) -> str:
        return f"{self.source}, {self.unit} {self.number(row)}"


class EncodedData(NamedTuple):
    """The used columns as the Parquet copy keeps them, and what was learned reading them."""

    frame: pd.DataFrame
    categorical_columns: list[str]
    categories: dict[str, list[str]]
    positive_label: int | str | None
    rows_without_target: int


def _plain(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _missing_mask(series: pd.Series, missing_values: list[str]) -> np.ndarray:
    """Cells that are missing: null, or text that is one of the spec's missing markers."""
    mask = series.isna().to_numpy().copy()
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        markers = {*missing_values, ""}
        text = series.astype(str).str.strip()
        mask |= text.isin(markers).to_numpy()
    return mask


def _refuse_missing_target(rows: np.ndarray, spec: DatasetSpec, where: Where, name: str) -> None:
    first = ", ".join(str(where.number(int(row))) for row in rows[:LINES_LISTED])
    raise DataError(
        f"{name}: {len(rows)} row(s) have no value in the target {spec.target!r} "
        f"({where.unit}s {first}{', ...' if len(rows) > LINES_LISTED else ''}): fill them in, "
        "or set "
        "`drop_missing_target: true` in the dataset spec to leave those rows out"
    )


def _refuse_dates(series: pd.Series, column: str, where: Where) -> None:
    """Text that is all dates or times is refused by name: as categories it would mean nothing."""
    present = series.dropna().astype(str)
    if present.empty or not present.map(lambda text: bool(_DATE_OR_TIME.match(text))).all():
        return
    row = int(present.index[0])
    raise DataError(
        f"{where(row)}, column {column!r}: value {present.iloc[0]!r} is a date or time, which "
        "foldflow does not read: turn the column into numbers first (e.g. days since a date, "
        "day of week) or leave it out with `features:`"
    )


def _numbers(series: pd.Series, column: str, where: Where) -> np.ndarray:
    """A column that must hold numbers, as float64: text is refused naming its row."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    converted = pd.to_numeric(series.astype(object).where(series.notna(), None), errors="coerce")
    bad = np.flatnonzero(converted.isna().to_numpy() & series.notna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{where(row)}, column {column!r}: value {str(series.iloc[row])[:40]!r} is not a number"
        )
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


def _refuse_float32_overflow(values: np.ndarray, column: str, where: Where) -> None:
    """Finite numbers beyond float32's range would become inf in the feature matrix."""
    beyond = np.flatnonzero(np.isfinite(values) & (np.abs(values) > FLOAT32_MAX))
    if beyond.size:
        row = int(beyond[0])
        raise DataError(
            f"{where(row)}, column {column!r}: value {values[row]:g} is beyond float32's range "
            f"(±{FLOAT32_MAX:.3g}; it would overflow to inf): rescale the column"
        )


def _category_names(present: pd.Series) -> tuple[list[str], pd.Series]:
    """Sorted distinct values as text (numbers sorted as numbers), and each cell's text."""
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        distinct = sorted(present.unique().tolist())
        text = present.map(lambda value: str(_plain(value)))
        return [str(_plain(value)) for value in distinct], text
    text = present.astype(str).str.strip()
    return sorted(text.unique().tolist()), text


def _codes(
    series: pd.Series, column: str, spec: DatasetSpec, where: Where, name: str
) -> tuple[np.ndarray, list[str]]:
    """Codes into the column's sorted categories (NaN where missing), within max_categories."""
    present = series.dropna()
    categories, text = _category_names(present)
    if len(categories) > spec.max_categories:
        first_beyond = int(text.drop_duplicates().index[spec.max_categories])
        raise DataError(
            f"{name}, column {column!r}: {len(categories)} distinct values, more than "
            f"max_categories ({spec.max_categories}; value {spec.max_categories + 1} first on "
            f"{where.unit} {where.number(first_beyond)}): raise `max_categories` in the "
            "dataset spec, or leave the column out with `features:`"
        )
    codes = np.full(len(series), np.nan)
    position = {category: index for index, category in enumerate(categories)}
    codes[present.index.to_numpy()] = text.map(position).to_numpy(dtype=np.float64)
    return codes, categories


def _feature(
    series: pd.Series, column: str, spec: DatasetSpec, where: Where, name: str
) -> tuple[np.ndarray, list[str] | None]:
    """(values, None) for a numeric column; (codes, categories) for a categorical one."""
    if pd.api.types.is_datetime64_any_dtype(series) or isinstance(
        series.dtype, pd.PeriodDtype | pd.DatetimeTZDtype
    ):
        raise DataError(
            f"{name}, column {column!r} holds dates or times, which foldflow does not read: "
            "turn it into numbers first or leave it out with `features:`"
        )
    series = series.where(~_missing_mask(series, spec.missing_values), None)
    is_number = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if column in spec.categorical or not (is_number or column in spec.numeric):
        if column not in spec.categorical:
            _refuse_dates(series, column, where)
        return _codes(series, column, spec, where, name)
    values = _numbers(series, column, where)
    _refuse_float32_overflow(values, column, where)
    return values, None


def _target(series: pd.Series, spec: DatasetSpec) -> pd.Series:
    """Numbers stay numbers; text is stripped; booleans become text ('False', 'True')."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype(str)
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(np.float64)
    return series.astype(str).str.strip() if spec.task != "regression" else series


def _resolved_positive(target: pd.Series, spec: DatasetSpec, name: str) -> int | str | None:
    """The positive class of a binary target: the spec's, else the second in sorted order."""
    if spec.task != "binary":
        return None
    classes = sorted({_plain(value) for value in target.tolist()}, key=_sort_key)
    if len(classes) != 2:
        return None  # validation names the problem with its row
    if spec.positive_label is None:
        return classes[1]
    wanted = str(spec.positive_label).strip().lower()
    for label in classes:
        if str(label).strip().lower() == wanted:
            return label
    raise ConfigError(
        f"{name}: positive_label {spec.positive_label!r} is not one of the target "
        f"{spec.target!r}'s classes {classes}"
    )


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def encode_columns(frame: pd.DataFrame, spec: DatasetSpec, name: str, where: Where) -> EncodedData:
    """The used columns in the data contract's form: features as numbers or category codes,
    NaN where missing (float64 here, exact; float32 once loaded, checked to fit), and the
    target as labels or numbers.

    `spec` must know its columns; `where` names a row index for messages.
    """
    frame = frame[spec.used_columns].reset_index(drop=True)
    missing_target = np.flatnonzero(_missing_mask(frame[spec.target], spec.missing_values))
    if missing_target.size:
        if not spec.drop_missing_target:
            _refuse_missing_target(missing_target, spec, where, name)
        kept = np.setdiff1d(np.arange(len(frame)), missing_target)
        frame = frame.iloc[kept].reset_index(drop=True)
        where = where._replace(rows=tuple(int(row) for row in kept))  # messages keep lines
    columns: dict[str, Any] = {}
    categories: dict[str, list[str]] = {}
    for column in spec.used_columns:
        if column == spec.target:
            columns[column] = _target(frame[column], spec)
            continue
        values, names = _feature(frame[column], column, spec, where, name)
        columns[column] = values
        if names is not None:
            categories[column] = names
    encoded = pd.DataFrame(columns)
    return EncodedData(
        frame=encoded,
        categorical_columns=[c for c in spec.feature_columns if c in categories],
        categories=categories,
        positive_label=_resolved_positive(encoded[spec.target], spec, name),
        rows_without_target=int(missing_target.size),
    )
