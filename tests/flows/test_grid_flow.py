import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from flows.grid_search import grid_search_flow
from tasks.config import (
    DEFAULT_DATASET_SPEC,
    DatasetSpec,
    GridSearchConfig,
    GridSpec,
    RunSettings,
)
from tasks.download import download_dataset
from tasks.training import plan_folds, run_fit_jobs
from tests.conftest import PIMA_CSV
from tests.flows.conftest import artifacts_of, flow_run_of, task_runs_of
from tests.support import BUILTIN, combinations, jobs

SMALL_GRID = {"model__optimizer": ["rmsprop", "adam"], "epochs": [1, 2], "batch_size": [32]}


def run_grid(settings, run_name, engine="auto", refit=True, return_state=False):
    config = GridSearchConfig(
        grid=GridSpec.from_mapping(SMALL_GRID),
        run=RunSettings(**settings, n_splits=3, engine=engine, run_name=run_name),
        refit=refit,
    )
    return grid_search_flow(config, return_state=return_state)


def test_grid_flow_returns_one_row_per_combination_with_the_right_split_scores(run_settings):
    summary = run_grid(run_settings, "grid-small")
    table = pd.read_parquet(f"{summary.output_dir}/cv_results.parquet")
    assert len(table) == 4 and summary.n_fits == 12
    assert [json.loads(p) for p in table["params"]][0] == {
        "batch_size": 32,
        "epochs": 1,
        "model__optimizer": "rmsprop",
    }
    spec = DatasetSpec.from_yaml(DEFAULT_DATASET_SPEC)
    handle = download_dataset.fn(spec, Path(run_settings["cache_dir"]), source=str(PIMA_CSV))
    folds = plan_folds(np.loadtxt(PIMA_CSV, delimiter=",")[:, 8].astype(int), 3, 7)
    combination = 3
    params = json.loads(table.loc[combination, "params"])
    checked = combinations({key: [value] for key, value in params.items()})
    direct_jobs = [
        job.model_copy(update={"combination": combination})
        for job in jobs(checked, folds, engine="reference")
    ]
    direct = run_fit_jobs(handle, folds, direct_jobs, run_seed=7, source=BUILTIN)
    assert {result.engine for result in direct} == {"reference"}
    for result in direct:
        assert table.loc[combination, f"split{result.fold}_test_score"] == pytest.approx(
            result.accuracy, abs=1 / 256
        )
    assert table.loc[combination, "mean_test_score"] == pytest.approx(
        np.mean([table.loc[combination, f"split{k}_test_score"] for k in range(3)])
    )


def test_same_seed_gives_the_same_scores_twice(run_settings):
    first = run_grid(run_settings, "grid-first", refit=False)
    second = run_grid(run_settings, "grid-second", refit=False)
    columns = ["params", "mean_test_score", "std_test_score", "rank_test_score"]
    columns += [f"split{k}_test_score" for k in range(3)]
    first_table = pd.read_parquet(f"{first.output_dir}/cv_results.parquet")[columns]
    second_table = pd.read_parquet(f"{second.output_dir}/cv_results.parquet")[columns]
    pd.testing.assert_frame_equal(first_table, second_table)


def test_grid_flow_refits_and_saves_the_best_model(run_settings):
    # the tutorial's grid, with only the fields the overrides name changed (a deployment run)
    tiny = {"model__init": ["uniform"], "epochs": [1, 2], "batch_size": [32]}
    overrides = {"grid": {"param_grid": tiny}, "run": {**run_settings, "n_splits": 3}}
    state = grid_search_flow(GridSearchConfig(), overrides=overrides, return_state=True)
    summary = state.result()
    assert summary.n_combinations == 4  # rmsprop and adam from the config, the rest overridden
    run = flow_run_of(state.state_details.flow_run_id)
    assert run.name == "grid-pima-indians-diabetes-4x3-optimizer-epochs"
    assert {"foldflow", "grid", "pima-indians-diabetes", "engine:auto"} <= set(run.tags)
    assert not [tag for tag in run.tags if tag.startswith("pid:")]
    assert run.labels["foldflow.pid"].isdigit()
    assert state.message == summary.headline
    assert state.message.startswith(f"Best accuracy {summary.best_score:.3f} (")
    artifacts = {a.key: a for a in artifacts_of(state.state_details.flow_run_id)}
    assert {
        "grid-best",
        "grid-results",
        "grid-heatmap",
        "grid-ranked",
        "grid-progress",
        "grid-learning-curves",
    } <= set(artifacts)
    curves = pd.read_parquet(f"{summary.output_dir}/learning_curves.parquet")
    assert list(curves.columns) == [
        "combination", "fold", "epoch", "train_loss", "val_loss", "val_accuracy"
    ]  # fmt: skip
    # 2 combinations x 3 folds x 1 epoch, 2 x 3 x 2 epochs; no validation part
    assert len(curves) == 18 and curves["val_loss"].isna().all()
    assert sorted(curves.groupby("combination")["epoch"].max()) == [1, 1, 2, 2]
    assert (curves["train_loss"] > 0).all()
    assert f"{summary.output_dir}/best_model.keras`" in artifacts["grid-best"].data
    saved = json.loads(open(f"{summary.output_dir}/best_model.json").read())
    assert saved["best_params"] == summary.best_params
    assert saved["best_score"] == pytest.approx(summary.best_score)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. an optimizer saved without its variables
        model = keras.saving.load_model(f"{summary.output_dir}/best_model.keras")
    assert model.predict(np.zeros((2, 8), dtype=np.float32), verbose=0).shape == (2, 1)


def test_a_taken_run_folder_stops_the_flow_before_any_fit(run_settings, tmp_path):
    """As a deployment or the UI would start it: no CLI in front to check the folder."""
    taken = tmp_path / "runs" / "taken"
    taken.mkdir(parents=True)
    (taken / "best_model.keras").write_text("an earlier run's model")
    state = run_grid(run_settings, "taken", refit=False, return_state=True)
    assert state.is_failed()
    assert f"run folder {taken} already holds a run" in state.message
    fits = task_runs_of(state.state_details.flow_run_id)
    assert not [run for run in fits if run.name.startswith("train_fold")]
    assert (taken / "best_model.keras").read_text() == "an earlier run's model"
