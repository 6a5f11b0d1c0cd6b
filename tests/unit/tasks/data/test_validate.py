import csv

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.config import DEFAULT_DATASET_SPEC
from tasks.data.csv_reader import parse_csv
from tasks.data.validate import quality_artifact_key, quality_table, validate_frame
from tasks.dataset_spec import DatasetSpec
from tasks.errors import DataError
from tests.conftest import PIMA_CSV

SPEC = DatasetSpec.from_yaml(DEFAULT_DATASET_SPEC)
TEXT = PIMA_CSV.read_text()
LINES = TEXT.split("\n")
ORIGINAL = np.loadtxt(PIMA_CSV, delimiter=",")
N_SPLITS = 5


def load(tmp_path, text: str, n_splits: int = N_SPLITS) -> pd.DataFrame:
    """Parse and validate `text` as the flow would, from a file under tmp_path."""
    path = tmp_path / "data.csv"
    path.write_bytes(text.encode())
    frame = parse_csv(path, SPEC)
    validate_frame(frame, SPEC, n_splits, source_name=str(path))
    return frame


def with_line(index: int, line: str) -> str:
    return "\n".join(LINES[:index] + [line] + LINES[index + 1 :])


def with_cell(row: int, column: int, value: str) -> str:
    cells = LINES[row].split(",")
    cells[column] = value
    return with_line(row, ",".join(cells))


def with_blank_line_at(index: int) -> str:
    return "\n".join(LINES[:index] + [""] + LINES[index:])


def only_class(label: str) -> str:
    return "\n".join(line for line in LINES if line.endswith("," + label))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", r"data\.csv is empty", id="empty"),
        pytest.param("\n\r\n  \n", r"data\.csv is empty", id="only-blank-lines"),
        pytest.param(
            "\n  <!DOCTYPE html>\n<html><body>Rate limit</body></html>",
            r"data\.csv looks like an HTML page, not CSV",
            id="html",
        ),
        pytest.param("<HTML><BODY>404</BODY></HTML>", "looks like an HTML page", id="html-upper"),
        pytest.param(
            with_line(9, "1,2,3"), r"data\.csv, line 10: expected 9 columns, found 3", id="short"
        ),
        pytest.param(
            with_line(9, LINES[9] + ","),
            "line 10: expected 9 columns, found 10",
            id="trailing-comma",
        ),
        pytest.param(
            ",".join(SPEC.columns) + "\n" + TEXT,
            "line 1 looks like a header .*expects no header row",
            id="header",
        ),
        pytest.param(
            with_cell(4, 1, "abc"),
            r"data\.csv, line 5, column 'glucose': value 'abc' is not a number",
            id="non-numeric",
        ),
        pytest.param(with_cell(4, 0, "1_0"), "line 5, .*value '1_0' is not a number", id="1_0"),
        pytest.param(with_cell(4, 0, "\u0663"), "line 5, .*is not a number", id="arabic-digit"),
        pytest.param(with_cell(4, 0, "0x1A"), "line 5, .*value '0x1A'", id="hex"),
        pytest.param(with_blank_line_at(3), "line 4 is blank", id="inner-blank-line"),
        pytest.param(
            with_cell(7, 0, "-inf"), "row 8, column 'pregnancies': value -inf", id="minus-inf"
        ),
        pytest.param(with_cell(7, 5, "1e400"), "row 8, column 'bmi': value inf", id="overflow"),
        pytest.param(
            with_cell(11, 8, "2"),
            r"row 12, column 'outcome': label 2 is a third class; a binary target has two "
            r"\(1, 0\): use task: multiclass",
            id="label-2",
        ),
        pytest.param(
            with_cell(11, 8, "0.5"), "row 12, .*label 0.5 is not a whole number", id="label-0.5"
        ),
        pytest.param(
            with_cell(11, 8, ""), r"1 row\(s\) have no value in the target 'outcome'", id="no-label"
        ),
        pytest.param(only_class("0"), r"only one class present \(no rows of class 1", id="only-0"),
        pytest.param(only_class("1"), r"only one class present \(no rows of class 0", id="only-1"),
    ],
)
def test_bad_files_are_refused_naming_the_file_line_column_and_value(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        load(tmp_path, text)


@pytest.mark.parametrize("cell", [" ", "", "nan", "?", "NA"])
def test_an_empty_cell_or_a_missing_marker_is_a_missing_value(tmp_path, cell):
    """Issue 25: these were refused ('the cell is empty', 'value nan is not a finite number')."""
    values = load(tmp_path, with_cell(4, 2, cell)).to_numpy()
    expected = ORIGINAL.copy()
    expected[4, 2] = np.nan
    np.testing.assert_array_equal(values, expected)


def test_too_few_rows_of_a_class_for_the_folds_is_refused(tmp_path):
    four_positives = [line for line in LINES if line.endswith(",1")][:4]
    text = only_class("0") + "\n" + "\n".join(four_positives)
    with pytest.raises(DataError, match="class 1 has 4 rows, fewer than the 5 folds"):
        load(tmp_path, text, n_splits=5)
    load(tmp_path, text, n_splits=4)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(TEXT.replace("\n", "\r\n") + "\r\n\r\n\n", id="crlf-and-trailing-blanks"),
        pytest.param(TEXT + "\n", id="trailing-newline"),
        pytest.param(TEXT + "\n  \n\t\n\n", id="trailing-whitespace-lines"),
        pytest.param(TEXT.replace("\n", "\r"), id="cr-only"),
        pytest.param("\ufeff" + TEXT, id="utf8-bom"),
        pytest.param(TEXT.replace(",", ", "), id="spaces-after-commas"),
    ],
)
def test_harmless_variations_parse_to_the_original_values(tmp_path, text):
    frame = load(tmp_path, text)
    assert list(frame.columns) == SPEC.columns
    np.testing.assert_array_equal(frame.to_numpy(), ORIGINAL)


