"""Prefect pull steps for foldflow's deployments."""

from __future__ import annotations

import os

from tasks.config import PROJECT_ROOT


def enter_project_directory() -> dict[str, str]:
    """Run a deployment from the checkout foldflow is installed from, wherever the worker is."""
    os.chdir(PROJECT_ROOT)
    return {"directory": str(PROJECT_ROOT)}
