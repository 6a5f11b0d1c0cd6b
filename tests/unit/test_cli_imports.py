"""`foldflow` imports only what a command needs: help and the server command load neither
TensorFlow nor Prefect (the server is another process), so they answer at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def imported_modules(*arguments: str) -> set[str]:
    """Top-level packages `python -X importtime -m foldflow.cli ARGUMENTS` imports."""
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "foldflow.cli", *arguments],
        capture_output=True, text=True, env=environment, cwd=REPO, timeout=120, check=True,
    )  # fmt: skip
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in completed.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.mark.parametrize(
    "arguments", [("--help",), ("server", "--help"), ("cv", "--help"), ("grid", "--help")]
)
def test_help_imports_neither_tensorflow_nor_prefect(arguments):
    modules = imported_modules(*arguments)
    assert "flows" in modules  # the probe saw foldflow's own imports
    assert not modules & {"tensorflow", "keras", "prefect", "sklearn"}


def stderr_of(code: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, env=environment, cwd=REPO, timeout=120, check=True,
    )  # fmt: skip
    return completed.stderr


def test_a_flow_command_loads_tensorflow_without_its_start_up_chatter():
    """TensorFlow's C++ logging prints "oneDNN custom operations are on" twice on import,
    each under absl's "before InitializeLog" warning, whatever TF_CPP_MIN_LOG_LEVEL says."""
    errors = stderr_of(
        "import os\n"
        "os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'  # as `foldflow cv` sets it\n"
        "from flows.cli import _flow_function\n"
        "_flow_function('cv')\n"
        "import tensorflow\n"
        "os.write(2, b'flow imported\\n')\n"
    )
    assert errors.splitlines() == ["flow imported"]


def test_other_lines_printed_while_tensorflow_loads_are_kept_in_order():
    errors = stderr_of(
        "import os, sys\n"
        "os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
        "from tasks.native_stderr import tensorflow_start_up_lines_held_back\n"
        "with tensorflow_start_up_lines_held_back():\n"
        "    os.write(2, b'a real problem\\n')\n"
        "    import tensorflow\n"
        "    print('from Python', file=sys.stderr)\n"
        "    os.write(2, b'no newline at the end')\n"
        "os.write(2, b'\\nafter\\n')\n"
    )
    assert errors.splitlines() == [
        "a real problem",
        "from Python",
        "no newline at the end",
        "after",
    ]
