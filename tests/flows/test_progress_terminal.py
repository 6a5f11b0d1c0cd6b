"""What a user sees in a terminal (issue 29): `foldflow grid` in a real pseudo-terminal shows one
live bar and the top combinations, with no Prefect INFO line; in a pipe, plain progress lines and
no bar. Real `foldflow` processes, tiny epochs."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import PIMA_CSV

FOLDFLOW = Path(sys.executable).parent / "foldflow"
TINY_GRID = "epochs: [1]\nbatch_size: [64, 128]\n"
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def _environment(tmp_path: Path, cache: Path) -> dict[str, str]:
    from prefect.settings import get_current_settings

    return {
        **os.environ,
        # This file's own cache: fits other tests cached would show as "from the cache".
        "FOLDFLOW_CACHE": str(cache),
        # The test process's temporary API (tests/conftest.py): no server to start per run.
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",  # Prefect's one-off telemetry notice is shown on terminals only
        "COLUMNS": "160",
    }


def run_in_terminal(command: list[str], env: dict[str, str], timeout: float = 300) -> bytes:
    """Everything `command` writes to a pseudo-terminal (160 columns) it has as stdin, stdout
    and stderr, until it exits."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(
        command, stdin=terminal, stdout=terminal, stderr=terminal, env=env, close_fds=True
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed: the process has exited
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
        assert process.wait(timeout=30) == 0, seen.decode(errors="replace")[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    return seen


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "tiny.yaml"
    path.write_text(TINY_GRID)
    return path


def test_grid_in_a_terminal_shows_one_live_bar_and_no_prefect_info_lines(
    tmp_path, grid_file, cache
):
    command = [str(FOLDFLOW), "grid", "--data", str(PIMA_CSV), "--grid", str(grid_file)]
    command += ["--folds", "2", "--output-dir", str(tmp_path / "runs"), "--run-name", "bar"]
    seen = ANSI.sub(b"", run_in_terminal(command, _environment(tmp_path, cache))).decode()
    # The bar redraws in place (carriage returns), counts the fits, then says the best so far.
    assert "\rfits 0/4 |" in seen
    assert re.search(r"\rfits 4/4 \|█+\| 100%, +[\d.]+ fits/s, best accuracy 0\.\d{4} "
                     r"\(batch_size=(64|128), epochs=1\)", seen)  # fmt: skip
    assert "Task run" not in seen and "| INFO" not in seen
    lines = seen.replace("\r\n", "\n").split("\n")
    assert lines[-5].split() == ["rank", "accuracy", "batch_size", "epochs"]
    assert lines[-2] == f"Results in {tmp_path / 'runs' / 'bar'}"


def test_cv_in_a_pipe_prints_plain_progress_lines_and_no_prefect_info_lines(tmp_path, cache):
    command = [str(FOLDFLOW), "cv", "--data", str(PIMA_CSV), "--folds", "2", "--epochs", "1"]
    command += ["--batch-size", "128", "--output-dir", str(tmp_path / "runs")]
    quiet = subprocess.run(
        command, env=_environment(tmp_path, cache), capture_output=True, text=True, timeout=300
    )
    assert quiet.returncode == 0, quiet.stderr
    # (its two fits are the grid's above, found in the fit cache)
    assert re.search(r"^fits 2/2 \(100%\), .*best accuracy 0\.\d{4} ", quiet.stderr, re.M)
    assert "\r" not in quiet.stderr and "|█" not in quiet.stderr
    assert "Task run" not in quiet.stderr and "| INFO" not in quiet.stderr
    assert re.fullmatch(r"Accuracy: 0\.\d{6} \(0\.\d{6}\)", quiet.stdout.splitlines()[-2])
