"""TensorFlow loads only where training happens: aggregation, planning, fold planning, task-run
naming and the search strategies import without it (a results or planning step, or a CLI that
only plans, does not pay TensorFlow's start-up)."""

import subprocess
import sys

import pytest

from tasks.config import PROJECT_ROOT

TENSORFLOW_FREE = [
    "tasks.results.aggregate",
    "tasks.train.fast.planning",
    "tasks.train.naming",
    "tasks.data.folds",
    "tasks.data.schema",  # foldflow predict refuses mismatched columns before TensorFlow
    "flows.predict",
    "tasks.search.strategies",
    "tasks.search.spaces",
    "tasks.search.nested",
]

LOADED_HEAVY = """
import importlib, sys
importlib.import_module(sys.argv[1])
print(" ".join(name for name in ("tensorflow", "keras") if name in sys.modules))
"""


@pytest.mark.parametrize("module", TENSORFLOW_FREE)
def test_importing_the_module_loads_neither_tensorflow_nor_keras(module):
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED_HEAVY, module],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert loaded == [], f"importing {module} loaded {loaded}"
