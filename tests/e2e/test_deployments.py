"""The repo's prefect.yaml deployed to a real server and run by a real process worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import IntervalSchedule

from tests.e2e.conftest import (
    AUTH_STRING,
    CV_DEPLOYMENT,
    GRID_DEPLOYMENT,
    REPO,
    RUN_TIMEOUT,
    combination_rows,
    free_port,
    tiny_cv_parameters,
)

pytestmark = pytest.mark.e2e
PREFECT_YAML = yaml.safe_load((REPO / "prefect.yaml").read_text())
FLOW_NAMES = {"cv-nightly": "foldflow-cv", "grid-weekly": "foldflow-grid-search"}


def artifacts_of(stack, flow_run_id) -> dict:
    with stack.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact for artifact in artifacts}


def run_folders(output: Path) -> list[Path]:
    return sorted(path for path in (output / "runs").iterdir() if path.is_dir())


@pytest.mark.parametrize("written", PREFECT_YAML["deployments"], ids=lambda d: d["name"])
def test_deployments_are_registered_as_written_in_prefect_yaml(stack, written):
    with stack.client() as client:
        deployment = client.read_deployment_by_name(
            f"{FLOW_NAMES[written['name']]}/{written['name']}"
        )
    registered = sorted(
        (s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules
    )
    expected = sorted((s["cron"], s["timezone"], s["active"]) for s in written["schedules"])
    assert registered == expected
    assert deployment.work_pool_name == written["work_pool"]["name"]
    assert deployment.entrypoint == written["entrypoint"]
    assert deployment.parameters == written["parameters"]
    assert sorted(deployment.tags) == sorted(written["tags"])
    # `{{ $PWD }}` was filled in with the folder `prefect deploy` ran in: this checkout.
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
    ]


def test_cron_schedules_create_upcoming_runs_in_their_timezone(stack):
    with stack.client() as client:
        deployment = client.read_deployment_by_name(CV_DEPLOYMENT)
        deadline = time.monotonic() + 60
        while not (upcoming := _scheduled_runs(client, deployment.id)):
            stack.fail_if_scheduler_is_broken()
            if time.monotonic() > deadline:
                pytest.fail(f"the scheduler created no run for the cron\n{stack.log_tail()}")
            time.sleep(0.5)
    for flow_run in upcoming:
        local = flow_run.expected_start_time.astimezone(_zone("Europe/London"))
        assert (local.hour, local.minute) == (2, 0), flow_run.expected_start_time


def _zone(name: str):
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _scheduled_runs(client, deployment_id):
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    )
    return [run for run in runs if run.auto_scheduled and run.state_type == StateType.SCHEDULED]


def test_cv_deployment_runs_on_the_worker(stack, finished_runs):
    flow_run, output = finished_runs[CV_DEPLOYMENT]
    assert flow_run.state.type == StateType.COMPLETED, flow_run.state.message
    artifacts = artifacts_of(stack, flow_run.id)
    assert {"cv-best", "cv-results", "cv-summary", "cv-fold-scores", "cv-progress"} <= set(
        artifacts
    )
    [row] = combination_rows(artifacts["cv-results"])  # one combination, three folds
    # prefect.yaml's params with the run's overrides merged over them
    assert (row["param_optimizer"], row["param_init"]) == ("adam", "glorot_uniform")
    assert (row["param_epochs"], row["param_batch_size"]) == (1, 64)
    [run_dir] = run_folders(output)
    assert {"cv_results.csv", "cv_results.parquet", "summary.txt"} <= {
        path.name for path in run_dir.iterdir()
    }
    assert not (run_dir / "INCOMPLETE").exists()  # removed once everything is written


def test_grid_deployment_runs_on_the_worker(stack, finished_runs):
    flow_run, output = finished_runs[GRID_DEPLOYMENT]
    assert flow_run.state.type == StateType.COMPLETED, flow_run.state.message
    artifacts = artifacts_of(stack, flow_run.id)
    assert {"grid-best", "grid-results", "grid-heatmap", "grid-ranked", "grid-progress"} <= set(
        artifacts
    )
    rows = combination_rows(artifacts["grid-results"])
    # 2 optimizers (prefect.yaml's, kept) x 2 epoch counts (the run's overrides)
    assert sorted((row["param_model__optimizer"], row["param_epochs"]) for row in rows) == [
        ("adam", 1),
        ("adam", 2),
        ("rmsprop", 1),
        ("rmsprop", 2),
    ]
    assert "data:image/png;base64," in artifacts["grid-heatmap"].data
    [run_dir] = run_folders(output)
    assert (run_dir / "summary.txt").read_text().startswith("Best: ")
    assert not (run_dir / "INCOMPLETE").exists()


def test_a_scheduled_run_fires_and_completes(stack, tmp_path):
    """An interval schedule (with its own parameters) anchored a few seconds ahead fires once."""
    parameters = tiny_cv_parameters(tmp_path)
    anchor = datetime.now(UTC) + timedelta(seconds=8)
    with stack.client() as client:
        deployment = client.read_deployment_by_name(CV_DEPLOYMENT)
        [schedule] = client.create_deployment_schedules(
            deployment.id,
            [(IntervalSchedule(interval=timedelta(minutes=10), anchor_date=anchor), True)],
            parameters=parameters,
        )
        try:
            fired = _wait_for_scheduled_run(stack, client, deployment.id, str(schedule.id))
        finally:
            client.delete_deployment_schedule(deployment.id, schedule.id)
    flow_run = stack.wait(fired.id)
    assert flow_run.state.type == StateType.COMPLETED, flow_run.state.message
    assert flow_run.auto_scheduled
    assert abs(flow_run.expected_start_time - anchor) < timedelta(seconds=1)
    # the schedule's parameters reached the run beside the deployment's (merged at the top level)
    assert flow_run.parameters == {**deployment.parameters, **parameters}
    assert run_folders(tmp_path)


def _wait_for_scheduled_run(stack, client, deployment_id, schedule_id):
    """The first run the scheduler made for this schedule, once it has left SCHEDULED."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
            )
        )
        mine = [run for run in runs if schedule_id in (run.idempotency_key or "")]
        started = [run for run in mine if run.state_type != StateType.SCHEDULED]
        if started:
            return started[0]
        stack.fail_if_scheduler_is_broken()
        time.sleep(0.5)
    pytest.fail(f"no run of the schedule started within {RUN_TIMEOUT} s\n{stack.log_tail()}")


