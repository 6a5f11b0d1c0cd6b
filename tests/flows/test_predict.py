"""Issue 25 point 4: a grid's refitted model takes raw rows as they come (text categories,
missing cells, labels 1/2), from the command line (`foldflow predict`) and from Python
(`foldflow.load_model`)."""

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import foldflow
from flows.cli import run
from tasks.config import PROJECT_ROOT

GRID = "epochs: [2]\nbatch_size: [16]\nmodel__optimizer: [adam, rmsprop]\n"


def mixed_frame(n_rows: int, seed: int) -> pd.DataFrame:
    """Numbers with missing cells, text categories, labels 1/2 carried by both."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], n_rows)
    size = rng.normal(size=n_rows).round(3)
    label = np.where((colour == "red") | (size > 0.5), 2, 1)
    frame = pd.DataFrame({"size": size.astype(object), "colour": colour, "label": label})
    frame.loc[::7, "size"] = "?"
    frame.loc[::11, "colour"] = ""
    return frame


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A grid of 2 combinations x 3 folds, 2 epochs, refit on, on a mixed CSV."""
    folder = tmp_path_factory.mktemp("predict")
    mixed_frame(90, seed=0).to_csv(folder / "mixed.csv", index=False)
    (folder / "mixed.yaml").write_text(
        "name: mixed\nurl: https://example.invalid/none\nheader: true\ntarget: label\n"
    )
    (folder / "grid.yaml").write_text(GRID)
    arguments = [
        "grid", "--data", str(folder / "mixed.csv"), "--dataset-spec", str(folder / "mixed.yaml"),
        "--grid", str(folder / "grid.yaml"), "--folds", "3", "--output-dir", str(folder / "runs"),
        "--run-name", "mixed",
    ]  # fmt: skip
    assert run(arguments, out=io.StringIO()) == 0
    return folder, folder / "runs" / "mixed"


def test_predict_writes_one_row_per_raw_row_in_the_users_labels(trained_run):
    folder, run_folder = trained_run
    new_rows = pd.DataFrame(
        {
            "size": ["0.3", "?", "", "-1.2"],
            "colour": ["purple", "red", "", "blue"],  # purple: never seen in training
        }
    )
    new_rows.to_csv(folder / "new.csv", index=False)
    out, err = io.StringIO(), io.StringIO()
    status = run(["predict", str(run_folder), "--data", str(folder / "new.csv")], out, err)
    assert status == 0, err.getvalue()
    table = pd.read_csv(io.StringIO(out.getvalue()))
    assert list(table.columns) == ["prediction", "proba_1", "proba_2"]
    assert len(table) == 4
    assert set(table["prediction"]) <= {1, 2}
    np.testing.assert_allclose(table[["proba_1", "proba_2"]].sum(axis=1), 1.0, atol=1e-6)
    model = foldflow.load_model(run_folder)
    assert list(model.classes_) == [1, 2]
    np.testing.assert_array_equal(model.predict(new_rows), table["prediction"].to_numpy())
    np.testing.assert_allclose(
        model.predict_proba(new_rows), table[["proba_1", "proba_2"]].to_numpy(), atol=1e-6
    )


def test_predict_reads_the_training_file_itself_and_writes_into_output(trained_run):
    folder, run_folder = trained_run
    output = folder / "predictions.csv"
    err = io.StringIO()
    arguments = ["predict", str(run_folder), "--data", str(folder / "mixed.csv")]
    assert run([*arguments, "--output", str(output)], io.StringIO(), err) == 0
    assert err.getvalue().strip() == f"90 predictions in {output}"
    assert len(pd.read_csv(output)) == 90


def test_predict_refuses_a_file_missing_a_column_in_one_line_naming_it(trained_run):
    folder, run_folder = trained_run
    (folder / "partial.csv").write_text("size\n0.5\n")
    out, err = io.StringIO(), io.StringIO()
    status = run(["predict", str(run_folder), "--data", str(folder / "partial.csv")], out, err)
    assert status == 2 and out.getvalue() == ""
    message = err.getvalue().strip()
    assert message.startswith("foldflow: error: ") and "\n" not in message
    assert "column 'colour' is missing" in message


def test_the_refusal_comes_before_tensorflow_loads(trained_run):
    folder, run_folder = trained_run
    (folder / "other.csv").write_text("size,colour,weight\n0.5,red,3\n")
    script = (
        "import sys; from flows.cli import run; "
        f"status = run(['predict', {str(run_folder)!r}, '--data', {str(folder / 'other.csv')!r}]); "
        "print(status, 'tensorflow' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert done.stdout.split() == ["2", "False"]
    assert "column 'weight' was not in the training data" in done.stderr


def test_the_run_folder_keeps_the_preprocessing_and_the_input_schema(trained_run):
    _, run_folder = trained_run
    saved = json.loads((run_folder / "best_model.json").read_text())
    assert saved["preprocessing"]["transformer_file"] == "best_preprocessing.joblib"
    schema = json.loads((run_folder / "input_schema.json").read_text())
    assert schema["kinds"] == {"size": "numeric", "colour": "categorical"}
    assert schema["categories"] == {"colour": ["blue", "green", "red"]}
    assert schema["classes"] == [1, 2] and schema["positive_label"] == 2
