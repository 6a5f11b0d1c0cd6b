"""TensorFlow loads only where training happens: aggregation, planning, fold planning, task-run
naming and the search strategies import without it (a results or planning step, or a CLI that
only plans, does not pay TensorFlow's start-up)."""

import subprocess
import sys

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

# Each module imported in turn in one fresh interpreter: the first that loads TensorFlow or
# Keras is named (until then neither was loaded, so it is that module's doing).
FIRST_HEAVY = """
import importlib, sys
for module in sys.argv[1:]:
    importlib.import_module(module)
    loaded = [name for name in ("tensorflow", "keras") if name in sys.modules]
    if loaded:
        print(module, *loaded)
        break
"""


def test_importing_these_modules_loads_neither_tensorflow_nor_keras():
    first = subprocess.run(
        [sys.executable, "-c", FIRST_HEAVY, *TENSORFLOW_FREE],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert first == [], f"importing {first[0]} loaded {first[1:]}"
