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
