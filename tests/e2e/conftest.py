"""Real Prefect servers and workers on 127.0.0.1, started by fixtures and stopped by PID."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from flows.stack import (
    deploy_all,
    ensure_work_pool,
    stack_environment,
    start_server,
    start_worker,
    stop,
    wait_for_health,
)

SHARED_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "pima-indians-diabetes.csv"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Stack:
    environment: dict[str, str]
    api_url: str
    ui_url: str
    auth_string: str | None
    logs: Path

    @contextmanager
    def client(self, authenticated: bool = True):
        updates = {PREFECT_API_URL: self.api_url}
        if self.auth_string and authenticated:
            updates[PREFECT_API_AUTH_STRING] = self.auth_string
        with temporary_settings(updates=updates):
            with get_client(sync_client=True) as client:
                yield client


@contextmanager
def running_stack(tmp: Path, auth_string: str | None = None) -> Iterator[Stack]:
    """prefect server + process work pool + deployments + worker, all stopped on exit."""
    port = free_port()
    environment = stack_environment("127.0.0.1", port, auth_string)
    environment.update(
        {
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    )
    server = worker = None
    try:
        server = start_server(environment, log_path=tmp / "server.log")
        wait_for_health(environment["PREFECT_API_URL"], process=server)
        ensure_work_pool(environment)
        deploy_all(environment)
        worker = start_worker(environment, log_path=tmp / "worker.log")
        yield Stack(
            environment=environment,
            api_url=environment["PREFECT_API_URL"],
            ui_url=f"http://127.0.0.1:{port}",
            auth_string=auth_string,
            logs=tmp,
        )
    finally:
        stop(worker)
        stop(server)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def tiny_run_settings(tmp: Path) -> dict:
    return {
        "source": str(SHARED_CSV),
        "cache_dir": str(tmp / "cache"),
        "output_dir": str(tmp / "runs"),
        "n_splits": 3,
    }


def tiny_cv_parameters(tmp: Path) -> dict:
    return {"config": {"model": {"epochs": 1, "batch_size": 64}, "run": tiny_run_settings(tmp)}}


def tiny_grid_parameters(tmp: Path) -> dict:
    grid = {"model__optimizer": ["rmsprop", "adam"], "epochs": [1, 2], "batch_size": [64]}
    return {"config": {"grid": {"param_grid": grid}, "run": tiny_run_settings(tmp), "refit": False}}
