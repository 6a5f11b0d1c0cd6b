import pandas as pd
import pytest
import yaml

from flows.cv import cv_flow
from tasks.config import DEFAULT_DATASET_SPEC, CVConfig, RunSettings
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError
from tests.conftest import PIMA_CSV
from tests.flows.conftest import artifacts_of, flow_run_of, logs_of, task_runs_of

TINY = {"epochs": 1, "batch_size": 64}


def run_cv(settings, **run_overrides):
    config = CVConfig(params=TINY, run=RunSettings(**settings, **run_overrides))
    state = cv_flow(config, return_state=True)
    return state, state.result()


@pytest.fixture(scope="module")
def reference_cv(tmp_path_factory):
    """The tutorial's ten folds on the reference engine, run once for the tests that read it."""
    folder = tmp_path_factory.mktemp("reference-cv")
    settings = {
        "source": str(PIMA_CSV),
        "cache_dir": str(folder / "cache"),
        "output_dir": str(folder / "runs"),
    }
    return run_cv(settings, engine="reference", run_name="cv-ten")


def test_cv_flow_runs_ten_folds_as_ten_mapped_task_runs(reference_cv):
    state, summary = reference_cv
    assert state.is_completed()
    fits = [
        run
        for run in task_runs_of(state.state_details.flow_run_id)
        if run.name.startswith("train_fold")
    ]
    assert len(fits) == 10
    assert {run.state.name for run in fits} == {"Completed"}
    assert sorted(run.name for run in fits)[0] == "train_fold[e1 | b64 | fold0]"
    table = pd.read_parquet(f"{summary.output_dir}/cv_results.parquet")
    scores = [table.loc[0, f"split{fold}_test_score"] for fold in range(10)]
    assert summary.best_score == pytest.approx(sum(scores) / 10)
    assert 0.3 < summary.best_score < 0.9 and summary.best_std > 0
    assert summary.engines == ["reference"]
    keys = {artifact.key for artifact in artifacts_of(state.state_details.flow_run_id)}
    assert {"cv-best", "cv-results", "cv-summary", "cv-fold-scores", "cv-progress"} <= keys
    assert "pima-indians-diabetes-data-quality" in keys
    run = flow_run_of(state.state_details.flow_run_id)
    assert run.name == "cv-ten"  # the user's run name
    assert {"foldflow", "cv", "pima-indians-diabetes", "engine:reference"} <= set(run.tags)
    assert state.message == summary.headline


def test_fast_engine_gives_the_reference_scores_through_the_flow(run_settings, reference_cv):
    _, reference = reference_cv
    _, fast = run_cv(run_settings, engine="auto", run_name="cv-fast")
    reference_table = pd.read_parquet(f"{reference.output_dir}/cv_results.parquet")
    fast_table = pd.read_parquet(f"{fast.output_dir}/cv_results.parquet")
    assert fast.engines == ["fast"]
    for fold in range(10):
        column = f"split{fold}_test_score"
        assert fast_table.loc[0, column] == pytest.approx(
            reference_table.loc[0, column], abs=1 / 76
        )


def test_bad_data_stops_the_flow_before_training(run_settings, tmp_path):
    bad_csv = tmp_path / "bad.csv"
    lines = open(run_settings["source"]).read().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:-1] + ["2"])
    bad_csv.write_text("\n".join(lines))
    spec = DatasetSpec.from_yaml(DEFAULT_DATASET_SPEC).model_dump()
    spec_path = tmp_path / "unchecked.yaml"
    spec_path.write_text(yaml.safe_dump({**spec, "sha256": None}))
    settings = {**run_settings, "source": str(bad_csv), "dataset_spec": str(spec_path)}
    state = cv_flow(CVConfig(params=TINY, run=RunSettings(**settings)), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="row 6"):
        state.result()
    names = [run.name for run in task_runs_of(state.state_details.flow_run_id)]
    assert not [name for name in names if name.startswith("train_fold")]
    assert not (tmp_path / "runs").exists()


def test_a_misspelt_model_argument_fails_the_run_with_one_message(run_settings):
    config = CVConfig(params={**TINY, "optimizer": "sgdd"}, run=RunSettings(**run_settings))
    state = cv_flow(config, return_state=True)
    assert state.is_failed()
    assert state.message.startswith("ConfigError: build_mlp")
    assert "unknown optimizer 'sgdd'; choose one of rmsprop, adam" in state.message
    with pytest.raises(ConfigError, match="unknown optimizer 'sgdd'"):
        state.result()
    flow_logs = [
        log.message for log in logs_of(state.state_details.flow_run_id) if not log.task_run_id
    ]
    assert not [message for message in flow_logs if "Traceback" in message]
