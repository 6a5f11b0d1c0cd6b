"""prefect.yaml deployed to a real server, run by a real process worker."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import httpx
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
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.e2e.conftest import running_stack, tiny_cv_parameters, tiny_grid_parameters

pytestmark = pytest.mark.e2e
PREFECT_YAML = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
FLOW_NAMES = {"cv-nightly": "foldflow-cv", "grid-weekly": "foldflow-grid-search"}


def trigger(stack, name: str, parameters: dict):
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        return run_deployment(name=name, parameters=parameters, timeout=300, poll_interval=1)


def artifact_keys(stack, flow_run_id) -> set[str]:
    with stack.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key for artifact in artifacts}


def test_schedules_are_registered_as_written_in_prefect_yaml(stack):
    with stack.client() as client:
        for written in PREFECT_YAML["deployments"]:
            deployment = client.read_deployment_by_name(
                f"{FLOW_NAMES[written['name']]}/{written['name']}"
            )
            registered = [
                (s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules
            ]
            expected = [(s["cron"], s["timezone"], s["active"]) for s in written["schedules"]]
            assert registered == expected
            assert deployment.work_pool_name == written["work_pool"]["name"]


def test_cv_deployment_runs_on_the_worker(stack, tmp_path):
    flow_run = trigger(stack, "foldflow-cv/cv-nightly", tiny_cv_parameters(tmp_path))
    assert flow_run.state.type == StateType.COMPLETED, flow_run.state.message
    assert {"cv-cv-results", "cv-summary", "cv-fold-scores"} <= artifact_keys(stack, flow_run.id)
    assert (tmp_path / "runs").exists()


def test_grid_deployment_runs_on_the_worker(stack, tmp_path):
    flow_run = trigger(stack, "foldflow-grid-search/grid-weekly", tiny_grid_parameters(tmp_path))
    assert flow_run.state.type == StateType.COMPLETED, flow_run.state.message
    keys = artifact_keys(stack, flow_run.id)
    assert {"grid-cv-results", "grid-summary", "grid-grid-heatmap", "fits-progress"} <= keys


def test_a_scheduled_run_fires_and_completes(stack, tmp_path):
    with stack.client() as client:
        deployment = client.read_deployment_by_name("foldflow-cv/cv-nightly")
        client.update_deployment(
            deployment.id,
            deployment=_update(parameters=tiny_cv_parameters(tmp_path)),
        )
        [created] = client.create_deployment_schedules(
            deployment.id, [(IntervalSchedule(interval=timedelta(seconds=5)), True)]
        )
        try:
            deadline = time.monotonic() + 240
            completed = []
            while time.monotonic() < deadline and not completed:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])
                    )
                )
                completed = [
                    run
                    for run in runs
                    if run.auto_scheduled and run.state and run.state.type == StateType.COMPLETED
                ]
                time.sleep(1)
        finally:
            client.delete_deployment_schedule(deployment.id, created.id)
    assert completed, "no scheduled run completed"


def _update(**fields):
    from prefect.client.schemas.actions import DeploymentUpdate

    return DeploymentUpdate(**fields)


def test_auth_string_keeps_strangers_out_and_lets_the_worker_in(tmp_path):
    with running_stack(tmp_path, auth_string="foldflow:s3cret") as guarded:
        anonymous = httpx.post(f"{guarded.api_url}/flow_runs/filter", json={})
        assert anonymous.status_code == 401
        assert httpx.get(f"{guarded.api_url}/health").status_code == 200
        with temporary_settings(updates={PREFECT_API_URL: guarded.api_url}):
            from prefect.settings import PREFECT_API_AUTH_STRING

            with temporary_settings(updates={PREFECT_API_AUTH_STRING: "foldflow:s3cret"}):
                flow_run = run_deployment(
                    name="foldflow-cv/cv-nightly",
                    parameters=tiny_cv_parameters(tmp_path),
                    timeout=300,
                    poll_interval=1,
                )
        assert flow_run.state.type == StateType.COMPLETED, flow_run.state.message
