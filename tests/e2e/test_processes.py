"""`foldflow cv` and `foldflow server` as users run them, then signalled or killed: no child of
theirs (the embedded Prefect API, pool workers, the stack's server and worker) outlives them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import PIMA_CSV
from tests.e2e.conftest import REPO, RUN_TIMEOUT, free_port

pytestmark = pytest.mark.e2e

# Fits that cannot finish while the test waits: the run is always stopped mid-training.
# --verbose: Prefect's INFO lines (task-run names) tell when training has started.
ENDLESS_CV = ["cv", "--data", str(PIMA_CSV), "--folds", "2", "--epochs", "100000", "--fresh"]
ENDLESS_CV += ["--verbose"]
CHILDREN_GONE_WITHIN = 5  # seconds: the bound


class Foldflow:
    """One `python -m flows.cli ...` in its own session, as a terminal would start it."""

    def __init__(self, arguments: list[str], folder: Path, home: Path):
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")
        }
        environment.update(
            {"PREFECT_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
        )
        self.stdout, self.stderr = folder / "stdout.txt", folder / "stderr.txt"
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flows.cli", *arguments, "--output-dir", str(folder)]
                if arguments[0] != "server"
                else [sys.executable, "-m", "flows.cli", *arguments],
                cwd=REPO, env=environment, stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip
        self.descendants: list[psutil.Process] = []

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def wait_for(self, condition, what: str, timeout: float = RUN_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"foldflow exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{self.output()}"
            time.sleep(0.25)

    def children(self) -> list[psutil.Process]:
        """Every descendant now (remembered for the clean-up)."""
        found = psutil.Process(self.process.pid).children(recursive=True)
        self.descendants += [child for child in found if child not in self.descendants]
        return found

    def command_lines(self) -> list[str]:
        lines = []
        for child in self.children():
            try:
                lines.append(" ".join(child.cmdline()))
            except psutil.Error:
                pass
        return lines

    def clean_up(self) -> None:
        """Kill by pid whatever is left, the test having failed or not."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        for process in self.descendants:
            try:
                if process.is_running():
                    process.kill()
            except psutil.Error:
                pass


def still_running(processes: list[psutil.Process], timeout: float) -> list[str]:
    """Wait up to `timeout` s for the processes to exit; describes those that did not."""
    deadline = time.monotonic() + timeout
    while True:
        running = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    running.append(f"{process.pid} {' '.join(process.cmdline()[:4])}")
            except psutil.Error:
                pass
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.05)


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory) -> Path:
    """One Prefect home for these runs: the SQLite database is created once."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture
def foldflow(tmp_path, prefect_home) -> Iterator:
    started: list[Foldflow] = []

    def start(*arguments: str) -> Foldflow:
        started.append(Foldflow(list(arguments), tmp_path, prefect_home))
        return started[-1]

    yield start
    for run in started:
        run.clean_up()


def training(run: Foldflow) -> bool:
    """The embedded API is up and the fits have been handed to the task runner."""
    return "build_model_factory" in run.output() and any(
        "uvicorn" in line for line in run.command_lines()
    )


def wait_until_training(run: Foldflow, runner: str) -> None:
    if runner == "threads":
        run.wait_for(lambda: training(run), "training")
    else:  # and the pool's worker processes are there
        run.wait_for(
            lambda: training(run) and any("spawn_main" in line for line in run.command_lines()),
            "process-pool workers",
        )


@pytest.mark.parametrize(
    ("how", "runner"),
    [
        ("SIGTERM", "threads"),
        ("SIGINT to the process group", "threads"),
    ],
)
def test_a_signalled_cv_run_stops_at_once_with_one_line_and_leaves_no_child(foldflow, how, runner):
    run = foldflow(*ENDLESS_CV, "--runner", runner)
    wait_until_training(run, runner)
    children = run.children()
    if how == "SIGTERM":
        stop_signal = signal.SIGTERM
        os.kill(run.process.pid, stop_signal)
    else:  # what Ctrl-C in a terminal does: every process of the job gets SIGINT
        stop_signal = signal.SIGINT
        os.killpg(run.process.pid, stop_signal)
    assert run.process.wait(timeout=60) == 128 + stop_signal
    assert still_running(children, CHILDREN_GONE_WITHIN) == []
    errors = run.stderr.read_text()
    assert errors.splitlines()[-1] == f"foldflow: stopped by {stop_signal.name}"
    assert "Traceback" not in errors and "Connect call failed" not in errors


@pytest.mark.parametrize("runner", ["threads", "processes"])
def test_a_killed_cv_run_leaves_no_child_after_5_s(foldflow, runner):
    run = foldflow(*ENDLESS_CV, "--runner", runner)
    wait_until_training(run, runner)
    children = run.children()
    os.kill(run.process.pid, signal.SIGKILL)
    assert still_running(children, CHILDREN_GONE_WITHIN) == []


def test_a_killed_foldflow_server_leaves_no_server_or_worker_listening(foldflow, tmp_path):
    port = free_port()
    run = foldflow("server", "--port", str(port), "--log-dir", str(tmp_path / "logs"))
    run.wait_for(lambda: "Ctrl-C stops" in run.output(), "stack")
    children = run.children()
    lines = run.command_lines()
    assert any("server start" in line for line in lines), lines
    assert any("worker start" in line for line in lines), lines
    os.kill(run.process.pid, signal.SIGKILL)
    assert still_running(children, CHILDREN_GONE_WITHIN) == []
    with pytest.raises(ConnectionRefusedError):  # nothing listens on the stack's port
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
