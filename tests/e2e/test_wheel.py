"""A wheel built from the repository, installed (not editable) into a fresh venv, used from a
temporary folder: `foldflow cv`, `foldflow grid` and `import foldflow` work with their
defaults, write only under that folder, and a `tasks.py` there breaks nothing.

The venv gets only the wheel (`--no-deps --no-index`); its dependencies come from the running
interpreter's site-packages through a `.pth` line, which adds that folder to sys.path without
running its own `.pth` files (so the editable checkout stays out of sight). Installing
TensorFlow and Prefect afresh would take minutes and the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tasks.config import PROJECT_ROOT

pytestmark = pytest.mark.e2e
SKIPPED_WHEN_COPYING = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", "cache", "runs", ".*_cache"
)
USER_TASKS_PY = 'raise SystemExit("the folder\'s own tasks.py was imported")\n'
TINY_GRID = "optimizer: [adam]\nepochs: [1]\nbatch_size: [64]\n"
API_SCRIPT = """
import numpy as np
from scikeras.wrappers import KerasClassifier
from foldflow import GridSearchCV
from foldflow._data.models.tutorial import create_model

data = np.loadtxt({csv!r}, delimiter=",")
search = GridSearchCV(KerasClassifier(model=create_model, verbose=0, epochs=1, batch_size=64),
                      {{"model__optimizer": ["adam"]}}, cv=2)
search.fit(data[:, :8], data[:, 8])
print("best", search.best_score_, sorted(search.cv_results_)[:3])
"""


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding foldflow's wheel: its bin/ folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(PROJECT_ROOT, source, ignore=SKIPPED_WHEN_COPYING)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp / "dist")],
        check=True,
        cwd=tmp,
    )
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    (site / "site-packages" / "_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    wheel = next((tmp / "dist").glob("foldflow-*.whl"))
    # --ignore-installed: the dependencies' folder holds the editable checkout's foldflow;
    # pip must neither take it for this install nor touch it.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
        + ["-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        check=True,
    )
    return venv / "bin"


def run_in(folder: Path, command: list[str], prefect_home: Path) -> str:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "FOLDFLOW_", "PYTHONPATH"))
    }
    environment |= {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    done = subprocess.run(
        command, cwd=folder, env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_non_editable_install_works_from_any_folder_and_writes_only_there(
    installed, tmp_path, pima_csv
):
    venv = installed.parent
    before = files_under(venv)
    work = tmp_path / "work"
    work.mkdir()
    (work / "tasks.py").write_text(USER_TASKS_PY)
    (work / "tiny.yaml").write_text(TINY_GRID)
    prefect_home = tmp_path / "prefect"

    cv = run_in(
        work,
        [str(installed / "foldflow"), "cv", "--data", str(pima_csv), "--folds", "2"]
        + ["--epochs", "1", "--batch-size", "64", "--run-name", "cv"],
        prefect_home,
    )
    assert "Accuracy:" in cv and f"Results in {work / 'runs' / 'cv'}" in cv
    grid = run_in(
        work,
        [str(installed / "foldflow"), "grid", "--data", str(pima_csv), "--folds", "2"]
        + ["--grid", "tiny.yaml", "--run-name", "grid"],
        prefect_home,
    )
    # The baseline's line first (issue 25), then the top combinations (issue 29).
    assert grid.startswith("Baseline (majority class): ") and "\nrank  accuracy  " in grid
    assert (work / "runs" / "grid" / "best_model.keras").exists()
    api = run_in(
        work, [str(installed / "python"), "-c", API_SCRIPT.format(csv=str(pima_csv))], prefect_home
    )
    assert api.startswith("best 0.") and "mean_fit_time" in api

    assert files_under(venv) == before  # nothing written into the installation
    assert sorted(path.name for path in work.iterdir()) == ["runs", "tasks.py", "tiny.yaml"]
    # The cache in the user's cache folder (tests/conftest.py: this session's), not here.
    assert (Path(os.environ["XDG_CACHE_HOME"]) / "foldflow" / "in-memory").is_dir()
    assert len(list((work / "runs").iterdir())) == 3
