"""A grid search killed mid-run resumes from its cached fits and ends exactly as an
uninterrupted run would."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.settings import PREFECT_API_URL

from flows.grid_search import grid_search_flow
from tasks.config import GridSearchConfig, GridSpec, RunSettings
from tests.flows.conftest import logs_of, task_runs_of

GRID = {
    "model__optimizer": ["rmsprop", "adam"],
    "model__init": ["uniform", "normal"],
    "epochs": [4],
    "batch_size": [16],
}
SCORE_COLUMNS = ["params", "mean_test_score", "std_test_score", "rank_test_score"] + [
    f"split{k}_test_score" for k in range(3)
]


def config(settings, run_name, grid=GRID, n_splits=3):
    return GridSearchConfig(
        grid=GridSpec.from_mapping(grid),
        run=RunSettings(**settings, n_splits=n_splits, engine="reference", run_name=run_name),
        refit=False,
    )


CHILD = """
import sys
from flows.grid_search import grid_search_flow
from tasks.config import GridSearchConfig
grid_search_flow.with_options(flow_run_name="doomed-run")(
    GridSearchConfig.model_validate_json(sys.argv[1])
)
"""


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def finished_fits(fit_cache: Path) -> list[Path]:
    """The fit cache's entries (tasks.train.fit_cache), without half-written temporary files."""
    return [path for path in fit_cache.rglob("*.json") if not path.name.startswith(".")]


def test_killed_grid_search_resumes_without_retraining_finished_fits(run_settings, tmp_path):
    fit_cache = Path(run_settings["cache_dir"]) / "fits"
    doomed = config(run_settings, "resumed", n_splits=2)  # 8 fits
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, doomed.model_dump_json()],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: len(finished_fits(fit_cache)) >= 3,
            timeout=240,
            what="three finished fits in the fit cache",
        )
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    finished_before_kill = len(finished_fits(fit_cache))
    assert finished_before_kill < 8, "the run finished before it could be killed"
    # The named run's folder was claimed as it started: left holding only the claim, marked
    # INCOMPLETE (tasks.results.run_folder), which the resumed run takes over.
    left = tmp_path / "runs" / "resumed"
    assert sorted(path.name for path in left.iterdir()) == [".foldflow-run", "INCOMPLETE"]

    resumed_state = grid_search_flow(doomed, return_state=True)
    resumed = resumed_state.result()
    fits = [
        run
        for run in task_runs_of(resumed_state.state_details.flow_run_id)
        if run.name.startswith("train_fold")
    ]
    # Reused fits are read from the fit cache by the flow: only the others are task runs (one
    # fit each on the reference engine), and every fit of the grid is in the cache afterwards.
    assert {run.state.name for run in fits} == {"Completed"}
    assert len(fits) == 8 - finished_before_kill
    assert len(finished_fits(fit_cache)) == 8

    uninterrupted_settings = {**run_settings, "cache_dir": str(tmp_path / "other-cache")}
    uninterrupted = grid_search_flow(config(uninterrupted_settings, "uninterrupted", n_splits=2))
    resumed_table = pd.read_parquet(Path(resumed.output_dir) / "cv_results.parquet")
    reference_table = pd.read_parquet(Path(uninterrupted.output_dir) / "cv_results.parquet")
    two_folds = SCORE_COLUMNS[:-1]
    pd.testing.assert_frame_equal(resumed_table[two_folds], reference_table[two_folds])
    leftovers = [p.name for p in (tmp_path / "runs").rglob("*") if ".tmp" in p.name]
    assert leftovers == []

    with get_client(sync_client=True) as client:
        [killed] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["doomed-run"]))
        )
    assert killed.state.type.value == "CRASHED"
    assert "died" in killed.state.message


def test_fresh_retrains_everything(run_settings):
    first = config(run_settings, "first", {**GRID, "model__init": ["uniform"], "epochs": [1]})
    grid_search_flow(first)
    fresh = first.model_copy(
        update={"run": first.run.model_copy(update={"fresh": True, "run_name": "fresh"})}
    )
    state = grid_search_flow(fresh, return_state=True)
    fits = [
        run
        for run in task_runs_of(state.state_details.flow_run_id)
        if run.name.startswith("train_fold")
    ]
    assert len(fits) == 6 and {run.state.name for run in fits} == {"Completed"}


