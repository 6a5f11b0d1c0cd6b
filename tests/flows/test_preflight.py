"""Errors about the data come before any flow run starts: the CLI checks its data in its own
process and prints one line; from Python, X and y are named as the user knows them."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

import foldflow
from flows.cli import run
from foldflow.runs import run_settings
from tasks.data.preflight import checked_dataset
from tests.conftest import PIMA_CSV

PIMA_COLUMNS = "[a, b, c, d, e, f, g, h, outcome]"


def tiny_model():
    import keras

    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1, "sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam")
    return model


def flow_must_not_load(command: str):
    raise AssertionError(f"the data was checked only after loading the {command} flow")


def refusal_of(tmp_path, spec_text: str, lines: list[str]) -> tuple[int, str]:
    """`foldflow cv` on a CSV made of `lines`: its exit status and what it printed, the flow
    (and with it Prefect's flow run, and TensorFlow) never loaded."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    data = tmp_path / "bad.csv"
    data.write_text("\n".join(lines) + "\n")
    errors = io.StringIO()
    arguments = ["cv", "--data", str(data), "--dataset-spec", str(spec), "--epochs", "1"]
    arguments += ["--output-dir", str(tmp_path / "runs"), "--run-name", "cli"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("flows.cli._flow_function", flow_must_not_load)
        status = run(arguments, err=errors)
    assert not (tmp_path / "runs").exists()
    return status, errors.getvalue()


def assert_one_line(error: str) -> None:
    assert error.startswith("foldflow: error: ")
    assert len(error.strip().splitlines()) == 1, error
    assert "Traceback" not in error


def pima_lines() -> list[str]:
    return PIMA_CSV.read_text().splitlines()


def test_a_missing_target_cell_is_refused_in_one_line_before_the_flow_loads(tmp_path):
    lines = pima_lines()
    lines[2] = lines[2].rpartition(",")[0] + ","
    status, error = refusal_of(
        tmp_path, f"name: mine\nurl: x.csv\ncolumns: {PIMA_COLUMNS}\ntarget: outcome\n", lines
    )
    assert status == 2
    assert_one_line(error)
    assert "bad.csv: 1 row(s) have no value in the target 'outcome' (lines 3)" in error
    assert "drop_missing_target: true" in error


def test_a_feature_the_file_lacks_is_refused_in_one_line_before_the_flow_loads(tmp_path):
    lines = ["a,b,c,outcome", *[f"{k},{k % 3},{k % 5},{k % 2}" for k in range(30)]]
    spec = "name: mine\nurl: x.csv\nheader: true\ntarget: outcome\nfeatures: [a, agee]\n"
    status, error = refusal_of(tmp_path, spec, lines)
    assert status == 2
    assert_one_line(error)
    assert "bad.csv: feature column(s) ['agee'] are not among ['a', 'b', 'c', 'outcome']" in error


def test_text_in_a_column_forced_numeric_is_refused_naming_the_ways_out(tmp_path):
    lines = pima_lines()
    lines[11] = lines[11].replace(",", ",x", 1)
    spec = f"name: mine\nurl: x.csv\ncolumns: {PIMA_COLUMNS}\ntarget: outcome\nnumeric: [b]\n"
    status, error = refusal_of(tmp_path, spec, lines)
    assert status == 2
    assert_one_line(error)
    assert "bad.csv, line 12, column 'b': value 'x" in error
    assert "`numeric:`" in error and "line 12" in error


def test_the_check_reads_what_the_flow_reads(tmp_path):
    """The flow's prepare_data finds the same dataset: same spec, same converted copy."""
    from tasks.config import RunSettings

    settings = RunSettings(source=str(PIMA_CSV), cache_dir=str(tmp_path / "cache"))
    checked = checked_dataset(settings)
    assert checked is not None
    assert checked.report.n_rows == 768
    assert checked.dataset.source.endswith("pima-indians-diabetes.csv")
    assert checked.dataset.feature_columns == checked.spec.feature_columns


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLDFLOW_HOME", str(tmp_path))
    return tmp_path


def in_memory_message(X, y, task: str, cv=3, home=None) -> str:
    with pytest.raises(ValueError) as refused:
        run_settings(X, y, task, cv, 7, 1, "auto", "accuracy", home)
    message = str(refused.value)
    assert "in-memory" not in message and ".parquet" not in message, message
    return message


def test_y_with_a_third_label_under_task_binary_names_y_and_its_row(home):
    X = np.arange(24, dtype=float).reshape(12, 2)
    y = np.array([1, 2] * 4 + [3, 1, 2, 3])
    message = in_memory_message(X, y, "binary", home=home)
    assert message.startswith("y, row 9: label 3 is a third class"), message
    assert "'target'" not in message


def test_y_with_a_class_too_small_for_the_folds_names_y(home):
    X = np.arange(24, dtype=float).reshape(12, 2)
    y = np.array([0, 1] * 5 + [2, 0])
    message = in_memory_message(X, y, "multiclass", cv=3, home=home)
    assert message.startswith("y: class 2 has 1 rows, fewer than the 3 folds"), message


def test_a_bad_x_column_names_x_and_the_users_column(home):
    X = pd.DataFrame({"age": [30.0, 40.0, 50.0, 60.0, np.inf, 20.0], "bmi": np.ones(6)})
    y = np.array([0, 1, 0, 1, 0, 1])
    message = in_memory_message(X, y, "binary", cv=2, home=home)
    assert message.startswith("X, row 5, column 'age': value inf is not a finite number"), message


def test_fit_refuses_a_bad_x_column_before_any_flow_run(home, monkeypatch):
    from scikeras.wrappers import KerasClassifier

    def no_flow(*args, **kwargs):
        raise AssertionError("a flow run was started before the data was checked")

    monkeypatch.setattr("foldflow.search.run_flow", no_flow)
    when = pd.to_datetime([f"2024-01-0{k % 9 + 1}" for k in range(12)])
    X = pd.DataFrame({"when": when, "size": np.arange(12.0)})
    y = np.array([0, 1] * 6)
    search = foldflow.GridSearchCV(KerasClassifier(model=tiny_model), {"epochs": [1]}, cv=2)
    with pytest.raises(ValueError, match=r"^X, column 'when' holds dates or times") as refused:
        search.fit(X, y)
    assert ".parquet" not in str(refused.value)


def test_cross_validate_refuses_a_y_class_too_small_before_any_flow_run(home, monkeypatch):
    from scikeras.wrappers import KerasClassifier

    def no_flow(*args, **kwargs):
        raise AssertionError("a flow run was started before the data was checked")

    monkeypatch.setattr("foldflow.cross_validation.run_flow", no_flow)
    X = pd.DataFrame({"age": np.arange(12.0), "size": np.ones(12)})
    y = pd.Series([0, 1] * 5 + [2, 0], name="Outcome")
    with pytest.raises(ValueError, match=r"^y: class 2 has 1 rows, fewer than the 3 folds"):
        foldflow.cross_validate(KerasClassifier(model=tiny_model), X, y, cv=3)


@pytest.mark.parametrize(
    "command, setting, named",
    [
        (["cv", "--param", "preprocess__numeric_impute=bogus"], "bogus", "numeric_impute"),
        (["cv", "--param", "early_stopping__monitor=val_auc"], "val_auc", "monitor"),
    ],
)
def test_a_bad_training_choice_is_refused_in_one_line_before_the_flow_loads(
    tmp_path, command, setting, named
):
    """Routed training keys (preprocess__, fit__, early_stopping__, epochs) are checked as the
    fits' ModelParams check them, before any download, flow run or TensorFlow."""
    errors = io.StringIO()
    arguments = [*command, "--data", str(PIMA_CSV), "--epochs", "1", "--run-name", "bad"]
    arguments += ["--output-dir", str(tmp_path / "runs")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("flows.cli._flow_function", flow_must_not_load)
        status = run(arguments, err=errors)
    error = errors.getvalue()
    assert status == 2
    assert_one_line(error)
    assert named in error and setting in error


def test_a_bad_choice_anywhere_in_a_grid_is_refused_before_the_flow_loads(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "param_grid:\n  epochs: [1]\n  batch_size: [32]\n"
        "  preprocess__categorical_encoding: [onehot, binary]\n"
    )
    errors = io.StringIO()
    arguments = ["grid", "--data", str(PIMA_CSV), "--grid", str(grid), "--run-name", "bad"]
    arguments += ["--output-dir", str(tmp_path / "runs")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("flows.cli._flow_function", flow_must_not_load)
        status = run(arguments, err=errors)
    error = errors.getvalue()
    assert status == 2
    assert_one_line(error)
    assert "preprocess__categorical_encoding" in error and "binary" in error
