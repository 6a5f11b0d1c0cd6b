"""The saved model's input schema: raw rows read by the training data's rules and converted to
the data contract's codes; columns that do not match are refused by name."""

import numpy as np
import pandas as pd
import pytest

from tasks.data.columns import Where
from tasks.data.schema import UNSEEN_CATEGORY, InputSchema, raw_features, read_rows
from tasks.errors import DataError

SCHEMA = InputSchema(
    header=False,
    delimiter=",",
    columns=["age", "work", "grade", "hours", "label"],
    feature_columns=["age", "work", "grade", "hours"],
    kinds={"age": "numeric", "work": "categorical", "grade": "categorical", "hours": "numeric"},
    categories={"work": ["Private", "State-gov"], "grade": ["1", "2", "10"]},
    missing_values=["?", "NA"],
    target="label",
    task="binary",
    classes=[1, 2],
    positive_label=2,
)
FRAME_ROWS = Where("the DataFrame", first=0, unit="row")


def test_raw_rows_become_numbers_and_codes_missing_as_nan_unseen_as_minus_one():
    frame = pd.DataFrame(
        {
            "age": ["31", "?", " 40 ", ""],
            "work": ["State-gov", "Self-emp", None, " Private"],
            "grade": [10, 2.0, np.nan, "1"],
            "hours": [40.0, np.nan, 12.5, 3.0],
        }
    )
    rows = raw_features(frame, SCHEMA, FRAME_ROWS)
    expected = np.array(
        [
            [31, 1, 2, 40],
            [np.nan, UNSEEN_CATEGORY, 1, np.nan],
            [40, np.nan, np.nan, 12.5],
            [np.nan, 0, 0, 3],
        ]
    )
    np.testing.assert_array_equal(rows, expected)


def test_columns_are_taken_by_name_whatever_their_order_and_the_target_is_ignored():
    frame = pd.DataFrame({"label": [1], "hours": [1.0], "grade": ["2"], "work": ["Private"]})
    frame["age"] = [5]
    np.testing.assert_array_equal(raw_features(frame, SCHEMA, FRAME_ROWS), [[5, 0, 1, 1]])


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["age", "work", "grade"], "column 'hours' is missing"),
        (["age", "work", "grade", "hours", "colour"], "column 'colour' was not in the training"),
    ],
)
def test_a_frame_whose_columns_do_not_match_is_refused_naming_the_column(columns, message):
    frame = pd.DataFrame({column: ["1"] for column in columns})
    with pytest.raises(DataError, match=message):
        raw_features(frame, SCHEMA, FRAME_ROWS)


def test_text_in_a_numeric_column_is_refused_naming_row_and_column():
    frame = pd.DataFrame({"age": ["31", "old"], "work": ["Private"] * 2, "grade": [1, 1]})
    frame["hours"] = [1.0, 2.0]
    with pytest.raises(DataError, match=r"the DataFrame, row 1, column 'age': value 'old'"):
        raw_features(frame, SCHEMA, FRAME_ROWS)


@pytest.mark.parametrize("with_target", [True, False])
def test_a_headerless_file_is_read_with_or_without_its_target(tmp_path, with_target):
    target = ", 1" if with_target else ""
    lines = [f"31, Private, 2, 40{target}", f"?, Nobody, , NA{target}"]
    path = tmp_path / "new.csv"
    path.write_text("\n".join(lines) + "\n")
    frame, where = read_rows(path, SCHEMA)
    rows = raw_features(frame, SCHEMA, where)
    np.testing.assert_array_equal(rows, [[31, 0, 1, 40], [np.nan, UNSEEN_CATEGORY, np.nan, np.nan]])


def test_a_headerless_file_with_another_field_count_is_refused(tmp_path):
    path = tmp_path / "new.csv"
    path.write_text("31, Private, 2\n")
    with pytest.raises(DataError, match=r"new.csv, line 1: 3 fields, but the training data had 5"):
        read_rows(path, SCHEMA)


def test_a_file_with_a_header_is_refused_naming_a_missing_column_before_its_rows(tmp_path):
    schema = SCHEMA.model_copy(update={"header": True})
    path = tmp_path / "new.csv"
    path.write_text("age,work,hours\n31,Private,40\n")
    with pytest.raises(DataError, match="column 'grade' is missing"):
        read_rows(path, schema)


def test_text_in_a_numeric_column_of_a_file_names_its_line(tmp_path):
    schema = SCHEMA.model_copy(update={"header": True})
    path = tmp_path / "new.csv"
    path.write_text("age,work,grade,hours\n31,Private,1,40\nold,Private,1,40\n")
    frame, where = read_rows(path, schema)
    with pytest.raises(DataError, match=r"new.csv, line 3, column 'age': value 'old'"):
        raw_features(frame, schema, where)
