"""`foldflow server --database-url` on a real PostgreSQL: both deployments and two concurrent
`foldflow grid` runs land as rows in PostgreSQL, and no SQLite database is made.

One PostgreSQL (tests/e2e/postgres.py) and one `foldflow server` (server + pool + deploy +
worker, as a user starts it) for the module, both stopped by PID at the end, pass or fail.
The shared e2e stack (conftest.py) stays on SQLite: a PostgreSQL server hands a deployment
run's parameters back with their keys reordered (JSONB), which renames its runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from flows.runtime.stack import AUTH_FILE_NAME, stack_environment, stop, wait_for_health
from tests.conftest import PIMA_CSV
from tests.e2e.conftest import (
    CV_DEPLOYMENT,
    GRID_DEPLOYMENT,
    REPO,
    RUN_TIMEOUT,
    Stack,
    free_port,
    tiny_cv_parameters,
    tiny_grid_parameters,
)
from tests.e2e.postgres import Postgres, running_postgres

pytestmark = pytest.mark.e2e
TINY_GRID = "model__optimizer: [adam, rmsprop]\nepochs: [1]\nbatch_size: [64]\n"


def this_checkout(environment: dict[str, str]) -> dict[str, str]:
    """Child processes import this checkout's code, whatever the venv's install points at."""
    paths = [str(REPO), *filter(None, [environment.get("PYTHONPATH")])]
    return {**environment, "PYTHONPATH": os.pathsep.join(paths), "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as database:
        yield database


@pytest.fixture(scope="module")
def pg_stack(postgres, tmp_path_factory) -> Iterator[Stack]:
    """`foldflow server --database-url ...` as a user runs it, until its worker is up."""
    tmp = tmp_path_factory.mktemp("pg-stack")
    port = free_port()
    environment = this_checkout(dict(os.environ))
    for name in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        environment.pop(name, None)
    environment.update(
        {
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        }
    )
    output = tmp / "foldflow-server.log"
    with open(output, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "server", "--port", str(port),
             "--database-url", postgres.url, "--log-dir", str(tmp)],
            cwd=tmp, env=environment, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_health(f"http://127.0.0.1:{port}/api", process=process)
        deadline = time.monotonic() + 180
        while "worker started on pool" not in output.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"foldflow server did not come up:\n{output.read_text()}")
            time.sleep(0.5)
        # Authenticated by default: the auth string it made, as a client reads it.
        auth = (tmp / "prefect-home" / AUTH_FILE_NAME).read_text().strip()
        yield Stack(
            environment=stack_environment("127.0.0.1", port, auth, base=environment),
            api_url=f"http://127.0.0.1:{port}/api",
            ui_url=f"http://127.0.0.1:{port}",
            auth_string=auth,
            logs=tmp,
        )
    finally:
        stop(process, timeout=60)  # it stops its worker and server itself on SIGTERM


def cli_grid(stack: Stack, folder: Path) -> subprocess.Popen:
    """`foldflow grid` on the stack's API, in its own folder (its own runs and cache)."""
    folder.mkdir()
    (folder / "grid.yaml").write_text(TINY_GRID)
    environment = this_checkout({**stack.environment, "FOLDFLOW_HOME": str(folder)})
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "grid", "--data", str(PIMA_CSV), "--grid",
         "grid.yaml", "--folds", "2", "--no-refit", "--run-name", "grid"],
        cwd=folder, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def test_deployments_and_concurrent_cli_runs_are_rows_in_postgresql(postgres, pg_stack, tmp_path):
    outputs = {name: tmp_path / name.replace("/", "-") for name in (CV_DEPLOYMENT, GRID_DEPLOYMENT)}
    submitted = [
        pg_stack.submit(CV_DEPLOYMENT, tiny_cv_parameters(outputs[CV_DEPLOYMENT])),
        pg_stack.submit(GRID_DEPLOYMENT, tiny_grid_parameters(outputs[GRID_DEPLOYMENT])),
    ]
    runs = [cli_grid(pg_stack, tmp_path / f"cli{index}") for index in range(2)]
    try:
        for run in runs:
            log, _ = run.communicate(timeout=RUN_TIMEOUT)
            assert run.returncode == 0, log.decode(errors="replace")[-3000:]
    finally:
        for run in runs:
            stop(run)
    finished = [pg_stack.wait(flow_run.id) for flow_run in submitted]
    assert [run.state.type.value for run in finished] == ["COMPLETED", "COMPLETED"]

    # A fresh database: the completed runs are these four (schedules only add future ones).
    rows = postgres.query(
        "select f.name, fr.id,"
        " (select count(*) from task_run t where t.flow_run_id = fr.id"
        "  and t.name like 'train_fold%' and t.state_type = 'COMPLETED'),"
        " (select count(*) from artifact a where a.flow_run_id = fr.id)"
        " from flow_run fr join flow f on f.id = fr.flow_id"
        " where fr.state_type = 'COMPLETED' order by f.name, fr.id"
    )
    assert [row[0] for row in rows] == ["foldflow-cv"] + ["foldflow-grid-search"] * 3, rows
    assert {str(run.id) for run in finished} <= {row[1] for row in rows}
    assert all(int(fits) >= 1 and int(artifacts) >= 1 for _, _, fits, artifacts in rows), rows
    # The API never touched SQLite: the server's PREFECT_HOME has no database file.
    assert not list(pg_stack.logs.glob("prefect-home/*.db"))
    # The two concurrent runs of one grid agree.
    scores = [
        pd.read_parquet(tmp_path / f"cli{index}" / "runs" / "grid" / "cv_results.parquet")
        for index in range(2)
    ]
    pd.testing.assert_series_equal(scores[0]["mean_test_score"], scores[1]["mean_test_score"])
