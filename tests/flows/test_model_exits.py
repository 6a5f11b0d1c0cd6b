"""A model function that ends the process (`sys.exit`, `os._exit`) fails the `foldflow` run
with one line naming it and its line, never exit status 0 without results (issue 27)."""

import os
import subprocess
import sys

import pytest
from prefect.settings import PREFECT_API_URL

from tasks.config import PROJECT_ROOT
from tests.conftest import PIMA_CSV

EXITS = {"sys.exit(0)": "import sys", "sys.exit(3)": "import sys", "os._exit(0)": "import os"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three runs at once (real CLI processes on the tests' Prefect API), 1 epoch each."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    environment |= {"PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(PROJECT_ROOT)}
    started = {}
    for call, header in EXITS.items():
        folder = tmp_path_factory.mktemp("exit")
        model = folder / "model.py"
        model.write_text(f"{header}\n\ndef create_model():\n    {call}\n")
        arguments = [
            "cv", "--model", f"{model}:create_model", "--data", str(PIMA_CSV), "--folds", "2",
            "--epochs", "1", "--output-dir", str(folder / "runs"),
        ]  # fmt: skip
        started[call] = (
            model,
            subprocess.Popen(
                [sys.executable, "-m", "flows.cli", *arguments],
                cwd=folder,
                env=environment | {"FOLDFLOW_HOME": str(folder)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    finished = {}
    for call, (model, process) in started.items():
        out, err = process.communicate(timeout=300)
        finished[call] = (model, process.returncode, out, err)
    return finished


@pytest.mark.parametrize("call", list(EXITS))
def test_a_model_function_ending_the_process_fails_the_run_in_one_line(runs, call):
    """Before: sys.exit(0) and os._exit(0) ended `foldflow cv` with status 0, no results and no
    line; sys.exit(3) with 3 and only Prefect's "Crashed"."""
    model, status, out, err = runs[call]
    assert status == 2, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"foldflow: error: model function create_model ({model}) called {call} at line 4: "
        "a model function must return a compiled Keras model, not end the process"
    )
    assert "Results in" not in out


def test_the_cli_exits_0_only_when_the_run_folder_holds_its_results(tmp_path):
    from flows.cli import missing_results

    (tmp_path / "cv_results.csv").write_text("params\n")
    assert missing_results(tmp_path) == f"cv_results.parquet, summary.txt in {tmp_path}"
    (tmp_path / "cv_results.parquet").write_bytes(b"")
    (tmp_path / "summary.txt").write_text("")
    assert missing_results(tmp_path) == ""
