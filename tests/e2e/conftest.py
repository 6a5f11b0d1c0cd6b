"""Real Prefect servers and workers on 127.0.0.1, started by fixtures and stopped by PID.

One server + work pool + deployments (the repo's own prefect.yaml) + process worker serves all
of tests/e2e (package scope, stopped as soon as the last test that uses it is done); the CV and
grid deployments run once, concurrently, and every test that needs a finished run reads those.
A second, guarded stack (auth string) serves the auth tests. The tests run grouped by the stack
they use, so that each stack is up only while its group runs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from flows.runtime.stack import (
    deploy_all,
    ensure_work_pool,
    stack_environment,
    start_server,
    start_worker,
    stop,
    wait_for_health,
)
from tests.conftest import PIMA_CSV

E2E = Path(__file__).resolve().parent
REPO = E2E.parents[1]
RUN_TIMEOUT = 240  # seconds for one tiny flow run, TensorFlow import included
AUTH_STRING = "foldflow:s3cret-for-tests"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CV_DEPLOYMENT = "foldflow-cv/cv-nightly"
GRID_DEPLOYMENT = "foldflow-grid-search/grid-weekly"


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
    finished: dict[str, FlowRun] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)  # stopped in this order

    def shut_down(self) -> None:
        """Stop the worker, then the server (each with what it started); again, a no-op."""
        for process in self.processes:
            stop(process)

    @contextmanager
    def settings(self, authenticated: bool = True):
        """Prefect client settings of this stack (with its auth string unless told not to)."""
        if self.auth_string and authenticated:
            settings = temporary_settings(
                updates={PREFECT_API_URL: self.api_url, PREFECT_API_AUTH_STRING: self.auth_string}
            )
        else:
            settings = temporary_settings(
                updates={PREFECT_API_URL: self.api_url}, restore_defaults={PREFECT_API_AUTH_STRING}
            )
        with settings:
            yield

    @contextmanager
    def client(self, authenticated: bool = True):
        with self.settings(authenticated), get_client(sync_client=True) as client:
            yield client

    def submit(self, deployment: str, parameters: dict) -> FlowRun:
        """Create a flow run of a deployment; the worker picks it up. `_sync=True`: once the
        browser fixture's event loop runs in this thread, Prefect would return a coroutine."""
        with self.settings():
            return run_deployment(name=deployment, parameters=parameters, timeout=0, _sync=True)

    def wait(self, flow_run_id: UUID, timeout: float = RUN_TIMEOUT) -> FlowRun:
        """Poll the API until the run is in a final state; say what the logs say if not."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                flow_run = client.read_flow_run(flow_run_id)
                if flow_run.state and flow_run.state.is_final():
                    return flow_run
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"flow run {flow_run.name} still {flow_run.state_name} after "
                        f"{timeout:.0f} s\n{self.log_tail()}"
                    )
                time.sleep(0.5)

    def fail_if_scheduler_is_broken(self) -> None:
        """Prefect 3.8.8's scheduler failed on every insert with SQLAlchemy 2.1 (measured);
        3.9.1 does not: this keeps the error from coming back unnoticed."""
        server_log = (self.logs / "server.log").read_text(errors="replace")
        if "Can't evaluate bulk DML statement" in server_log:
            pytest.fail(
                "the Prefect scheduler cannot insert runs (seen with prefect 3.8.8 and "
                "SQLAlchemy 2.1)\n" + self.log_tail()
            )

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for name in ("server.log", "worker.log"):
            path = self.logs / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name} (last {lines} lines) ---\n" + "\n".join(text))
        return "\n".join(parts)


@contextmanager
def running_stack(tmp: Path, auth_string: str | None = None) -> Iterator[Stack]:
    """prefect server + process work pool + `prefect deploy --all` + worker, stopped on exit.

    The same functions as `foldflow server`, with a temporary PREFECT_HOME, a free port and
    faster polling, so schedules and submitted runs are picked up within seconds.
    """
    port = free_port()
    environment = stack_environment("127.0.0.1", port, auth_string)
    environment.update(
        {
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
            "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    )
    server = worker = None
    try:
        server = start_server(environment, log_path=tmp / "server.log")
        wait_for_health(environment["PREFECT_API_URL"], process=server)
        ensure_work_pool(environment)
        deploy_all(environment, REPO)
        worker = start_worker(environment, log_path=tmp / "worker.log", project=REPO)
        yield Stack(
            environment=environment,
            api_url=environment["PREFECT_API_URL"],
            ui_url=f"http://127.0.0.1:{port}",
            auth_string=auth_string,
            logs=tmp,
            processes=[worker, server],
        )
    finally:
        stop(worker)
        stop(server)


# Package fixtures that hold processes, by name: how to stop each one before the package ends,
# once the last test that uses it is done (stop_after_the_last_user).
EARLY_STOPS: dict[str, Callable[[], None]] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The e2e tests run grouped by what they share, in file order within a group: those that
    need neither stack, then the stack's, then the guarded stack's, and last those on the
    session's temporary Prefect API (test_load: its flows run in this process, where the
    browser's event loop must not be open, and the API then lives for them alone). Before,
    both stacks lived from test_deployments to the last e2e file, polling through four files
    that never use them. A file may so run in stretches (test_deployments in three); each of
    its module fixtures serves one group. Tests of other folders keep their places."""
    here = [index for index, item in enumerate(items) if item.path.is_relative_to(E2E)]
    grouped = sorted((items[index] for index in here), key=_group)
    for index, item in zip(here, grouped, strict=True):
        items[index] = item


