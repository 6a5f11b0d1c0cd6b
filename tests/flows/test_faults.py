"""A fit that fails for good fails its combination, not the whole search (unless asked)."""

import numpy as np
import pandas as pd
import pytest

from flows.grid_search import grid_search_flow
from tasks.config import GridSearchConfig, GridSpec, RunSettings
from tasks.model_factory import MODEL_BUILDERS, build_mlp

GRID = {
    "builder": ["fragile"],
    "model__optimizer": ["rmsprop", "adam"],
    "epochs": [1],
    "batch_size": [64],
}


def fragile_mlp(meta, hidden_layers, activation, init, optimizer, loss, seed):
    """A user's builder that cannot build one of its configurations."""
    if optimizer == "adam":
        raise RuntimeError("this builder cannot use adam")
    return build_mlp(meta, hidden_layers, activation, init, optimizer, loss, seed)


@pytest.fixture
def fragile_builder():
    MODEL_BUILDERS["fragile"] = fragile_mlp
    yield
    del MODEL_BUILDERS["fragile"]


def config(settings, run_name):
    return GridSearchConfig(
        grid=GridSpec.from_mapping(GRID),
        run=RunSettings(**settings, n_splits=3, run_name=run_name),
        refit=False,
    )


def test_failed_fits_are_recorded_in_cv_results_and_the_search_completes(
    run_settings, fragile_builder
):
    state = grid_search_flow(config(run_settings, "faulty"), return_state=True)
    assert state.is_completed()
    summary = state.result()
    table = pd.read_parquet(f"{summary.output_dir}/cv_results.parquet")
    adam = table[table["param_model__optimizer"] == "adam"].iloc[0]
    rmsprop = table[table["param_model__optimizer"] == "rmsprop"].iloc[0]
    assert np.isnan(adam["mean_test_score"]) and adam["rank_test_score"] == 2
    assert "this builder cannot use adam" in adam["error"]
    assert rmsprop["mean_test_score"] > 0 and rmsprop["error"] == ""
    assert summary.n_failed_fits == 3
    assert summary.best_params["model__optimizer"] == "rmsprop"
    assert set(table["engine"]) == {"reference", "failed"}


def test_fail_fast_stops_the_search(run_settings, fragile_builder, tmp_path):
    state = grid_search_flow(config(run_settings, "fail-fast"), fail_fast=True, return_state=True)
    assert state.is_failed()
    assert not (tmp_path / "runs" / "fail-fast").exists()