def test_the_real_file_reports_its_impossible_zeros_and_class_counts(tmp_path):
    report = validate_frame(load(tmp_path, TEXT), SPEC, N_SPLITS, "pima")
    expected_zeros = {
        column: int((ORIGINAL[:, SPEC.columns.index(column)] == 0).sum())
        for column in SPEC.impossible_zero_columns
    }
    labels = ORIGINAL[:, -1]
    assert report.n_rows == len(ORIGINAL) == 768
    assert report.impossible_zeros == expected_zeros
    assert report.class_counts == {0: int((labels == 0).sum()), 1: int((labels == 1).sum())}

    rows = quality_table(report)
    assert [row["column"] for row in rows] == SPEC.impossible_zero_columns
    for row in rows:
        assert type(row["zero_count"]) is int and type(row["share"]) is float
        assert row["zero_count"] == expected_zeros[row["column"]]
        assert row["share"] == round(expected_zeros[row["column"]] / 768, 4)


def test_the_artifact_key_is_one_prefect_accepts():
    assert quality_artifact_key(SPEC.name) == "pima-indians-diabetes-data-quality"
    assert quality_artifact_key("Pima.v2_b") == "pima-v2-b-data-quality"


def frame_of(values=ORIGINAL, columns=None) -> pd.DataFrame:
    return pd.DataFrame(values.copy(), columns=columns or SPEC.columns)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        pytest.param(
            frame_of(columns=[f"c{i}" for i in range(9)]), "expected 9 columns", id="names"
        ),
        pytest.param(
            frame_of(ORIGINAL[:, 1:], SPEC.columns[1:]), "expected 9 columns .*found 8", id="count"
        ),
        pytest.param(
            frame_of().assign(glucose=lambda f: f["glucose"].astype(str)),
            "column 'glucose' holds .*, not numbers",
            id="text-column",
        ),
        pytest.param(frame_of(ORIGINAL[:0]), "the dataset has no rows", id="no-rows"),
    ],
)
def test_frames_with_the_wrong_schema_are_refused(frame, message):
    with pytest.raises(DataError, match=message):
        validate_frame(frame, SPEC, N_SPLITS, "frame")


# --- property: corruption is either harmless or refused as DataError ------------------------

JUNK = st.one_of(
    st.sampled_from(["", " ", "abc", "nan", "inf", "1e400", "1_0", "0x1F", "<html>", "7 ", "-0"]),
    st.sampled_from(["0", "1", "2", "0.5", "1e3", ".5", "5.", "+3", "\u0663", ",", "\r", "\n"]),
    st.text(max_size=6),
)
ROWS = st.integers(0, len(LINES) - 1)


@st.composite
def corrupted_texts(draw):
    """(kind, text, changed (row, column) or None): one random corruption of the real file."""
    kind = draw(
        st.sampled_from(["junk_cell", "drop_field", "blank_line", "truncate", "line_endings"])
    )
    if kind == "junk_cell":
        row, column, junk = draw(ROWS), draw(st.integers(0, 8)), draw(JUNK)
        return kind, with_cell(row, column, junk), (row, column, junk)
    if kind == "drop_field":
        row = draw(ROWS)
        return kind, with_line(row, LINES[row].rsplit(",", 1)[0]), row
    if kind == "blank_line":
        index = draw(st.integers(0, len(LINES)))
        return kind, with_blank_line_at(index), index
    if kind == "truncate":
        return kind, TEXT[: draw(st.integers(0, len(TEXT)))], None
    ending = draw(st.sampled_from(["\r\n", "\r"]))
    return kind, TEXT.replace("\n", ending, draw(st.integers(0, len(LINES)))), None


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(corruption=corrupted_texts())
def test_corrupted_files_are_read_exactly_or_refused_with_a_data_error(tmp_path, corruption):
    kind, text, detail = corruption
    try:
        values = load(tmp_path, text).to_numpy()
    except DataError as error:
        assert kind not in ("line_endings",), f"harmless {kind} refused: {error}"
        if kind == "drop_field":
            assert f"line {detail + 1}: expected 9 columns, found 8" in str(error)
        if kind == "blank_line" and detail < len(LINES):
            assert f"line {detail + 1} is blank" in str(error)
        return
    assert kind not in ("drop_field",), "a row with a missing field was accepted"
    if kind == "truncate":
        # Cut at a line boundary: the rows that remain are exactly the original's first rows.
        np.testing.assert_array_equal(values, ORIGINAL[: len(values)])
        return
    assert values.shape == ORIGINAL.shape
    expected = ORIGINAL.copy()
    if kind == "junk_cell":
        row, column, junk = detail
        # Accepted only if the junk is itself a number, perhaps quoted as CSV allows ('"1"'),
        # or a missing value (an empty cell, a marker such as 'nan') in a feature column.
        cell = next(csv.reader([junk]), [""])
        cell = cell[0].strip(" \t") if cell else ""
        expected[row, column] = np.nan if cell in SPEC.missing_values else float(cell)
    np.testing.assert_array_equal(values, expected)
