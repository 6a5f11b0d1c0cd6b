"""A fit that fails for good fails its combination, not the whole search (unless asked)."""

import numpy as np
import pandas as pd
import pytest

from flows.grid_search import grid_search_flow
from tasks.config import GridSearchConfig, GridSpec, RunSettings

GRID = {"model__optimizer": ["rmsprop", "adam"], "epochs": [1], "batch_size": [64]}

# A user's model file whose model builds (and so passes the checks before training) for both
# optimizers but cannot train with adam: its failure happens in the fits themselves. A model
# subclass goes to the reference engine, whose fits call its `fit`.
FRAGILE_MODEL = """
import keras


class FragileModel(keras.Sequential):
    def __init__(self, layers, refuses_training):
        super().__init__(layers)
        self.refuses_training = refuses_training

    def fit(self, *args, **kwargs):
        if self.refuses_training:
            raise RuntimeError("this model cannot train with adam")
        return super().fit(*args, **kwargs)


def create_model(meta, optimizer="rmsprop"):
    layers = [
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ]
    model = FragileModel(layers, refuses_training=optimizer == "adam")
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model
"""


@pytest.fixture
def fragile_model(tmp_path):
    path = tmp_path / "fragile.py"
    path.write_text(FRAGILE_MODEL)
    return f"{path}:create_model"


def config(settings, run_name, model):
    return GridSearchConfig(
        model=model,
        grid=GridSpec.from_mapping(GRID),
        run=RunSettings(**settings, n_splits=3, run_name=run_name),
        refit=False,
    )


def test_failed_fits_are_recorded_in_cv_results_and_the_search_completes(
    run_settings, fragile_model
):
    state = grid_search_flow(config(run_settings, "faulty", fragile_model), return_state=True)
    assert state.is_completed()
    summary = state.result()
    table = pd.read_parquet(f"{summary.output_dir}/cv_results.parquet")
    adam = table[table["param_model__optimizer"] == "adam"].iloc[0]
    rmsprop = table[table["param_model__optimizer"] == "rmsprop"].iloc[0]
    assert np.isnan(adam["mean_test_score"]) and adam["rank_test_score"] == 2
    assert "this model cannot train with adam" in adam["error"]
    assert rmsprop["mean_test_score"] > 0 and rmsprop["error"] == ""
    assert summary.n_failed_fits == 3
    assert summary.best_params["model__optimizer"] == "rmsprop"
    assert set(table["engine"]) == {"reference", "failed"}


def test_fail_fast_stops_the_search(run_settings, fragile_model, tmp_path):
    state = grid_search_flow(
        config(run_settings, "fail-fast", fragile_model), fail_fast=True, return_state=True
    )
    assert state.is_failed()
    assert not (tmp_path / "runs" / "fail-fast").exists()