@pytest.fixture(scope="module")
def guarded_runs(guarded_stack, tmp_path_factory) -> dict:
    """Two runs on the guarded stack, submitted at once and waited for together: one as
    prefect.yaml declares it, one whose model is a file outside the folders the server allows
    (it leaves a marker if it is ever imported)."""
    allowed, outside = tmp_path_factory.mktemp("allowed"), tmp_path_factory.mktemp("outside")
    evil = outside / "evil.py"
    evil.write_text(f"open({str(outside / 'imported')!r}, 'w').close()\ndef f():\n    pass\n")
    parameters = tiny_cv_parameters(outside)
    parameters["overrides"]["model"] = f"{evil}:f"
    submitted = {
        "allowed": guarded_stack.submit(CV_DEPLOYMENT, tiny_cv_parameters(allowed)),
        "outside": guarded_stack.submit(CV_DEPLOYMENT, parameters),
    }
    finished = {name: guarded_stack.wait(run.id) for name, run in submitted.items()}
    return {**finished, "evil": evil, "marker": outside / "imported"}


def test_auth_string_keeps_strangers_out_and_lets_the_worker_in(guarded_stack, guarded_runs):
    api = guarded_stack.api_url
    assert httpx.get(f"{api}/health").status_code == 200
    assert httpx.post(f"{api}/flow_runs/filter", json={}).status_code == 401
    wrong = httpx.post(f"{api}/flow_runs/filter", json={}, auth=("foldflow", "wrong"))
    assert wrong.status_code == 401
    right = httpx.post(f"{api}/flow_runs/filter", json={}, auth=tuple(AUTH_STRING.split(":", 1)))
    assert right.status_code == 200
    # Prefect's own client without the auth string is refused too.
    with (
        pytest.raises(httpx.HTTPStatusError) as refused,
        guarded_stack.client(authenticated=False) as client,
    ):
        client.read_deployment_by_name(CV_DEPLOYMENT)
    assert refused.value.response.status_code == 401
    # `prefect deploy` and the worker got the auth string from the stack's environment.
    flow_run = guarded_runs["allowed"]
    assert flow_run.state.type == StateType.COMPLETED, flow_run.state.message