def _group(item: pytest.Item) -> int:
    uses = set(getattr(item, "fixturenames", ()))
    if "prefect_api" in uses:
        return 3
    if "guarded_stack" in uses:
        return 2
    return 1 if "stack" in uses else 0


@pytest.fixture(autouse=True)
def stop_after_the_last_user(request) -> Iterator[None]:
    """After a test, stop the stacks and the browser that no later test uses: a stack's
    server and worker keep polling while they are up."""
    yield
    items = request.session.items
    if request.node not in items:
        return
    later = items[items.index(request.node) + 1 :]
    for name in [name for name in EARLY_STOPS if name in request.node.fixturenames]:
        if not any(name in getattr(item, "fixturenames", ()) for item in later):
            EARLY_STOPS.pop(name)()


@pytest.fixture(scope="package")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        EARLY_STOPS["stack"] = running.shut_down
        yield running


@pytest.fixture(scope="package")
def guarded_stack(tmp_path_factory) -> Iterator[Stack]:
    """A second stack whose server requires an auth string (the worker and deploy get it)."""
    with running_stack(tmp_path_factory.mktemp("guarded"), auth_string=AUTH_STRING) as running:
        EARLY_STOPS["guarded_stack"] = running.shut_down
        yield running


@pytest.fixture(scope="package")
def browser():
    """Headless Debian Chromium driven by Playwright (no browser download)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # Stopping Playwright closes Chromium, its driver and its event loop; again, a no-op.
        EARLY_STOPS["browser"] = playwright.stop
        yield browser
    finally:
        playwright.stop()


@pytest.fixture
def page(browser):
    """A fresh browser context per test; the UI's analytics host is blocked."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route("**/*amplitude.com/**", lambda route: route.abort())
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="package")
def finished_runs(stack, tmp_path_factory) -> dict[str, tuple[FlowRun, Path]]:
    """Both deployments triggered at once with tiny parameters, waited for together."""
    outputs = {
        CV_DEPLOYMENT: tmp_path_factory.mktemp("cv-run"),
        GRID_DEPLOYMENT: tmp_path_factory.mktemp("grid-run"),
    }
    submitted = {
        CV_DEPLOYMENT: stack.submit(CV_DEPLOYMENT, tiny_cv_parameters(outputs[CV_DEPLOYMENT])),
        GRID_DEPLOYMENT: stack.submit(
            GRID_DEPLOYMENT, tiny_grid_parameters(outputs[GRID_DEPLOYMENT])
        ),
    }
    return {name: (stack.wait(run.id), outputs[name]) for name, run in submitted.items()}


def table_rows(artifact) -> list[dict]:
    """A table artifact's rows (the API hands them back as JSON text)."""
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


def combination_rows(artifact) -> list[dict]:
    """A results table's rows without its last `baseline (...)` row (issue 25: the score of a
    model that learned nothing, beside the combinations')."""
    rows = table_rows(artifact)
    assert str(rows[-1]["combination"]).startswith("baseline"), rows[-1]
    return rows[:-1]


def tiny_run_settings(tmp: Path) -> dict:
    return {
        "source": str(PIMA_CSV),
        "cache_dir": str(tmp / "cache"),
        "output_dir": str(tmp / "runs"),
        "n_splits": 3,
    }


def tiny_cv_parameters(tmp: Path) -> dict:
    """Overrides merged over prefect.yaml's config: its optimizer and init stay."""
    overrides = {"params": {"epochs": 1, "batch_size": 64}, "run": tiny_run_settings(tmp)}
    return {"overrides": overrides}


def tiny_grid_parameters(tmp: Path) -> dict:
    """prefect.yaml's grid with three of its keys overridden: its two optimizers stay. Two
    epoch counts (prefixes of one training run) give the heatmap a second axis."""
    grid = {"model__init": ["glorot_uniform"], "epochs": [1, 2], "batch_size": [64]}
    overrides = {"grid": {"param_grid": grid}, "run": tiny_run_settings(tmp), "refit": False}
    return {"overrides": overrides}
