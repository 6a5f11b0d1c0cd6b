"""The command line: clear one-line errors, non-zero exit, nothing written on bad input."""

import io
import re

import pandas as pd
import pytest

from flows.cli import run
from tests.conftest import PIMA_CSV

TINY_GRID = "model__optimizer: [adam]\nepochs: [1]\nbatch_size: [64]\n"


@pytest.fixture
def cli_args(tmp_path):
    return ["--output-dir", str(tmp_path / "runs"), "--run-name", "cli"]


def test_grid_command_prints_the_tutorial_lines(tmp_path, cli_args):
    grid = tmp_path / "grid.yaml"
    grid.write_text(TINY_GRID)
    out = io.StringIO()
    arguments = ["grid", "--data", str(PIMA_CSV), "--grid", str(grid), "--no-refit"]
    status = run([*arguments, *cli_args], out=out)
    assert status == 0
    printed = out.getvalue().splitlines()
    assert printed[-3].startswith("Best: ")
    assert printed[-2].endswith("with: {'batch_size': 64, 'epochs': 1, 'model__optimizer': 'adam'}")
    assert (tmp_path / "runs" / "cli" / "cv_results.csv").exists()


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
