"""TensorFlow loads only where training happens: aggregation, planning, fold planning, task-run
naming and the search strategies import without it (a results or planning step, or a CLI that
only plans, does not pay TensorFlow's start-up). So do the flows: `prefect deploy` imports each
to read its parameters, and a Dask scheduler unpickles their tasks, neither to train."""

import os
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
    # What the flows import: the engines, Keras and scikeras load inside the functions that
    # train or build a model (the compiled-program cache enabled first: tasks.train.xla_cache).
    "tasks.data.preprocess",
    "tasks.model.factory",
    "tasks.train.dispatch",
    "tasks.train.refit",
    "flows.stages",
    "flows.evaluation",
    "flows.cv",
    "flows.grid_search",
    "flows.search",
    "flows.cache_command",
    "flows.progress",
    "flows.runtime.runners",
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


def printed_by(script: str, tmp_path) -> list[str]:
    """What `script` prints in a fresh interpreter, its compiled-program cache in tmp_path."""
    environment = {**os.environ, "FOLDFLOW_XLA_CACHE": str(tmp_path / "xla")}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


# A flow's first step, run as the flows run it: is TensorFlow loaded, is the compiled-program
# cache of this very process on?
AT_RUN_START = """
import sys
from flows.stages import fail_with_one_message
from tasks.train import xla_cache

def first_step():
    return "tensorflow" in sys.modules, xla_cache._state.get("private") is not None

print(*fail_with_one_message(first_step)())
"""


def test_a_flow_run_loads_tensorflow_as_it_starts_with_the_compiled_program_cache_on(tmp_path):
    """The flows import without TensorFlow, so their runs load it before their first step,
    the compiled-program cache enabled (tasks.train.xla_cache: before the process's first
    TensorFlow op, which a run's model check or fit would otherwise be)."""
    assert printed_by(AT_RUN_START, tmp_path) == ["True", "True"]


# A model built in a process that imported the training layer (as the flows, a benchmark or
# a worker do) and nothing else: is the compiled-program cache on when the function runs?
AT_FIRST_BUILD = """
import sys
import tasks.train.dispatch
from tasks.model.factory import build_model
from tasks.train import xla_cache

def model_function():
    return xla_cache._state.get("private") is not None

print("tensorflow" in sys.modules, build_model(model_function, {}, {}, seed=7))
"""


def test_a_model_build_enables_the_compiled_program_cache_before_tensorflow_runs(tmp_path):
    """Importing tasks.train.dispatch enabled the cache, TensorFlow with it; now it loads
    neither, and a build (perhaps the process's first TensorFlow op: the model's checks)
    enables the cache first (tasks.model.factory.before_building)."""
    assert printed_by(AT_FIRST_BUILD, tmp_path) == ["False", "True"]


# What the fit workers' fork server imports before it forks any worker.
AT_FORK_SERVER_START = """
import sys
import tasks.train.fit_worker_preload
print(*(name in sys.modules for name in ("tensorflow", "tasks.train.reference")))
"""


def test_the_fit_workers_fork_server_loads_tensorflow_and_the_reference_engine(tmp_path):
    """The other side: every fit worker forked from the server starts with them loaded. Before:
    the preload imported tasks.train.dispatch, which no longer loads them, so each worker
    imported TensorFlow itself, in its first fit: 5 s each, and its ~300 MB counted against
    the fit's --max-memory (a sleeping fit was stopped for memory, not for its timeout)."""
    assert printed_by(AT_FORK_SERVER_START, tmp_path) == ["True", "True"]
