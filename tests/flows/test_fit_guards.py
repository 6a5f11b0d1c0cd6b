"""Guards on the reference engine's fits (issue 27 point 5, issue 26 point 3): a fit over
`max_memory` or `fit_timeout` is stopped and recorded as failed with the reason, and the run
finishes. (The pool itself - the next fit after a stopped one, recycling - is tested with tiny
workers in tests/unit/tasks/train/test_fit_workers.py.)

One grid run serves both tests: a custom layer (so the reference engine) that, only while
training in a worker, allocates 3 GB or sleeps for ever."""

import pandas as pd
import pytest
from prefect.logging.handlers import APILogWorker

from flows.grid_search import grid_search_flow
from tasks.config import GridSearchConfig, GridSpec, RunSettings
from tests.flows.conftest import logs_of

MODEL = """
import time

import keras
import numpy as np


class Behaving(keras.layers.Layer):
    def __init__(self, behaviour, **kwargs):
        super().__init__(**kwargs)
        self.behaviour = behaviour

    def call(self, inputs, training=None):
        # Only while fitting (the checks before training build the model in the flow's
        # process too): Keras traces this once per fit.
        if training and self.behaviour == "hungry":
            held = np.ones(3 * 2**30 // 8)  # 3 GB, every page touched
            time.sleep(30)
            del held
        if training and self.behaviour == "sleepy":
            time.sleep(3600)
        return inputs


def create_model(meta, behaviour="fine"):
    model = keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        Behaving(behaviour),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model
"""


@pytest.fixture(scope="module")
def guarded_run(tmp_path_factory):
    """(cv_results by behaviour, log lines) of one grid: hungry and sleepy x 2 folds, with
    --max-memory 300MB and --fit-timeout 30."""
    from tests.conftest import PIMA_CSV

    folder = tmp_path_factory.mktemp("guards")
    (folder / "behaving.py").write_text(MODEL)
    config = GridSearchConfig(
        model=f"{folder / 'behaving.py'}:create_model",
        base_params={"epochs": 1, "batch_size": 256},
        grid=GridSpec.from_mapping({"behaviour": ["hungry", "sleepy"]}),
        run=RunSettings(
            source=str(PIMA_CSV),
            cache_dir=str(folder / "cache"),
            output_dir=str(folder / "runs"),
            n_splits=2,
            max_memory="300MB",
            # The hungry fit must reach its allocation before this: in a fresh-clone make test
            # (3 unit processes beside the e2e side, load ~7) it had not after 10 s.
            fit_timeout=30,
            run_name="guards",
        ),
        refit=False,
    )
    state = grid_search_flow(config, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    table = pd.read_parquet(f"{summary.output_dir}/cv_results.parquet")
    APILogWorker.drain_all()  # the run's logs reach the API
    lines = [log.message for log in logs_of(state.state_details.flow_run_id)]
    return table.set_index("param_behaviour"), lines


def test_a_fit_over_max_memory_is_recorded_failed_with_the_reason(guarded_run):
    """Before: a fit allocating 3 GB took whatever the machine had (20 GB: the OOM killer)."""
    table, lines = guarded_run
    error = table.loc["hungry", "error"]
    assert "more than max_memory (--max-memory) 300 MB" in error
    assert "FitStopped" in error
    assert any("stopped: the fit used more than max_memory" in line for line in lines)


def test_a_fit_past_fit_timeout_is_recorded_failed_and_the_run_finishes(guarded_run):
    """Before: a fit that sleeps for ever ran for as long as one waited."""
    table, _ = guarded_run
    error = table.loc["sleepy", "error"]
    assert error.count("ran longer than fit_timeout (--fit-timeout) 30 s and was stopped") == 2
    assert set(table["engine"]) == {"failed"}


def test_a_model_function_allocating_20_gb_while_built_fails_the_run_in_one_line(
    run_settings, tmp_path
):
    """The checks before training build the function in the flow's process (no worker yet):
    before, 20 GB there went to the out-of-memory killer with no message."""
    from flows.cv import cv_flow
    from tasks.config import CVConfig

    model = tmp_path / "greedy.py"
    model.write_text(
        "import numpy as np\n\n\ndef create_model(meta):\n"
        "    held = np.ones(20 * 10**9 // 8)\n    return held\n"
    )
    config = CVConfig(
        model=f"{model}:create_model",
        params={"epochs": 1},
        run=RunSettings(**run_settings, n_splits=2, max_memory="300MB"),
    )
    state = cv_flow(config, return_state=True)
    assert state.is_failed()
    assert "create_model" in state.message and "at line 5" in state.message
    assert "MemoryError" in state.message
    assert "more than max_memory (--max-memory) 300 MB while the model was built" in state.message