def test_a_fast_engine_resume_with_other_workers_reuses_every_fit(run_settings):
    """The fit cache is per fit: groups of fits depend on --workers, the cache does not."""
    grid = {**GRID, "epochs": [2, 3], "batch_size": [16, 32]}

    def fast(name, workers):
        return GridSearchConfig(
            grid=GridSpec.from_mapping(grid),
            run=RunSettings(**run_settings, n_splits=3, workers=workers, run_name=name),
            refit=False,
        )

    first = grid_search_flow(fast("two-workers", 2))
    state = grid_search_flow(fast("one-worker", 1), return_state=True)
    again = state.result()
    assert first.engines == ["fast"] and first.n_cached_fits == 0
    assert again.n_cached_fits == again.n_fits == 48
    trained = [r for r in task_runs_of(state.state_details.flow_run_id) if "train_fold" in r.name]
    assert trained == []
    pd.testing.assert_frame_equal(
        pd.read_parquet(Path(again.output_dir) / "cv_results.parquet")[SCORE_COLUMNS],
        pd.read_parquet(Path(first.output_dir) / "cv_results.parquet")[SCORE_COLUMNS],
    )


def test_a_longer_run_continues_from_the_checkpoints_an_earlier_run_left(run_settings):
    """Checkpoints are prefixes: 2 epochs then 2 more score exactly as 4 epochs from scratch."""
    grid = {"model__optimizer": ["rmsprop", "adam"], "batch_size": [32]}

    def run(name, epochs, **settings):
        return grid_search_flow(
            GridSearchConfig(
                grid=GridSpec.from_mapping({**grid, "epochs": [epochs]}),
                run=RunSettings(**run_settings, n_splits=3, run_name=name, **settings),
                refit=False,
            ),
            return_state=True,
        )

    run("short", 2)
    continued = run("continued", 4)
    fresh = run("fresh", 4, fresh=True)
    messages = [log.message for log in logs_of(continued.state_details.flow_run_id)]
    assert "continuing 6 fit(s) from checkpoints: training 12 epochs instead of 24" in messages
    assert not any("continuing" in log.message for log in logs_of(fresh.state_details.flow_run_id))
    assert list((Path(run_settings["cache_dir"]) / "checkpoints").rglob("*-e4.npz"))
    pd.testing.assert_frame_equal(
        pd.read_parquet(Path(continued.result().output_dir) / "cv_results.parquet")[SCORE_COLUMNS],
        pd.read_parquet(Path(fresh.result().output_dir) / "cv_results.parquet")[SCORE_COLUMNS],
    )


def test_fits_cached_before_a_change_to_a_training_module_are_recomputed(
    run_settings, tmp_path, monkeypatch
):
    """The fingerprint hashes the sources themselves: edit any training module and the fits and
    checkpoints cached by the old code are neither served nor continued from."""
    from tasks.train import fingerprint

    def run(name):
        return grid_search_flow(
            GridSearchConfig(
                grid=GridSpec.from_mapping({**GRID, "model__init": ["uniform"], "epochs": [2]}),
                run=RunSettings(**run_settings, n_splits=3, run_name=name),
                refit=False,
            ),
            return_state=True,
        )

    first = run("old-code").result()
    same_code = run("same-code").result()
    assert first.n_cached_fits == 0 and same_code.n_cached_fits == same_code.n_fits == 6

    edited = tmp_path / "edited-checkout"
    for package in fingerprint.FINGERPRINTED_PACKAGES:
        shutil.copytree(fingerprint.SOURCE_ROOT / package, edited / package)
    engine = edited / "tasks" / "train" / "fast" / "trainer.py"
    engine.write_text(engine.read_text() + "\n# a change to the training code\n")
    monkeypatch.setattr(fingerprint, "SOURCE_ROOT", edited)
    fingerprint.code_fingerprint.cache_clear()
    try:
        state = run("new-code")
    finally:
        fingerprint.code_fingerprint.cache_clear()
    new_code = state.result()
    assert new_code.n_cached_fits == 0 and new_code.n_fits == 6
    messages = [log.message for log in logs_of(state.state_details.flow_run_id)]
    assert not any("reusing" in m or "continuing" in m for m in messages)
    assert len(finished_fits(Path(run_settings["cache_dir"]) / "fits")) == 12
