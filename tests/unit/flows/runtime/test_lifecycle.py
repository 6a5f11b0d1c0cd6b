"""Children die with their owner however it ends; a signal stops the owner at once, in one line.

Real processes throughout: small Python owners that start the watchdog and sleeping children.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from flows.runtime.lifecycle import (
    OWNER_VARIABLE,
    owned_processes,
    run_until_signalled,
    stop_owned_processes,
)

REPO = Path(__file__).resolve().parents[4]
SLEEPER = "import time; time.sleep(600)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
# An owner as `foldflow` is one: the watchdog first, then a child that starts a grandchild.
OWNER = f"""
import subprocess, sys, time
from flows.runtime.lifecycle import run_until_signalled, start_watchdog
start_watchdog()
child = subprocess.Popen([sys.executable, "-c", '''
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", {STUBBORN!r}])
print(grandchild.pid, flush=True)
time.sleep(600)
'''], stdout=subprocess.PIPE, text=True)
print(child.pid, child.stdout.readline().strip(), flush=True)
if sys.argv[1] == "exit":
    sys.stdin.readline()
    sys.exit(0)
if sys.argv[1] == "until-signalled":
    run_until_signalled(lambda: time.sleep(600))
time.sleep(600)
"""


def alive(pids: list[int]) -> list[int]:
    """The pids still running (a zombie has exited: only its parent's wait is missing)."""
    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def wait_until_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


def kill_all(pids: list[int]) -> None:
    for pid in alive(pids):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def owner() -> Iterator[Callable[..., tuple[subprocess.Popen, list[int]]]]:
    """Start an owner; yields (process, [its child, grandchild]); kills all of them after."""
    started: list[tuple[subprocess.Popen, list[int]]] = []

    def start(mode: str = "plain") -> tuple[subprocess.Popen, list[int]]:
        process = subprocess.Popen(
            [sys.executable, "-c", OWNER, mode],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        descendants = [int(pid) for pid in process.stdout.readline().split()]
        started.append((process, descendants))
        return process, descendants

    yield start
    for process, descendants in started:
        kill_all([process.pid, *descendants])
        process.wait(timeout=10)


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_children_and_grandchildren_are_gone_5_s_after_their_owner_dies(owner, stop_signal):
    process, descendants = owner()
    assert len(alive(descendants)) == 2
    os.kill(process.pid, stop_signal)
    assert process.wait(timeout=10) == -stop_signal
    # The grandchild ignores SIGTERM: the watchdog has to follow up with SIGKILL.
    assert wait_until_gone(descendants, timeout=5) == []


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_stops_the_work_at_once_with_one_line_and_its_children(owner, stop_signal):
    process, descendants = owner("until-signalled")
    time.sleep(0.5)  # let it reach run_until_signalled's wait
    os.kill(process.pid, stop_signal)
    assert process.wait(timeout=10) == 128 + stop_signal
    assert process.stderr.read() == f"foldflow: stopped by {stop_signal.name}\n"
    assert wait_until_gone(descendants, timeout=5) == []


def test_children_left_running_at_a_normal_exit_are_gone_5_s_after_it(owner):
    process, descendants = owner("exit")
    everything = [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    assert set(descendants) < set(everything)  # and the watchdog
    process.stdin.write("exit now\n")
    process.stdin.flush()
    assert process.wait(timeout=30) == 0
    assert wait_until_gone(everything, timeout=5) == []


def test_owned_processes_are_those_whose_environment_carries_the_token():
    token = f"test-{os.getpid()}-{time.monotonic_ns()}"
    ours = subprocess.Popen(
        [sys.executable, "-c", SLEEPER], env={**os.environ, OWNER_VARIABLE: token}
    )
    other = subprocess.Popen(
        [sys.executable, "-c", SLEEPER], env={**os.environ, OWNER_VARIABLE: token + "-other"}
    )
    try:
        time.sleep(0.2)  # the environment is readable once the child has exec'd
        assert [process.pid for process in owned_processes(token)] == [ours.pid]
        assert stop_owned_processes(token) == 1
        assert ours.wait(timeout=5) == -signal.SIGTERM
        assert other.poll() is None
    finally:
        kill_all([ours.pid, other.pid])
        ours.wait()
        other.wait()


def test_run_until_signalled_returns_the_works_status_and_raises_its_errors():
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    assert run_until_signalled(lambda: 3) == 3
    with pytest.raises(SystemExit):
        run_until_signalled(lambda: sys.exit(2))
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
