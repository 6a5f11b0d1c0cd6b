"""The command line: clear one-line errors, non-zero exit, nothing written on bad input."""

import io
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from prefect.settings import PREFECT_API_URL

from flows.cli import run
from tasks.config import PROJECT_ROOT, GridSpec
from tests.conftest import PIMA_CSV
from tests.unit.tasks.test_yaml_input import PEAK_MB, YAML_BOMB

TINY_GRID = "model__optimizer: [adam]\nepochs: [1]\nbatch_size: [64]\n"


@pytest.fixture
def cli_args(tmp_path):
    return ["--output-dir", str(tmp_path / "runs"), "--run-name", "cli"]


def test_grid_command_prints_the_top_combinations_and_plain_progress_lines(tmp_path, cli_args):
    grid = tmp_path / "grid.yaml"
    grid.write_text(TINY_GRID)
    out, errors = io.StringIO(), io.StringIO()
    arguments = ["grid", "--data", str(PIMA_CSV), "--grid", str(grid), "--no-refit"]
    status = run([*arguments, "--train-scores", *cli_args], out=out, err=errors)
    assert status == 0
    printed = out.getvalue().splitlines()
    # issue 29: a small table of the top combinations (keys with values), then the folder
    assert printed[-3].split() == ["rank", "accuracy", "batch_size", "epochs", "model__optimizer"]
    assert re.fullmatch(r"\s*1  0\.\d{4} ± 0\.\d{4}  64\s+1\s+adam", printed[-2])
    assert not [line for line in printed if line.startswith("Best: ")]
    assert "Best: " in (tmp_path / "runs" / "cli" / "summary.txt").read_text()  # still there
    # Not a terminal: plain progress lines, no bar (tests/flows/test_progress_terminal.py
    # checks Prefect's lines and the bar of a real terminal).
    progress = errors.getvalue()
    assert re.search(r"^fits 3/3 \(100%\), [\d.]+ fits/s, best accuracy 0\.\d{4} ", progress, re.M)
    assert "\r" not in progress
    table = pd.read_csv(tmp_path / "runs" / "cli" / "cv_results.csv")
    assert {"split2_train_accuracy", "mean_train_score", "std_train_roc_auc"} <= set(table.columns)


def test_cv_command_prints_mean_and_std_accuracy(tmp_path, cli_args):
    out = io.StringIO()
    arguments = ["cv", "--data", str(PIMA_CSV), "--epochs", "1", "--batch-size", "64"]
    assert run([*arguments, *cli_args], out=out) == 0
    printed = out.getvalue().splitlines()
    assert re.fullmatch(r"Accuracy: 0\.\d{6} \(0\.\d{6}\)", printed[-2])
    assert printed[-1] == f"Results in {tmp_path / 'runs' / 'cli'}"


@pytest.mark.parametrize(
    ("grid_text", "message"),
    [
        ("epochs: [1]\nlearning_rat: [0.1]\n", "grid key 'learning_rat' is neither a parameter"),
        ("epochs: []\n", "empty list"),
        ("model__optimizer: [adamm]\n", "unknown optimizer 'adamm'"),
        ("model__init: [5]\n", "init"),
    ],
)
def test_bad_grid_exits_non_zero_with_the_key_and_writes_nothing(
    tmp_path, cli_args, grid_text, message
):
    grid = tmp_path / "grid.yaml"
    grid.write_text(grid_text)
    errors = io.StringIO()
    status = run(["grid", "--data", str(PIMA_CSV), "--grid", str(grid), *cli_args], err=errors)
    error = errors.getvalue()
    assert status == 2
    assert error.startswith("foldflow: error:") and message in error
    assert "Traceback" not in error
    assert not (tmp_path / "runs").exists()


def test_bad_csv_exits_non_zero_naming_the_line_and_writes_nothing(tmp_path, cli_args):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: pima-copy\nurl: https://example.invalid/pima.csv\n"
        "columns: [a, b, c, d, e, f, g, h, outcome]\ntarget: outcome\n"
    )
    bad = tmp_path / "bad.csv"
    lines = PIMA_CSV.read_text().splitlines()
    lines[41] = lines[41].replace(",", ",x", 1)
    bad.write_text("\n".join(lines))
    errors = io.StringIO()
    arguments = ["cv", "--data", str(bad), "--dataset-spec", str(spec), "--epochs", "1"]
    status = run([*arguments, *cli_args], err=errors)
    error = errors.getvalue()
    assert status == 2
    assert "line 42" in error and "column 'b'" in error and "'x" in error
    assert not (tmp_path / "runs").exists()


