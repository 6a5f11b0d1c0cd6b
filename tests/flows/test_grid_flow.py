import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from prefect import flow
from prefect.logging.handlers import APILogWorker

from flows.evaluation import EarlyRefit
from flows.grid_search import grid_search_flow
from flows.stages import load_model_source, prepare_data
from tasks.config import DEFAULT_DATASET_SPEC, GridSearchConfig, GridSpec, RunSettings
from tasks.data.fetch import download_dataset
from tasks.data.folds import plan_folds
from tasks.dataset_spec import DatasetSpec
from tasks.model.factory import build_model_factory
from tasks.records import FitResult
from tasks.train.dispatch import run_fit_jobs
from tasks.train.refit import refit_best
from tests.conftest import PIMA_CSV
from tests.flows.conftest import artifacts_of, flow_run_of, logs_of, task_runs_of
from tests.support import BUILTIN, combinations, jobs

SMALL_GRID = {"model__optimizer": ["rmsprop", "adam"], "epochs": [1, 2], "batch_size": [32]}


def run_grid(settings, run_name, engine="auto", refit=True, return_state=False, workers=2):
    config = GridSearchConfig(
        grid=GridSpec.from_mapping(SMALL_GRID),
        run=RunSettings(**settings, n_splits=3, engine=engine, run_name=run_name, workers=workers),
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


# --- the refit started beside the last fits (flows.evaluation.EarlyRefit) --------------------


def test_the_refit_starts_before_the_aggregation_once_no_fit_is_left_to_start(run_settings):
    # one worker: the early refit starts as the last group ends, with every fit done
    state = run_grid(run_settings, "early-refit", workers=1, return_state=True)
    summary = state.result()
    APILogWorker.drain_all()  # the run's logs reach the API
    logs = logs_of(state.state_details.flow_run_id)
    early = [log for log in logs if log.message.startswith("refitting combination")]
    best = summary.best_index
    assert [log.message for log in early] == [
        f"refitting combination {best}, the best so far, beside the last fits"
    ]
    task_runs = task_runs_of(state.state_details.flow_run_id)
    [aggregation] = [run for run in task_runs if run.name.startswith("aggregate_results")]
    assert early[0].timestamp < aggregation.start_time
    assert sum(run.name.startswith("refit_best") for run in task_runs) == 1
    saved = json.loads(Path(summary.output_dir, "best_model.json").read_text())
    assert saved["best_params"] == summary.best_params
    assert summary.refit_seconds > 0


def fold_record(combination, fold, accuracy):
    return FitResult(
        combination=combination,
        params={},
        fold=fold,
        accuracy=accuracy,
        loss=0.5,
        n_train=512,
        n_test=256,
        fit_seconds=0.0,
        seed=1,
        engine="fast",
    )


def test_an_early_refit_that_bet_wrong_is_dropped_and_a_right_one_equals_the_usual_refit(
    run_settings,
):
    grid = GridSpec.from_mapping(
        {"model__optimizer": ["rmsprop", "adam"], "epochs": [2], "batch_size": [32]}
    )
    run = RunSettings(**run_settings, n_splits=3)

    @flow
    def bet(first_seen_best: int, final_best: int):
        source = load_model_source("mlp")
        prepared = prepare_data(run)
        found = build_model_factory(source, {}, grid, prepared.meta, run.seed)
        early = EarlyRefit(prepared, source, found, run)
        early([])  # no combination has every fold yet: no bet
        assert early.future is None
        seen = [fold_record(first_seen_best, fold, 0.9) for fold in range(3)]
        early([*seen, fold_record(1 - first_seen_best, 0, 1.0)])
        early([fold_record(1 - first_seen_best, fold, 1.0) for fold in range(3)])  # one bet
        assert early.combination == first_seen_best
        kept = early.refit_of(final_best)
        usual = refit_best(
            prepared.dataset, source, found[final_best].model, found[final_best].network, 7
        )
        return kept, usual

    dropped, usual = bet(first_seen_best=0, final_best=1)
    assert dropped is None and usual.params.arguments["optimizer"] == "adam"
    kept, usual = bet(first_seen_best=1, final_best=1)
    assert kept.params == usual.params
    for early_weights, usual_weights in zip(
        kept.model.get_weights(), usual.model.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(early_weights, usual_weights)
    assert kept.fields == usual.fields
