"""The e2e stack's server keeps everything in PostgreSQL (tests/e2e/conftest.py): both
deployments and two concurrent `foldflow grid` runs are rows there, and no SQLite file is made.

`foldflow server --database-url` itself: its wiring and its refusal of an unreachable database
are tested in tests/unit/test_stack.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.stack import stop
from tests.conftest import PIMA_CSV
from tests.e2e.conftest import REPO, RUN_TIMEOUT, Stack

pytestmark = pytest.mark.e2e
TINY_GRID = "model__optimizer: [adam, rmsprop]\nepochs: [1]\nbatch_size: [64]\n"


def cli_grid(stack: Stack, folder: Path) -> subprocess.Popen:
    """`foldflow grid` on the stack's API, this checkout's code, its own runs and cache folder."""
    folder.mkdir()
    (folder / "grid.yaml").write_text(TINY_GRID)
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = {
        **stack.environment,
        "FOLDFLOW_HOME": str(folder),
        "PYTHONPATH": os.pathsep.join(paths),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "grid", "--data", str(PIMA_CSV), "--grid",
         "grid.yaml", "--folds", "2", "--no-refit", "--run-name", "grid", "--output-dir",
         str(folder / "runs")],
        cwd=folder, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def test_deployments_and_concurrent_cli_runs_are_rows_in_postgresql(
    postgres, stack, finished_runs, tmp_path
):
    runs = [cli_grid(stack, tmp_path / f"cli{index}") for index in range(2)]
    try:
        for run in runs:
            log, _ = run.communicate(timeout=RUN_TIMEOUT)
            assert run.returncode == 0, log.decode(errors="replace")[-3000:]
    finally:
        for run in runs:
            stop(run)
    deployment_runs = {str(flow_run.id) for flow_run, _ in finished_runs.values()}

    # Other e2e tests add runs to this server: ours are the deployments' two and the two
    # whose parameters name this test's folder.
    listed = "', '".join(sorted(deployment_runs))
    rows = postgres.query(
        "select f.name, fr.id::text in ('" + listed + "'),"
        " (select count(*) from task_run t where t.flow_run_id = fr.id"
        "  and t.name like 'train_fold%' and t.state_type = 'COMPLETED'),"
        " (select count(*) from artifact a where a.flow_run_id = fr.id)"
        " from flow_run fr join flow f on f.id = fr.flow_id"
        " where fr.state_type = 'COMPLETED' and (fr.id::text in ('" + listed + "')"
        f"  or fr.parameters::text like '%{tmp_path}%') order by 1, 2"
    )
    assert [(name, deployed) for name, deployed, _, _ in rows] == [
        ("foldflow-cv", "t"),
        ("foldflow-grid-search", "f"),
        ("foldflow-grid-search", "f"),
        ("foldflow-grid-search", "t"),
    ], rows
    for flow_name, _, fits, artifacts in rows:
        assert int(fits) >= 1 and int(artifacts) >= 1, (flow_name, fits, artifacts)
    # The API never touched SQLite: the server's PREFECT_HOME has no database file.
    assert not list(Path(stack.environment["PREFECT_HOME"]).glob("*.db"))
    # The two concurrent runs of one grid agree.
    scores = [
        pd.read_parquet(tmp_path / f"cli{index}" / "runs" / "grid" / "cv_results.parquet")
        for index in range(2)
    ]
    pd.testing.assert_series_equal(scores[0]["mean_test_score"], scores[1]["mean_test_score"])