def test_cv_command_scales_imputes_and_prints_every_metric_refit_metric_last(tmp_path, cli_args):
    out = io.StringIO()
    arguments = ["cv", "--data", str(PIMA_CSV), "--epochs", "1", "--batch-size", "64"]
    arguments += ["--scaling", "standard", "--impute-zeros", "--refit-metric", "roc_auc"]
    assert run([*arguments, *cli_args], out=out) == 0
    printed = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in printed[-5:-1]] == [
        "Accuracy",
        "F1",
        "Log loss",
        "ROC AUC",
    ]
    table = pd.read_csv(tmp_path / "runs" / "cli" / "cv_results.csv")
    assert table.loc[0, "mean_test_score"] == table.loc[0, "mean_test_roc_auc"]


def test_a_refit_metric_the_task_lacks_exits_non_zero_before_training(tmp_path, cli_args):
    errors = io.StringIO()
    arguments = ["cv", "--data", str(PIMA_CSV), "--refit-metric", "r2"]
    assert run([*arguments, *cli_args], err=errors) == 2
    assert "refit_metric 'r2' is not a metric of a binary task" in errors.getvalue()
    assert not (tmp_path / "runs").exists()


def listing(folder):
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def flow_must_not_load(command: str):
    raise AssertionError(f"refused only after loading the {command} flow (and TensorFlow)")


