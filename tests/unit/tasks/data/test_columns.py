"""Issue 25, points 1 and 2: data as it comes. Missing cells, text and coded categories, column
kinds, and any two labels, read into the data contract (codes into sorted categories, NaN where
missing) with errors that name the user's file, line and column."""

import numpy as np
import pandas as pd
import pytest

from tasks.data.dataset import class_order, load_arrays
from tasks.data.fetch import download_dataset
from tasks.data.validate import column_table, quality_summary, resolved_spec, validate_frame
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError, DataError

CENSUS_COLUMNS = ["age", "workclass", "education", "hours", "income"]
CENSUS_ROWS = [
    "39, State-gov, Bachelors, 40, <=50K",
    "50, Self-emp, Bachelors, 13, <=50K",
    "38, Private, HS-grad, 40, >50K",
    "53, ?, 11th, 40, <=50K",
    "28, Private, Bachelors, , >50K",
    "37, Private, Masters, 40, <=50K",
    "49, Private, 9th, 16, >50K",
    "52, Self-emp, HS-grad, 45, >50K",
]
CREDIT_ROWS = ["status,duration,purpose,class"] + [
    f"{status},{6 + 3 * i},{purpose},{1 + i % 2}"
    for i, (status, purpose) in enumerate(
        [("A11", "A43"), ("A12", "A46"), ("A14", "A42"), ("A11", "A40")] * 3
    )
]


