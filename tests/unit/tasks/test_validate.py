import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.config import DEFAULT_DATASET_SPEC, DatasetSpec
from tasks.download import parse_csv
from tasks.errors import DataError
from tasks.validate import quality_table, validate_frame
from tests.unit.conftest import SHARED_CSV

SPEC = DatasetSpec.from_yaml(DEFAULT_DATASET_SPEC)
TEXT = SHARED_CSV.read_text()
LINES = TEXT.split("\n")
ORIGINAL = np.loadtxt(SHARED_CSV, delimiter=",")


def load(tmp_path, text: str, n_splits: int = 10):
    path = tmp_path / "data.csv"
    path.write_bytes(text.encode())
    frame = parse_csv(path, SPEC)
    validate_frame(frame, SPEC, n_splits, source_name=str(path))
    return frame


def with_line(index: int, line: str) -> str:
    return "\n".join(LINES[:index] + [line] + LINES[index + 1 :])


def with_label(index: int, label: str) -> str:
    return with_line(index, ",".join(LINES[index].split(",")[:-1] + [label]))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("\n\n  \n", "is empty"),
        ("<!DOCTYPE html><html><body>404</body></html>", "looks like an HTML page"),
        (with_line(9, "1,2,3"), "line 10: expected 9 columns, found 3"),
        (",".join(SPEC.columns) + "\n" + TEXT, "line 1 looks like a header"),
        (with_line(4, LINES[4].replace(",", ",abc", 1)), r"line 5, column 'glucose': value 'abc"),
        (with_line(2, "\n".join(LINES[2:3])) + "\n\n" + "\n".join(LINES[3:]), "blank line"),
        (
            with_line(7, ",".join(["1", "nan"] + LINES[7].split(",")[2:])),
            r"row 8, column 'glucose': value nan is not a finite number",
        ),
        (
            with_line(7, ",".join(["inf"] + LINES[7].split(",")[1:])),
            r"row 8, column 'pregnancies': value inf",
        ),
        (with_label(11, "2"), r"row 12, column 'outcome': label 2 is not 0 or 1"),
        ("\n".join(line for line in LINES if line.endswith(",0")), "only one class"),
    ],
)
def test_bad_files_are_refused_naming_the_line_column_and_value(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        load(tmp_path, text)


def test_too_few_rows_of_a_class_for_the_folds_is_refused(tmp_path):
    few_positives = [line for line in LINES if line.endswith(",0")] + [
        line for line in LINES if line.endswith(",1")
    ][:4]
    with pytest.raises(DataError, match="class 1 has 4 rows, fewer than the 5 folds"):
        load(tmp_path, "\n".join(few_positives), n_splits=5)


def test_windows_line_endings_and_trailing_blank_lines_simply_work(tmp_path):
    frame = load(tmp_path, TEXT.replace("\n", "\r\n") + "\r\n\r\n\n")
    np.testing.assert_array_equal(frame.to_numpy(), ORIGINAL)


def test_impossible_zeros_are_counted_per_column(tmp_path):
    report = validate_frame(load(tmp_path, TEXT), SPEC, 10, "pima")
    columns = {"glucose": 1, "blood_pressure": 2, "skin_thickness": 3, "insulin": 4, "bmi": 5}
    expected = {name: int((ORIGINAL[:, index] == 0).sum()) for name, index in columns.items()}
    assert report.impossible_zeros == expected
    assert report.class_counts == {0: 500, 1: 268}
    rows = quality_table(report)
    assert rows[0] == {"column": "glucose", "zero_count": 5, "share": round(5 / 768, 4)}


def test_validate_refuses_wrong_column_names():
    frame = pd.DataFrame(ORIGINAL, columns=[f"c{i}" for i in range(9)])
    with pytest.raises(DataError, match="expected columns"):
        validate_frame(frame, SPEC, 10, "frame")


CORRUPTIONS = st.sampled_from(
    ["junk_cell", "drop_field", "blank_line", "truncate", "crlf", "extra_field"]
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kind=CORRUPTIONS, position=st.integers(0, len(LINES) - 1), junk=st.text(max_size=6))
def test_corrupted_files_are_either_read_exactly_or_refused_clearly(tmp_path, kind, position, junk):
    lines = list(LINES)
    cells = lines[position].split(",")
    if kind == "junk_cell":
        cells[position % len(cells)] = junk
        lines[position] = ",".join(cells)
    elif kind == "drop_field":
        lines[position] = ",".join(cells[:-1])
    elif kind == "extra_field":
        lines[position] = ",".join([*cells, junk])
    elif kind == "blank_line":
        lines.insert(position, "")
    text = "\n".join(lines)
    if kind == "truncate":
        text = text[: position * 20]
    elif kind == "crlf":
        text = text.replace("\n", "\r\n", position)
    try:
        frame = load(tmp_path, text)
    except DataError as error:
        assert str(error)
        return
    values = frame.to_numpy()
    unchanged = values.shape == ORIGINAL.shape and np.array_equal(values, ORIGINAL)
    if not unchanged:
        # Accepted with different values: only a junk cell that is itself a valid number, or
        # a truncation that happened to end on a whole line, may do that.
        assert kind in ("junk_cell", "truncate")
        rows = min(len(values), len(ORIGINAL))
        differing = np.argwhere(values[:rows] != ORIGINAL[:rows])
        assert len(differing) <= 1
