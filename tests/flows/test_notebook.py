"""From a notebook (issue 29): a real .ipynb run by nbclient on an IPython kernel. A
`foldflow.GridSearchCV(...).fit` is quiet by default (verbose=0: no Prefect log line, no
TensorFlow start-up line) and shows a progress bar with verbose=1."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tasks.config import PROJECT_ROOT

SETUP = """
import numpy as np
import keras
import foldflow

def tiny_model(units=4):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model

data = np.loadtxt({csv!r}, delimiter=",")[:120]
X, y = data[:, :8], data[:, 8].astype(int)
"""
QUIET = """
search = foldflow.GridSearchCV(tiny_model, {"epochs": [1], "batch_size": [64]}, cv=2).fit(X, y)
print("quiet best", round(search.best_score_, 4))
"""
VERBOSE = """
search = foldflow.GridSearchCV(
    tiny_model, {"epochs": [1], "batch_size": [32]}, cv=2, verbose=1
).fit(X, y)
print("verbose best", round(search.best_score_, 4))
"""
# Prefect's INFO lines (warnings and errors always show, as scikit-learn's warnings do).
PREFECT_LINES = ("| INFO", "Finished in state", "Beginning flow run", "temporary server")
TENSORFLOW_LINES = ("oneDNN custom operations", "absl::InitializeLog")


def text_of(cell) -> str:
    """Everything a cell showed: its streams (stdout, stderr) and rich outputs' plain text."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
        elif output.output_type == "error":
            parts.append("\n".join(output.traceback))
    return "".join(parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory, pima_csv):
    folder = tmp_path_factory.mktemp("notebook")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(SETUP.format(csv=str(pima_csv))),
        nbformat.v4.new_code_cell(QUIET),
        nbformat.v4.new_code_cell(VERBOSE),
    ]
    path = folder / "tiny.ipynb"
    nbformat.write(notebook, path)
    from prefect.settings import get_current_settings

    environment = {
        **os.environ,
        "FOLDFLOW_HOME": str(folder),
        # The test process's temporary API (tests/conftest.py): no second server to start.
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)  # the kernel is started with this process's environment
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources={
            "metadata": {"path": str(folder)}
        }).execute()  # fmt: skip
    finally:
        os.environ.clear()
        os.environ.update(saved)
    nbformat.write(notebook, path)  # kept beside the test's files for a look
    return notebook


def test_a_fit_is_quiet_by_default(executed):
    shown = text_of(executed.cells[1])
    assert shown.startswith("quiet best 0.") and shown.count("\n") == 1, shown
    assert not [line for line in PREFECT_LINES if line in shown]
    assert not [line for line in TENSORFLOW_LINES if line in shown]


def test_verbose_1_shows_a_progress_bar_and_still_no_prefect_line(executed):
    shown = text_of(executed.cells[2])
    assert "fits 2/2 |" in shown and "100%" in shown and "best accuracy 0." in shown, shown
    assert "verbose best 0." in shown
    assert not [line for line in PREFECT_LINES if line in shown]
    assert not [line for line in TENSORFLOW_LINES if line in shown]