def write(tmp_path, lines: list[str], name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def spec_of(**fields) -> DatasetSpec:
    return DatasetSpec(**{"name": "data", "url": "https://example.invalid/x", **fields})


def prepare(tmp_path, spec: DatasetSpec, source: str, n_splits: int = 2):
    """Download, convert and validate as the flow does."""
    handle = download_dataset.fn(spec, tmp_path / "cache", source=source)
    frame = pd.read_parquet(handle.parquet_path)
    report = validate_frame(frame, resolved_spec(spec, handle), n_splits, source, handle)
    return handle, report


def census_spec(**fields) -> DatasetSpec:
    return spec_of(columns=CENSUS_COLUMNS, target="income", **fields)


def test_a_census_style_file_reads_text_categories_missing_cells_and_text_labels(tmp_path):
    handle, report = prepare(tmp_path, census_spec(), write(tmp_path, CENSUS_ROWS))
    assert handle.categorical_columns == ["workclass", "education"]
    assert handle.categories["workclass"] == ["Private", "Self-emp", "State-gov"]
    features, labels = load_arrays(handle)
    assert features.dtype == np.float32 and features.shape == (8, 4)
    # workclass codes: State-gov=2, Self-emp=1, Private=0, '?' missing
    np.testing.assert_array_equal(features[:4, 1], [2, 1, 0, np.nan])
    assert np.isnan(features[4, 3]) and features[0, 0] == 39  # empty 'hours' cell is missing
    assert list(labels[:3]) == ["<=50K", "<=50K", ">50K"]
    assert report.positive_label == ">50K" and handle.positive_label == ">50K"
    assert report.class_counts == {"<=50K": 4, ">50K": 4}


def test_the_data_quality_table_lists_every_column_and_the_positive_class(tmp_path):
    _, report = prepare(tmp_path, census_spec(), write(tmp_path, CENSUS_ROWS))
    rows = {row["column"]: row for row in column_table(report)}
    assert list(rows) == CENSUS_COLUMNS
    assert rows["workclass"]["kind"] == "categorical" and rows["workclass"]["missing"] == 1
    assert rows["workclass"]["distinct"] == 3
    assert rows["workclass"]["most_frequent"].startswith("Private: 4")
    assert rows["hours"] | {"most_frequent": ""} == {
        "column": "hours",
        "role": "feature",
        "kind": "numeric",
        "missing": 1,
        "distinct": 4,
        "most_frequent": "",
        "impossible_zeros": "",
    }
    assert rows["income"]["kind"] == "classes"
    assert ">50K: 4 (positive)" in rows["income"]["most_frequent"]
    assert "positive class '>50K'" in quality_summary(report, "binary")


def test_coded_categories_with_labels_1_and_2_are_read(tmp_path):
    spec = spec_of(header=True, target="class")
    handle, report = prepare(tmp_path, spec, write(tmp_path, CREDIT_ROWS))
    assert handle.categorical_columns == ["status", "purpose"]
    assert handle.categories["status"] == ["A11", "A12", "A14"]
    assert report.class_counts == {1: 6, 2: 6} and report.positive_label == 2
    _, labels = load_arrays(handle)
    assert labels.dtype == np.int64


@pytest.mark.parametrize(
    ("labels", "positive"),
    [(["-1", "1"], 1), (["no", "yes"], "yes"), (["true", "false"], "true")],
)
def test_any_two_labels_make_a_binary_target(tmp_path, labels, positive):
    lines = ["x,y"] + [f"{i},{labels[i % 2]}" for i in range(8)]
    _, report = prepare(tmp_path, spec_of(header=True, target="y"), write(tmp_path, lines))
    assert set(report.class_counts) == {int(x) if x.lstrip("-").isdigit() else x for x in labels}
    assert report.positive_label == positive


def test_the_spec_names_the_positive_label_and_it_is_encoded_last(tmp_path):
    spec = spec_of(header=True, target="class", positive_label=1)
    handle, report = prepare(tmp_path, spec, write(tmp_path, CREDIT_ROWS))
    assert handle.positive_label == 1 and report.positive_label == 1
    _, labels = load_arrays(handle)
    assert class_order(labels, "binary", handle.positive_label) == [2, 1]
    assert class_order(labels, "binary", None) == [1, 2]
    with pytest.raises(ConfigError, match=r"positive_label 3 is not one of .*\[1, 2\]"):
        prepare(
            tmp_path, spec_of(header=True, target="class", positive_label=3), CREDIT_PATH(tmp_path)
        )


def CREDIT_PATH(tmp_path) -> str:  # noqa: N802 (reads as the constant it writes)
    return write(tmp_path, CREDIT_ROWS, "credit.csv")


def test_multiclass_integer_labels_are_shown_as_integers(tmp_path):
    lines = ["x,y"] + [f"{i},{1 + i % 2}" for i in range(8)]
    spec = spec_of(header=True, target="y", task="multiclass")
    with pytest.raises(DataError, match=r"holds 2 class\(es\) \[1, 2\]; .*use task: binary"):
        prepare(tmp_path, spec, write(tmp_path, lines))


def test_a_text_column_with_a_numeric_target_is_a_regression(tmp_path):
    lines = ["size,colour,price"] + [
        f"{i},{['red', 'green', 'blue'][i % 3]},{10 + 2.5 * i}" for i in range(9)
    ]
    spec = spec_of(header=True, target="price", task="regression")
    handle, report = prepare(tmp_path, spec, write(tmp_path, lines))
    assert handle.categorical_columns == ["colour"]
    assert handle.categories["colour"] == ["blue", "green", "red"]
    features, target = load_arrays(handle)
    np.testing.assert_array_equal(features[:3, 1], [2, 1, 0])
    assert target.dtype == np.float64 and report.positive_label is None


def test_the_spec_forces_kinds(tmp_path):
    lines = ["grade,score,y"] + [f"{1 + i % 3},{i},{i % 2}" for i in range(6)]
    spec = spec_of(header=True, target="y", categorical=["grade"])
    handle, _ = prepare(tmp_path, spec, write(tmp_path, lines))
    assert handle.categorical_columns == ["grade"] and handle.categories["grade"] == ["1", "2", "3"]
    lines[3] = "2,many,0"
    with pytest.raises(DataError, match=r"data\.csv, line 4, column 'score': value 'many' is not"):
        prepare(
            tmp_path, spec_of(header=True, target="y", numeric=["score"]), write(tmp_path, lines)
        )


def test_a_stray_word_in_a_column_of_numbers_names_both_ways_out(tmp_path):
    lines = ["a,y"] + [f"{i},{i % 2}" for i in range(40)]
    lines[7] = "unknown,0"
    with pytest.raises(DataError, match=r"line 8, column 'a': value 'unknown' is not a number.*"
                       r"`missing_values`.*`categorical:`"):  # fmt: skip
        prepare(tmp_path, spec_of(header=True, target="y"), write(tmp_path, lines))


def test_too_many_categories_are_refused_naming_count_and_ways_out(tmp_path):
    lines = ["id,y"] + [f"c{i},{i % 2}" for i in range(30)]
    spec = spec_of(header=True, target="y", max_categories=10)
    message = (
        r"data\.csv, column 'id': 30 distinct values, more than max_categories \(10; value 11 "
        r"first on line 12\): raise `max_categories`.*leave the column out with `features:`"
    )
    with pytest.raises(DataError, match=message):
        prepare(tmp_path, spec, write(tmp_path, lines))


@pytest.mark.parametrize("value", ["2024-01-31", "2024-01-31T10:00:00Z", "31/01/2024", "10:30"])
def test_dates_and_times_are_refused_by_name(tmp_path, value):
    lines = ["when,y"] + [f"{value},{i % 2}" for i in range(6)]
    message = rf"data\.csv, line 2, column 'when': value '{value}' is a date or time"
    with pytest.raises(DataError, match=message):
        prepare(tmp_path, spec_of(header=True, target="y"), write(tmp_path, lines))


def test_a_value_beyond_float32_is_refused_naming_line_column_value(tmp_path):
    lines = ["a,y"] + [f"{i},{i % 2}" for i in range(6)]
    lines[3] = "1e39,0"
    with pytest.raises(DataError, match=r"line 4, column 'a': value 1e\+39 is beyond float32"):
        prepare(tmp_path, spec_of(header=True, target="y"), write(tmp_path, lines))


def test_rows_without_a_target_are_refused_or_dropped_and_counted(tmp_path):
    rows = [*CENSUS_ROWS, "40, Private, 9th, 40, ?", "41, Private, 9th, 40, "]
    source = write(tmp_path, rows)
    message = r"data\.csv: 2 row\(s\) have no value in the target 'income' \(lines 9, 10\).*drop"
    with pytest.raises(DataError, match=message):
        prepare(tmp_path, census_spec(), source)
    handle, report = prepare(tmp_path, census_spec(drop_missing_target=True), source)
    assert report.n_rows == 8 and report.rows_without_target == 2
    assert handle.rows_without_target == 2
    assert "(2 rows without a target left out)" in quality_summary(report, "binary")


def test_parquet_text_and_missing_values_follow_the_same_contract(tmp_path):
    frame = pd.DataFrame(
        {"colour": ["red", None, "blue", "NA", "red", "blue"], "x": [1.0, np.nan, 3, 4, 5, 6]}
    ).assign(y=[True, False] * 3)
    frame.to_parquet(tmp_path / "d.parquet")
    spec = spec_of(format="parquet", target="y")
    handle, report = prepare(tmp_path, spec, str(tmp_path / "d.parquet"))
    features, labels = load_arrays(handle)
    np.testing.assert_array_equal(features[:, 0], [1, np.nan, 0, np.nan, 1, 0])
    assert np.isnan(features[1, 1]) and report.positive_label == "True"


def test_both_engines_encode_the_positive_class_as_1():
    from tasks.train.fast.trainer import classes_and_targets
    from tasks.train.reference import keras_targets

    labels = np.array([1, 2, 2, 1, 2])
    order = class_order(labels, "binary", 1)
    classes, encoded = classes_and_targets(labels, "binary", order)
    assert list(classes) == [2, 1] and list(encoded) == [1, 0, 0, 1, 0]
    meta = {"task": "binary", "classes_": order, "n_classes_": 2}
    assert list(keras_targets(labels, meta)) == [1, 0, 0, 1, 0]
