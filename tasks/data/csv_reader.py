"""The strict CSV reader (and the Parquet one): bad data stops the run with a message naming the
file, line, column and value. Nothing here ever unpickles: CSV is read by pyarrow.csv, Parquet
by pyarrow."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from tasks.data.sources import CHUNK_BYTES
from tasks.dataset_spec import DatasetSpec
from tasks.errors import DataError

# ASCII decimal numbers only: float() would also take '1_0', '٣' and surrounding Unicode spaces.
# nan/inf pass here on purpose, so validation can name them with their row and column.
_NUMBER = r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)$"
_CELL_PADDING = " \t"
_HEAD_BYTES = 1 << 16
_CANDIDATE_DELIMITERS = (",", ";", "\t", "|")


def _data_end(path: Path) -> int:
    """Bytes up to the last one that is not blank: blank lines at the end hold no data."""
    with open(path, "rb") as stream:
        end = stream.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - CHUNK_BYTES)
            stream.seek(start)
            kept = stream.read(end - start).rstrip(b" \t\r\n")
            if kept:
                return start + len(kept)
            end = start
    return 0


def _head(path: Path, end: int) -> bytes:
    with open(path, "rb") as stream:
        return stream.read(min(end, _HEAD_BYTES))


def _refuse_non_csv(head: bytes, end: int, name: str) -> None:
    """The common non-CSV answers: nothing, an HTML page, a compressed or Parquet file."""
    if head.startswith(b"\x1f\x8b"):
        raise DataError(
            f"{name} is gzip-compressed, not CSV text: decompress it first (a server's "
            "Content-Encoding: gzip is decoded on download, a .gz file is not)"
        )
    if head.startswith(b"PAR1"):
        raise DataError(f"{name} is a Parquet file, not CSV: set `format: parquet` in the spec")
    text = head.decode("utf-8-sig", errors="replace")
    if not text.strip() and end <= len(head):
        raise DataError(f"{name} is empty (no data rows)")
    start = text.lstrip()
    if start.startswith("<"):
        first_line = start.splitlines()[0][:80]
        raise DataError(
            f"{name} looks like an HTML page, not CSV (an error or login page saved as data?): "
            f"starts with {first_line!r}"
        )


def _first_line(head: bytes) -> str:
    text = head.decode("utf-8-sig", errors="replace")
    return re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]


def _field_count(line: str, delimiter: str) -> int:
    return len(next(csv.reader([line], delimiter=delimiter), []))


def _refuse_wrong_delimiter(line: str, spec: DatasetSpec, name: str) -> None:
    """A first line that splits into the expected fields (or, without a known count, into any
    fields) on another common delimiter than the spec's is a spec to fix: say which."""
    counts = {d: _field_count(line, d) for d in (spec.delimiter, *_CANDIDATE_DELIMITERS)}
    chosen = counts[spec.delimiter]
    expected = len(spec.columns) if spec.columns else None
    others = [d for d in _CANDIDATE_DELIMITERS if d != spec.delimiter]
    if expected is not None:
        better = [d for d in others if chosen != expected and counts[d] == expected]
    else:
        better = sorted((d for d in others if chosen == 1 and counts[d] > 1), key=counts.get)[-1:]
    if better:
        best = better[0]
        raise DataError(
            f"{name}, line 1 splits into {counts[best]} fields on {best!r} but {chosen} on "
            f"{spec.delimiter!r}: set `delimiter: {json.dumps(best)}` in the dataset spec"
        )


def _first_undecodable_line(path: Path) -> int | None:
    """Line number of the first line that is not UTF-8 (error path only: reads the file)."""
    number = 0
    with open(path, "rb") as stream:
        for raw in stream:
            for piece in raw.rstrip(b"\n").removesuffix(b"\r").split(b"\r"):
                number += 1
                try:
                    piece.decode("utf-8")
                except UnicodeDecodeError:
                    return number
    return None


