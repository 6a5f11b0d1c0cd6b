"""The same flows on a real Dask cluster: `dask scheduler` and `dask worker` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.grid_search import grid_search_flow
from tasks.config import GridSearchConfig, GridSpec, RunSettings
from tests.e2e.conftest import SHARED_CSV, free_port

pytestmark = pytest.mark.e2e
GRID = {
    "model__optimizer": ["rmsprop", "adam"],
    "model__init": ["uniform", "normal"],
    "epochs": [3],
    "batch_size": [32],
}
SCORES = ["params", "mean_test_score", "std_test_score", "rank_test_score"] + [
    f"split{k}_test_score" for k in range(3)
]
DASK = str(Path(sys.executable).with_name("dask"))


@contextmanager
def dask_cluster(api_url: str, n_workers: int, logs: Path) -> Iterator[tuple[str, list]]:
    """A scheduler and worker processes on 127.0.0.1; every one stopped by PID on exit."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    environment = {**os.environ, "PREFECT_API_URL": api_url, "TF_CPP_MIN_LOG_LEVEL": "2"}
    processes: list[subprocess.Popen] = []

    def spawn(arguments, name):
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            [DASK, *arguments], env=environment, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        processes.append(process)
        return process

    try:
        spawn(["scheduler", "--host", "127.0.0.1", "--port", str(port),
               "--dashboard-address", ":0"], "scheduler")  # fmt: skip
        workers = [
            spawn(
                [
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                    "--name",
                    f"w{index}",
                ],
                f"worker{index}",
            )  # fmt: skip
            for index in range(n_workers)
        ]
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=120)
        yield address, workers
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def grid_config(tmp_path: Path, name: str, **run) -> GridSearchConfig:
    return GridSearchConfig(
        grid=GridSpec.from_mapping(GRID),
        run=RunSettings(
            source=str(SHARED_CSV),
            cache_dir=str(tmp_path / name / "cache"),
            output_dir=str(tmp_path / "runs"),
            run_name=name,
            n_splits=3,
            engine="reference",
            **run,
        ),  # fmt: skip
        refit=False,
    )


def scores(summary) -> pd.DataFrame:
    return pd.read_parquet(Path(summary.output_dir) / "cv_results.parquet")[SCORES]


def test_grid_on_dask_equals_threads_and_processes_and_survives_a_lost_worker(stack, tmp_path):
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        threads = grid_search_flow(grid_config(tmp_path, "threads"))
        processes = grid_search_flow(grid_config(tmp_path, "processes", runner="processes"))
        pd.testing.assert_frame_equal(scores(threads), scores(processes))
        with dask_cluster(stack.api_url, 2, tmp_path) as (address, workers):
            on_dask = grid_search_flow(
                grid_config(tmp_path, "dask", runner="dask", dask_address=address)
            )
            pd.testing.assert_frame_equal(scores(threads), scores(on_dask))

            # Kill one worker once fits are under way; Dask reschedules its tasks.
            config = grid_config(tmp_path, "dask-killed", runner="dask", dask_address=address)
            runner = subprocess.Popen(
                [sys.executable, "-c", RUN_CHILD, config.model_dump_json()],
                env={**os.environ, "PREFECT_API_URL": stack.api_url, "TF_CPP_MIN_LOG_LEVEL": "2"},
                cwd=Path(__file__).resolve().parents[2],
                stdout=open(tmp_path / "killed-run.log", "ab"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
            try:
                wait_for_started_fits(stack, "dask-killed-run", minimum=2)
                os.killpg(workers[0].pid, signal.SIGKILL)
                assert runner.wait(timeout=300) == 0
            finally:
                if runner.poll() is None:
                    runner.kill()
    killed = pd.read_parquet(tmp_path / "runs" / "dask-killed" / "cv_results.parquet")
    pd.testing.assert_frame_equal(scores(threads), killed[SCORES])


RUN_CHILD = """
import sys
from flows.grid_search import grid_search_flow
from tasks.config import GridSearchConfig
grid_search_flow.with_options(flow_run_name="dask-killed-run")(
    GridSearchConfig.model_validate_json(sys.argv[1])
)
"""


def wait_for_started_fits(stack, flow_run_name: str, minimum: int, timeout: float = 180) -> None:
    from prefect.client.schemas.filters import FlowRunFilterName

    deadline = time.monotonic() + timeout
    with stack.client() as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[flow_run_name]))
            )
            if runs:
                task_runs = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id]))
                )
                started = [
                    t
                    for t in task_runs
                    if t.name.startswith("train_fold") and t.state and t.state.name != "Pending"
                ]
                if len(started) >= minimum:
                    return
            time.sleep(0.5)
    raise AssertionError(f"{flow_run_name} started fewer than {minimum} fits in {timeout} s")