def test_a_model_outside_the_allowed_folders_is_refused_before_it_is_imported(guarded_runs):
    """A deployment run whose parameters name a model file outside the folders the server
    allows (the project folder) fails with one line; the file never runs (issue 27)."""
    flow_run, evil = guarded_runs["outside"], guarded_runs["evil"]
    assert flow_run.state.type == StateType.FAILED
    message = flow_run.state.message
    assert f"{evil} is outside the folders this server allows models from ({REPO})" in message
    assert len(message.splitlines()) == 1
    assert not guarded_runs["marker"].exists()


STRANGER = "foldflow-stranger"


def stranger() -> str:
    """Another local Unix user (created once if absent: the tests run as root)."""
    if subprocess.run(["id", STRANGER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", STRANGER], check=True)
    return STRANGER


def as_stranger(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", stranger(), "--", *command],
        capture_output=True, text=True, check=False, cwd="/",
    )  # fmt: skip


def test_foldflow_server_runs_the_whole_stack_and_ctrl_c_stops_it(tmp_path):
    """The one command (`foldflow server`) as a user runs it, then Ctrl-C (SIGINT). It makes
    an auth string only its user can read; another local user's create_flow_run gets 401."""
    port = free_port()
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PREFECT_") or key == "PREFECT_HOME"
    }
    environment.update({"PREFECT_HOME": str(tmp_path / "home"), "TF_CPP_MIN_LOG_LEVEL": "2"})
    foldflow = Path(sys.executable).with_name("foldflow")
    command = [str(foldflow)] if foldflow.exists() else [sys.executable, "-m", "flows.cli"]
    command += ["server", "--port", str(port), "--log-dir", str(tmp_path / "logs")]
    output = tmp_path / "stdout.txt"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            command, cwd=REPO, env=environment, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    children: set[int] = set()
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while "Ctrl-C stops" not in output.read_text():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.25)
        children = {child.pid for child in psutil.Process(process.pid).children(recursive=True)}
        text = output.read_text()
        assert (
            "foldflow-cv/cv-nightly  pool=foldflow-process  schedule=0 2 * * * Europe/London"
            in text
        )
        assert f"Prefect UI: http://127.0.0.1:{port}" in text
        ui = httpx.get(f"http://127.0.0.1:{port}/v2/", headers={"Accept": "text/html"})
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        assert len(children) >= 2  # the server and the worker (and what they started)

        auth_file = tmp_path / "home" / "foldflow-server-auth"
        assert f'PREFECT_API_AUTH_STRING="$(cat {auth_file})"' in text
        assert auth_file.stat().st_mode & 0o777 == 0o600 and auth_file.stat().st_uid == 0
        api = f"http://127.0.0.1:{port}/api"
        auth = tuple(auth_file.read_text().strip().split(":", 1))
        found = httpx.post(f"{api}/deployments/filter", json={}, auth=auth)
        deployment_id = next(d["id"] for d in found.json() if d["name"] == "cv-nightly")
        evil = {"parameters": {"overrides": {"model": "/tmp/evil.py:f"}}}
        refused = as_stranger(
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
            "-H", "Content-Type: application/json", "--data", json.dumps(evil),
            f"{api}/deployments/{deployment_id}/create_flow_run",
        )  # fmt: skip
        assert refused.stdout == "401", refused
        assert as_stranger("id", "-u").stdout.strip() != "0"

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert "stopped the worker and the server" in output.read_text()
        deadline = time.monotonic() + 5  # foldflow's watchdog may take a moment to follow it
        while [pid for pid in children if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # the stack's own clean-up
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in children:  # only if the stack failed to stop what it started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
