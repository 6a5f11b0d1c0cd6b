"""A user's own model function through both flows, on both engines, reproducibly on every
runner, with its file's bytes in every fit's cache key."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.cv import cv_flow
from flows.grid_search import grid_search_flow
from tasks.config import PROJECT_ROOT, CVConfig, GridSearchConfig, GridSpec, RunSettings
from tasks.errors import ConfigError

TUTORIAL = f"{PROJECT_ROOT / 'models' / 'tutorial.py'}:create_model"
DROPOUT = f"{PROJECT_ROOT / 'models' / 'dropout.py'}:create_model"
SCORES = ["params", "mean_test_score", "std_test_score"] + [
    f"split{k}_test_score" for k in range(3)
]


def grid_config(settings, run_name, model, grid, engine="auto", refit=False, **run):
    return GridSearchConfig(
        model=model,
        grid=GridSpec.from_mapping(grid),
        run=RunSettings(**settings, n_splits=3, engine=engine, run_name=run_name, **run),
        refit=refit,
    )


def table_of(summary):
    return pd.read_parquet(Path(summary.output_dir) / "cv_results.parquet")


def test_the_tutorials_grid_keys_run_its_create_model_on_the_fast_engine(run_settings):
    grid = {
        "optimizer": ["rmsprop", "adam"],
        "init": ["uniform"],
        "epochs": [2],
        "batch_size": [64],
    }
    bare = grid_search_flow(grid_config(run_settings, "bare", TUTORIAL, grid, refit=True))
    assert bare.engines == ["fast"] and bare.n_fits == 6
    prefixed = {
        "model__optimizer": ["rmsprop", "adam"],
        "model__init": ["uniform"],
        "epochs": [2],
        "batch_size": [64],
    }
    spelled = grid_search_flow(grid_config(run_settings, "prefixed", TUTORIAL, prefixed))
    assert spelled.n_cached_fits == 6  # the same fits: seeds and cache keys ignore spelling
    bare_scores = table_of(bare)[[f"split{k}_test_score" for k in range(3)]]
    spelled_scores = table_of(spelled)[[f"split{k}_test_score" for k in range(3)]]
    pd.testing.assert_frame_equal(bare_scores, spelled_scores)
    reference = grid_search_flow(
        grid_config(run_settings, "reference", TUTORIAL, grid, engine="reference")
    )
    assert reference.engines == ["reference"]
    pd.testing.assert_frame_equal(
        table_of(reference)[SCORES], table_of(bare)[SCORES], check_exact=False, atol=1e-6
    )
    saved = json.loads((Path(bare.output_dir) / "best_model.json").read_text())
    assert saved["model_function"] == TUTORIAL and saved["engine"] == "fast"


def test_a_dropout_model_with_a_learning_rate_runs_through_both_flows(run_settings, caplog):
    grid = {"dropout": [0.0, 0.3], "learning_rate": [0.01], "epochs": [2], "batch_size": [64]}
    summary = grid_search_flow(grid_config(run_settings, "dropout", DROPOUT, grid, refit=True))
    assert summary.engines == ["fast"] and summary.n_fits == 6
    assert (Path(summary.output_dir) / "best_model.keras").is_file()
    assert "reference engine:" not in caplog.text
    cv = cv_flow(
        CVConfig(
            model=DROPOUT,
            params={"dropout": 0.2, "learning_rate": 0.005, "epochs": 2, "batch_size": 64},
            run=RunSettings(**run_settings, n_splits=3, run_name="dropout-cv"),
        )
    )
    assert cv.engines == ["fast"] and cv.n_fits == 3 and 0.3 < cv.best_score < 0.9


def test_fast_and_reference_dropout_agree_statistically_over_a_grid(run_settings):
    """Dropout masks differ between the engines (seeded per fit either way), so fold scores
    do too; each combination's fast mean must lie within the larger fold std of the
    reference mean, for accuracy and log loss."""
    grid = {
        "dropout": [0.2, 0.5],
        "learning_rate": [0.01, 0.003],
        "epochs": [5],
        "batch_size": [32],
        # Scaled features learn in 5 epochs; unscaled Pima hovers near the majority class,
        # where fold scores are mostly noise.
        "preprocess__scaling": ["standard"],
    }
    tables = {}
    for engine in ("fast", "reference"):
        summary = grid_search_flow(
            grid_config(run_settings, f"dropout-{engine}", DROPOUT, grid, engine=engine)
        )
        assert summary.engines == [engine] and summary.n_fits == 12
        tables[engine] = table_of(summary)
    fast, reference = tables["fast"], tables["reference"]
    assert list(fast["params"]) == list(reference["params"])
    for metric in ("score", "log_loss"):
        gap = (fast[f"mean_test_{metric}"] - reference[f"mean_test_{metric}"]).abs()
        spread = np.maximum(fast[f"std_test_{metric}"], reference[f"std_test_{metric}"])
        assert (gap <= spread).all(), (metric, gap.tolist(), spread.tolist())
    splits = [f"split{k}_test_score" for k in range(3)]
    assert not fast[splits].equals(reference[splits])  # other masks: not the same fits


def test_a_non_default_learning_rate_runs_on_the_fast_engine_in_cv(run_settings):
    cv = cv_flow(
        CVConfig(
            params={"learning_rate": 0.01, "optimizer": "sgd", "epochs": 2, "batch_size": 64},
            run=RunSettings(**run_settings, n_splits=3, run_name="lr-cv"),
        )
    )
    assert cv.engines == ["fast"] and cv.n_fits == 3


def test_editing_the_model_file_retrains_and_an_unchanged_file_reuses(run_settings, tmp_path):
    model_file = tmp_path / "my_model.py"
    shutil.copy(PROJECT_ROOT / "models" / "tutorial.py", model_file)
    grid = {"optimizer": ["adam"], "epochs": [2], "batch_size": [64]}
    reference = f"{model_file}:create_model"
    first = grid_search_flow(grid_config(run_settings, "first", reference, grid))
    again = grid_search_flow(grid_config(run_settings, "again", reference, grid))
    assert (first.n_cached_fits, again.n_cached_fits) == (0, 3)
    model_file.write_text(model_file.read_text().replace("Dense(8,", "Dense(6,"))
    edited = grid_search_flow(grid_config(run_settings, "edited", reference, grid))
    assert edited.n_cached_fits == 0
    assert table_of(edited)["mean_test_log_loss"][0] != table_of(first)["mean_test_log_loss"][0]


def test_a_bad_model_reference_stops_the_flow_before_any_data_or_training(run_settings, tmp_path):
    with pytest.raises(ConfigError, match="no function 'build'"):
        grid_search_flow(
            grid_config(
                run_settings,
                "bad",
                f"{PROJECT_ROOT / 'models' / 'tutorial.py'}:build",
                {"epochs": [1]},
            )
        )
    assert not (tmp_path / "runs").exists()
