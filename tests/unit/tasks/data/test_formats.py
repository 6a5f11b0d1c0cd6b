"""Any tabular dataset: CSV with or without a header, Parquet, text labels, a feature subset,
and clear errors when the spec and the file disagree."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from tasks.data.dataset import load_arrays
from tasks.data.fetch import download_dataset
from tasks.data.validate import resolved_spec, validate_frame
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError, DataError

IRIS = load_iris(as_frame=True)
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_FRAME = IRIS.data.set_axis(FEATURES, axis=1).assign(
    species=IRIS.target_names[IRIS.target].astype(str)
)


def spec_of(**fields) -> DatasetSpec:
    return DatasetSpec(**{"name": "data", "url": "https://example.invalid/x", **fields})


def prepare(tmp_path, spec: DatasetSpec, source, n_splits=3):
    """Download, convert and validate as the flow does; the handle and the quality report."""
    handle = download_dataset.fn(spec, tmp_path / "cache", source=str(source))
    frame = pd.read_parquet(handle.parquet_path)
    report = validate_frame(frame, resolved_spec(spec, handle), n_splits, str(source))
    return handle, report


def write_csv(tmp_path, frame: pd.DataFrame, header: bool) -> str:
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False, header=header)
    return str(path)


def test_a_csv_with_a_header_names_its_columns_and_text_labels_stay_text(tmp_path):
    spec = spec_of(header=True, target="species", task="multiclass")
    handle, report = prepare(tmp_path, spec, write_csv(tmp_path, IRIS_FRAME, header=True))
    assert handle.feature_columns == FEATURES and handle.task == "multiclass"
    features, labels = load_arrays(handle)
    np.testing.assert_allclose(features, IRIS.data.to_numpy(), rtol=1e-6)
    assert labels[0] == "setosa" and sorted(set(labels)) == list(IRIS.target_names)
    assert report.class_counts == {"setosa": 50, "versicolor": 50, "virginica": 50}


def test_a_headerless_csv_takes_its_names_from_the_spec(tmp_path):
    spec = spec_of(columns=[*FEATURES, "species"], target="species", task="multiclass")
    handle, _ = prepare(tmp_path, spec, write_csv(tmp_path, IRIS_FRAME, header=False))
    features, labels = load_arrays(handle)
    assert features.shape == (150, 4) and labels[-1] == "virginica"


def test_parquet_with_a_feature_subset_ignores_the_other_columns(tmp_path):
    frame = IRIS_FRAME.assign(sample_id=[f"s{i}" for i in range(150)])
    frame = frame[["sample_id", *FEATURES, "species"]]
    frame.to_parquet(tmp_path / "iris.parquet")
    spec = spec_of(
        format="parquet",
        target="species",
        task="multiclass",
        features=["petal_width", "sepal_length"],  # any order: the file's order is kept
    )
    handle, _ = prepare(tmp_path, spec, tmp_path / "iris.parquet")
    assert handle.feature_columns == ["sepal_length", "petal_width"]
    assert handle.columns == ["sample_id", *FEATURES, "species"]
    assert list(pd.read_parquet(handle.parquet_path).columns) == [
        "sepal_length",
        "petal_width",
        "species",
    ]
    features, _ = load_arrays(handle)
    np.testing.assert_allclose(features[:, 1], IRIS.data["petal width (cm)"], rtol=1e-6)


def test_binary_text_labels_are_accepted_and_counted(tmp_path):
    two = IRIS_FRAME[IRIS_FRAME["species"] != "setosa"]
    spec = spec_of(header=True, target="species", task="binary")
    _, report = prepare(tmp_path, spec, write_csv(tmp_path, two, header=True))
    assert report.class_counts == {"versicolor": 50, "virginica": 50}


def test_a_regression_target_is_numeric(tmp_path):
    frame = IRIS_FRAME.drop(columns="species")
    spec = spec_of(header=True, target="petal_width", task="regression")
    handle, report = prepare(tmp_path, spec, write_csv(tmp_path, frame, header=True))
    _, target = load_arrays(handle)
    assert target.dtype == np.float64 and report.class_counts == {}


def with_row(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    changed = frame.astype({column: object}).copy()
    changed.loc[row, column] = value
    return changed


@pytest.mark.parametrize(
    ("spec_fields", "frame", "message"),
    [
        pytest.param(
            {"header": True, "target": "kind", "task": "multiclass"},
            IRIS_FRAME,
            r"data\.csv: target 'kind' is not among the columns \['sepal_length'",
            id="unknown-target",
        ),
        pytest.param(
            {"header": True, "target": "species", "features": ["petal_size"], "task": "multiclass"},
            IRIS_FRAME,
            r"data\.csv: feature column\(s\) \['petal_size'\] are not among",
            id="feature-missing",
        ),
        pytest.param(
            {"header": True, "columns": ["a", "b", "c", "d", "species"], "target": "species"},
            IRIS_FRAME,
            r"data\.csv: the file's columns \['sepal_length', .*\] differ from the spec's",
            id="header-differs-from-columns",
        ),
        pytest.param(
            {"header": True, "target": "sepal_width", "task": "regression"},
            with_row(IRIS_FRAME, 2, "sepal_width", "abc").drop(columns="species"),
            r"data\.csv, line 4, column 'sepal_width': value 'abc' is not a number",
            id="regression-target-text",
        ),
        pytest.param(
            {"header": True, "target": "species", "task": "binary"},
            pd.concat([IRIS_FRAME.iloc[:50], IRIS_FRAME.iloc[100:], IRIS_FRAME.iloc[50:100]]),
            r"row 101, column 'species': label 'versicolor' is a third class; a binary target "
            r"has two \('setosa', 'virginica'\)",
            id="binary-third-text-class",
        ),
        pytest.param(
            {"header": True, "target": "species", "task": "multiclass"},
            IRIS_FRAME[IRIS_FRAME["species"] != "setosa"],
            r"column 'species' holds 2 class\(es\) .*needs at least 3 \(use task: binary",
            id="multiclass-two-classes",
        ),
        pytest.param(
            {"header": True, "target": "code", "task": "multiclass"},
            IRIS_FRAME.assign(code=IRIS.target.astype(float))
            .pipe(with_row, 7, "code", 1.5)
            .drop(columns="species"),
            r"row 8, column 'code': label 1.5 is not a whole number",
            id="multiclass-fractional",
        ),
        pytest.param(
            {"header": True, "target": "species", "task": "multiclass"},
            with_row(IRIS_FRAME, 4, "petal_length", "tall"),
            r"line 6, column 'petal_length': value 'tall' is not a number",
            id="feature-text",
        ),
    ],
)
def test_a_spec_that_does_not_fit_its_file_is_refused_naming_file_row_column_value(
    tmp_path, spec_fields, frame, message
):
    source = write_csv(tmp_path, frame, header=True)
    with pytest.raises((ConfigError, DataError), match=message):
        prepare(tmp_path, spec_of(**spec_fields), source)


def test_a_parquet_target_of_text_is_refused_for_a_regression(tmp_path):
    with_row(IRIS_FRAME, 3, "petal_width", "wide").astype({"petal_width": str}).to_parquet(
        tmp_path / "x.parquet"
    )
    spec = spec_of(format="parquet", target="petal_width", task="regression", features=FEATURES[:3])
    message = r"column 'petal_width' holds .*, not numbers \(row 4: 'wide'\)"
    with pytest.raises(DataError, match=message):
        prepare(tmp_path, spec, tmp_path / "x.parquet")


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    (tmp_path / "x.parquet").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"x\.parquet is not a readable Parquet file"):
        prepare(tmp_path, spec_of(format="parquet", target="b"), tmp_path / "x.parquet")
