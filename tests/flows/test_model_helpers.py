"""A model file's helper module is part of every fit's cache key, on both engines: editing it
retrains instead of serving the old scores (issue 27)."""

import pytest

from flows.cv import cv_flow
from tasks.config import CVConfig, RunSettings

MODEL = """\
from keras.layers import Dense
from keras.models import Sequential

from helper import WIDTH, initializer


def create_model():
    model = Sequential()
    model.add(Dense(WIDTH, input_dim=8, kernel_initializer=initializer(), activation="relu"))
    model.add(Dense(1, kernel_initializer=initializer(), activation="sigmoid"))
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model
"""
HELPER = """\
import keras

WIDTH = {width}


def initializer():
    return keras.initializers.RandomNormal(stddev={stddev})
"""


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_editing_a_helper_module_retrains(run_settings, tmp_path, monkeypatch, engine):
    """Before: `reusing 2 cached fit(s); training 0` and the old scores after the edit."""
    (tmp_path / "m.py").write_text(MODEL)
    helper = tmp_path / "helper.py"
    monkeypatch.syspath_prepend(str(tmp_path))  # as when the user runs from that folder

    def run(name):
        config = CVConfig(
            model=f"{tmp_path / 'm.py'}:create_model",
            params={"epochs": 1, "batch_size": 64},
            run=RunSettings(**run_settings, n_splits=2, engine=engine, run_name=name),
        )
        return cv_flow(config)

    helper.write_text(HELPER.format(width=4, stddev=0.05))
    first = run("narrow")
    helper.write_text(HELPER.format(width=12, stddev=1.0))
    second = run("wide")
    assert first.engines == second.engines == [engine]
    assert first.n_cached_fits == 0 and second.n_cached_fits == 0
    assert first.best_metrics != second.best_metrics
    again = run("wide-again")
    assert again.n_cached_fits == 2 and again.best_metrics == second.best_metrics