def test_a_reused_run_name_is_refused_before_training_unless_overwrite_replaces_it(
    tmp_path, cli_args
):
    grid = tmp_path / "grid.yaml"
    grid.write_text(TINY_GRID)
    run_dir = tmp_path / "runs" / "cli"
    assert run(["grid", "--data", str(PIMA_CSV), "--grid", str(grid), *cli_args]) == 0
    first = {name: (run_dir / name).read_bytes() for name in listing(run_dir)}
    assert {"best_model.keras", "best_model.json", "summary.txt"} <= set(first)

    errors = io.StringIO()
    cv = ["cv", "--data", str(PIMA_CSV), "--folds", "2", "--epochs", "1", "--batch-size", "64"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("flows.cli._flow_function", flow_must_not_load)
        assert run([*cv, *cli_args], err=errors) == 2
    assert f"run folder {run_dir} already holds a run" in errors.getvalue()
    assert "--overwrite" in errors.getvalue()
    assert {name: (run_dir / name).read_bytes() for name in listing(run_dir)} == first

    assert run([*cv, *cli_args, "--overwrite"]) == 0
    files = listing(run_dir)  # the grid's files gone, only the cv's own (its pictures too)
    assert [name for name in files if not name.endswith(".png")] == [
        "cv_results.csv",
        "cv_results.parquet",
        "learning_curves.parquet",
        "summary.txt",
    ]
    assert not {"best_model.keras", "best_model.json"} & set(files)
    columns = pd.read_csv(run_dir / "cv_results.csv").columns
    assert "split1_test_score" in columns and "split2_test_score" not in columns  # 2 folds now
    assert [path.name for path in run_dir.parent.iterdir()] == ["cli"]


@pytest.mark.timeout(20)
def test_a_million_combination_grid_is_refused_before_anything_is_expanded(
    tmp_path, cli_args, monkeypatch
):
    grid = tmp_path / "huge.yaml"
    grid.write_text(
        f"epochs: {list(range(1, 101))}\nbatch_size: {list(range(1, 101))}\n"
        f"model__hidden_layers: {[[units] for units in range(1, 101)]}\n"
    )

    def expanded(self):
        raise AssertionError("the grid was expanded before its size was checked")

    monkeypatch.setattr(GridSpec, "expand", expanded)
    errors = io.StringIO()
    status = run(["grid", "--data", str(PIMA_CSV), "--grid", str(grid), *cli_args], err=errors)
    assert status == 2
    assert f"{grid}: 1,000,000 combination(s) x 3 folds = 3,000,000 fits" in errors.getvalue()
    assert "max_fits=100,000" in errors.getvalue()
    assert not (tmp_path / "runs").exists()


def test_max_fits_is_a_cli_option(tmp_path, cli_args):
    grid = tmp_path / "grid.yaml"
    grid.write_text("epochs: [1, 2]\nbatch_size: [64]\n")
    errors = io.StringIO()
    arguments = ["grid", "--data", str(PIMA_CSV), "--grid", str(grid), "--max-fits", "5"]
    assert run([*arguments, *cli_args], err=errors) == 2
    assert "2 combination(s) x 3 folds = 6 fits, more than max_fits=5" in errors.getvalue()


BOMB_CHILD = (
    PEAK_MB
    + """
import sys, time
from flows.cli import run
import tasks.config, tasks.results.run_folder  # the imports' cost is not the bomb's
status = run(sys.argv[1:])
print(f"peak_mb={peak_mb():.0f}", file=sys.stderr)
sys.exit(status)
"""
)


def test_a_yaml_bomb_grid_is_refused_by_the_cli_in_bounded_time_and_memory(tmp_path, cli_args):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(YAML_BOMB)
    try:
        child = subprocess.run(
            [sys.executable, "-c", BOMB_CHILD, "grid", "--grid", str(bomb), *cli_args],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the CLI was still expanding the YAML bomb after 10 s")
    error = child.stderr
    assert child.returncode == 2, error[-2000:]
    assert error.startswith(f"foldflow: error: {bomb}: the value starting on line ")
    assert "holds more than 100,000 values once its aliases are expanded" in error
    [peak] = re.search(r"peak_mb=(\d+)", error).groups()
    assert int(peak) < 400, "peak memory (MB) of the whole CLI process, imports included"


@pytest.mark.parametrize("option", ["--grid", "--dataset-spec"])
def test_binary_garbage_as_grid_or_spec_exits_2_naming_the_file(tmp_path, cli_args, option):
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(bytes(range(256)) * 4)
    errors = io.StringIO()
    status = run(["grid", "--data", str(PIMA_CSV), option, str(garbage), *cli_args], err=errors)
    assert status == 2
    assert f"foldflow: error: {garbage} is not UTF-8 text" in errors.getvalue()
    assert not (tmp_path / "runs").exists()


def test_a_duplicate_grid_key_exits_2_naming_the_key_and_lines(tmp_path, cli_args):
    grid = tmp_path / "grid.yaml"
    grid.write_text("epochs: [1]\nbatch_size: [64]\nepochs: [2]\nmodel__optimizer: [adam]\n")
    errors = io.StringIO()
    status = run(["grid", "--data", str(PIMA_CSV), "--grid", str(grid), *cli_args], err=errors)
    assert status == 2
    assert f"{grid}: key 'epochs' appears twice in one mapping (lines 1 and 3)" in errors.getvalue()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("below", ["", "sub"])
def test_an_output_dir_that_is_a_file_exits_2_before_training(tmp_path, below):
    taken = tmp_path / "results.txt"
    taken.write_text("not a folder")
    output_dir = taken / below if below else taken
    errors = io.StringIO()
    arguments = ["cv", "--data", str(PIMA_CSV), "--epochs", "1", "--output-dir", str(output_dir)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("flows.cli._flow_function", flow_must_not_load)
        assert run(arguments, err=errors) == 2
    assert f"output folder {output_dir}" in errors.getvalue() and "is a file" in errors.getvalue()
    assert taken.read_text() == "not a folder"


CUSTOM_LAYER_MODEL = '''
import keras


class Doubled(keras.layers.Layer):
    """A layer of the user's own: neither the fast engine nor the vectorized path knows it."""

    def call(self, inputs):
        return inputs * 2.0


def create_model(meta):
    inputs = keras.Input(shape=(meta["n_features_in_"],))
    output = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Sequential([inputs, Doubled(), output])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model
'''


def test_a_fallback_to_the_reference_engine_is_shown_with_its_reason_without_verbose(
    tmp_path, cli_args
):
    """The progress bar hides Prefect's INFO lines: the reason a model trains on the slower
    reference engine is a warning, so the user sees it without --verbose (the real command,
    on this process's Prefect API)."""
    model = tmp_path / "custom.py"
    model.write_text(CUSTOM_LAYER_MODEL)
    arguments = ["cv", "--data", str(PIMA_CSV), "--model", f"{model}:create_model"]
    arguments += ["--folds", "2", "--epochs", "1", "--batch-size", "256", *cli_args]
    environment = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    child = subprocess.run(
        [sys.executable, "-m", "foldflow.cli", *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    pattern = r"reference engine: .*Doubled.* \(1 combination\(s\)\)"
    assert re.search(pattern, child.stderr), child.stderr[-2000:]