def _line_text(path: Path, number: int) -> str:
    """One line of the file, as the reader numbers lines (error path only)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline=None) as stream:
        for index, line in enumerate(stream, start=1):
            if index == number:
                return line.rstrip("\n")
    return ""


@contextlib.contextmanager
def _undecodable_rows_unreported(handler: Callable) -> Iterator[None]:
    """pyarrow decodes a row of the wrong length as UTF-8 before calling `handler`; a byte that
    is not UTF-8 there raises inside pyarrow, which reports it as "Exception ignored" on stderr
    and then stops the read. The read's refusal names the line instead (_read_cells), so that
    one report is left out; any other goes to the hook as before."""
    previous = sys.unraisablehook

    def hook(report: Any) -> None:
        if not (isinstance(report.exc_value, UnicodeDecodeError) and report.object is handler):
            previous(report)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _read_cells(path: Path, end: int, spec: DatasetSpec, n_columns: int, name: str) -> list:
    """Every line's cells as text (string arrays, one per column), quotes resolved.

    One line per row: an empty line becomes a row of empty cells and a malformed line stops
    the read, so row k is line k + 1 (a value spanning lines is refused afterwards).
    """
    invalid: list[tuple[int | None, int, str]] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        invalid.append((row.number, row.actual_columns, row.text))
        return "error"

    names = [f"c{i}" for i in range(n_columns)]
    try:
        with pa.memory_map(str(path)) as mapped, _undecodable_rows_unreported(on_invalid):
            table = pa_csv.read_csv(
                pa.BufferReader(mapped.read_buffer(end)),
                read_options=pa_csv.ReadOptions(column_names=names, use_threads=False),
                parse_options=pa_csv.ParseOptions(
                    delimiter=spec.delimiter,
                    ignore_empty_lines=False,
                    invalid_row_handler=on_invalid,
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    null_values=[],
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            return [table.column(i).combine_chunks() for i in range(n_columns)]
    except pa.ArrowInvalid as error:
        if invalid:
            number, found, text = invalid[0]
            where = f"{name}, line {number}" if number else name
            if not text.strip(_CELL_PADDING):
                raise DataError(
                    f"{where} is blank: blank lines are allowed only at the end"
                ) from None
            detail = " (a quote is not closed)" if text.count('"') % 2 else ""
            raise DataError(
                f"{where}: expected {n_columns} columns, found {found}{detail} ({text[:80]!r})"
            ) from None
        number = _first_undecodable_line(path)
        if "UTF8" in str(error) or number is not None:
            where = f"{name}, line {number}" if number else name
            raise DataError(f"{where} is not UTF-8 text: save the file as UTF-8") from None
        raise DataError(f"{name} could not be read as CSV: {error}") from None


def _first_true(mask: pa.Array) -> int:
    """Index of the first true value, -1 when none is."""
    return pc.index(mask, True).as_py()


def _refuse_blank_or_multiline_rows(path: Path, cells: list, columns: list[str], name: str) -> None:
    """Rows are lines only if no value spans lines; an empty line inside the data is refused."""
    blank = functools.reduce(pc.and_, [pc.equal(cell, "") for cell in cells])
    first_blank = _first_true(blank)
    spans = [(_first_true(pc.match_substring_regex(c, r"[\r\n]")), i) for i, c in enumerate(cells)]
    spans = [(row, i) for row, i in spans if row >= 0]
    first_span = min(spans) if spans else None
    if first_blank >= 0 and (first_span is None or first_blank <= first_span[0]):
        if not _line_text(path, first_blank + 1).strip(_CELL_PADDING):
            raise DataError(
                f"{name}, line {first_blank + 1} is blank: blank lines are allowed only at the end"
            )
    if first_span is not None:
        row, column = first_span
        raise DataError(
            f"{name}, line {row + 1}, column {columns[column]!r}: a quoted value spans lines, "
            "which breaks line numbering; remove the line break from the value"
        )


def _is_number(cell: str) -> bool:
    return re.fullmatch(_NUMBER, cell.strip(_CELL_PADDING), re.IGNORECASE) is not None


def _refuse_header(name: str, cells: list[str], spec: DatasetSpec) -> None:
    """A first row without any number is a header, which this headerless format must not have."""
    if not any(_is_number(cell) for cell in cells):
        shown = spec.delimiter.join(cells)[:80]
        raise DataError(
            f"{name}, line 1 looks like a header ({shown!r}); the dataset spec expects no header "
            f"row, only data in the columns {', '.join(spec.columns or [])} "
            "(set `header: true` if the file has one)"
        )


def _header_columns(name: str, cells: list[str]) -> list[str]:
    """Column names from a header row, each present (repeats are refused by the spec check)."""
    names = [cell.strip(_CELL_PADDING) for cell in cells]
    for position, column in enumerate(names, start=1):
        if not column:
            raise DataError(f"{name}, line 1 (header): column {position} has no name")
    return names


def numeric_columns(spec: DatasetSpec) -> list[str]:
    """Columns that must hold numbers: those the spec forces, and the target of a regression."""
    return spec.numeric + ([spec.target] if spec.task == "regression" else [])


# A column of numbers with text in fewer than one cell in this many is more likely a typo or
# an unlisted missing marker than a column of categories: refused, naming both ways out.
_STRAY_TEXT_RATIO = 20


def _refusal(
    column: str, values: pa.Array, numbers: pa.Array, missing: pa.Array, spec: DatasetSpec
) -> tuple[int, str] | None:
    """(row, reason) of the first cell this column cannot take, if any."""
    text = pc.and_(pc.invert(numbers), pc.invert(missing))
    first_text = _first_true(text)
    if first_text < 0 or column not in spec.used_columns or column in spec.categorical:
        return None
    value = values[first_text].as_py()[:40]
    if column in spec.numeric:
        return first_text, (
            f"value {value!r} is not a number, and the dataset spec lists {column!r} under "
            "`numeric:`: fix that line, add the value to `missing_values` if it marks a missing "
            f"cell, or remove {column!r} from `numeric:` to read the column as categories"
        )
    if column in numeric_columns(spec):
        return first_text, f"value {value!r} is not a number"
    if column == spec.target:
        return None
    n_text = pc.sum(pc.cast(text, pa.int64())).as_py()
    n_present = len(values) - pc.sum(pc.cast(missing, pa.int64())).as_py()
    if n_text * _STRAY_TEXT_RATIO < n_present:
        return first_text, (
            f"value {value!r} is not a number, unlike {n_present - n_text} other cells of the "
            "column: if it marks a missing value add it to `missing_values`; if the column "
            "holds categories list it under `categorical:`"
        )
    return None


def _typed(
    column: str, values: pa.Array, numbers: pa.Array, missing: pa.Array, spec: DatasetSpec
) -> np.ndarray | pd.Series:
    """Numbers (NaN where missing) when every present cell is one, else text (None where
    missing); a column the spec calls categorical stays text as written."""
    used = column in spec.used_columns
    present_numbers = pc.all(pc.or_(numbers, missing) if used else numbers).as_py()
    if present_numbers and column not in spec.categorical:
        if not used:
            return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
        kept = pc.if_else(missing, pa.scalar(None, pa.string()), values)
        return pc.cast(kept, pa.float64()).to_numpy(zero_copy_only=False)
    if not used:
        return pd.Series(values.to_pylist(), dtype=object)
    return pd.Series(
        pc.if_else(missing, pa.scalar(None, pa.string()), values).to_pylist(), dtype=object
    )


def read_csv(
    path: Path, spec: DatasetSpec, name: str | None = None
) -> tuple[pd.DataFrame, DatasetSpec]:
    """The file's rows and the spec with its columns known (from a header row if it has one).

    Strict, so bad data stops the run with a message a user can act on: errors name `name`
    (the user's file; default `path`), the line, the column and the value.
    """
    path = Path(path)
    name = name or str(path)
    end = _data_end(path)
    head = _head(path, end)
    _refuse_non_csv(head, end, name)
    first_line = _first_line(head)
    if not first_line.strip(_CELL_PADDING):
        raise DataError(f"{name}, line 1 is blank: blank lines are allowed only at the end")
    _refuse_wrong_delimiter(first_line, spec, name)
    n_columns = len(spec.columns) if not spec.header else _field_count(first_line, spec.delimiter)
    cells = _read_cells(path, end, spec, n_columns, name)
    first_row = [cell[0].as_py() for cell in cells]
    names = spec.columns or [cell.strip(_CELL_PADDING) for cell in first_row]
    _refuse_blank_or_multiline_rows(path, cells, names, name)
    if spec.header:
        spec = spec.with_file_columns(_header_columns(name, first_row), name)
        cells = [cell.slice(1) for cell in cells]
        if len(cells[0]) == 0:
            raise DataError(f"{name} has a header row but no data rows")
    else:
        _refuse_header(name, first_row, spec)
    first_line_number = 2 if spec.header else 1
    columns = spec.columns or []
    trimmed = [pc.utf8_trim(cell, _CELL_PADDING) for cell in cells]
    numbers = [pc.match_substring_regex(t, _NUMBER, ignore_case=True) for t in trimmed]
    markers = pa.array(sorted({"", *spec.missing_values}), pa.string())
    missing = [pc.is_in(t, value_set=markers) for t in trimmed]
    problems = [
        (*refusal, index)
        for index, column in enumerate(columns)
        if (refusal := _refusal(column, trimmed[index], numbers[index], missing[index], spec))
    ]
    if problems:
        row, reason, index = min(problems)
        raise DataError(
            f"{name}, line {row + first_line_number}, column {columns[index]!r}: {reason}"
        )
    frame = pd.DataFrame(
        {
            column: _typed(column, trimmed[index], numbers[index], missing[index], spec)
            for index, column in enumerate(columns)
        }
    )
    return frame, spec


def parse_csv(path: Path, spec: DatasetSpec) -> pd.DataFrame:
    """Strict CSV reading, so bad data stops the run with a message a user can act on."""
    return read_csv(path, spec)[0]


def read_parquet(
    path: Path, spec: DatasetSpec, name: str | None = None
) -> tuple[pd.DataFrame, DatasetSpec]:
    """A Parquet file's rows and the spec with the file's own column names."""
    name = name or str(path)
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except Exception as error:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{name} is not a readable Parquet file: {error}") from None
    columns = [str(column) for column in frame.columns]
    frame.columns = columns
    return frame.reset_index(drop=True), spec.with_file_columns(columns, name)
