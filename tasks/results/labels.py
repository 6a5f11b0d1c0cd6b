"""What a flow run is called and tagged in the Prefect UI, from its config alone.

Runs list pages show a run's name and tags only, so both say what the run does:
`grid-pima-indians-diabetes-4x3-epochs-optimizer` tagged `foldflow`, `grid`, the dataset and
the engine. Pure functions: the flows call them when a run starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tasks.config import BUILTIN_MODEL, CVConfig, GridSearchConfig, SearchConfig
from tasks.limits import count_combinations

MAX_NAME = 100  # also a safe run-folder name (tasks.config.safe_name)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+|\.{2,}|-{2,}")


def dataset_name(config: CVConfig | GridSearchConfig) -> str:
    """The inline spec's name, else the spec file's stem (no file is read to name a run)."""
    run = config.run
    return run.dataset.name if run.dataset else Path(run.dataset_spec).stem


def _model_word(reference: str) -> list[str]:
    """A user's function by its name (`create_model`); foldflow's MLP says nothing."""
    return [] if reference == BUILTIN_MODEL else [reference.rpartition(":")[2]]


def _param_word(key: str, value: Any) -> str:
    if key == "epochs":
        return f"e{value}"
    if key == "batch_size":
        return f"b{value}"
    return "x".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _varying_keys(grid: dict[str, list[Any]]) -> list[str]:
    return [key.removeprefix("model__") for key, values in grid.items() if len(values) > 1]


def run_title(kind: str, config: CVConfig | GridSearchConfig) -> str:
    """`cv-pima-indians-diabetes-10folds-adam-glorot_uniform-e150-b10` or
    `grid-pima-indians-diabetes-54x3-optimizer-init-epochs-batch_size`; the user's
    `run_name` when there is one. Letters, digits, '.', '_' and '-' only."""
    if config.run.run_name:
        return config.run.run_name
    words = [kind, *_model_word(config.model), dataset_name(config)]
    if isinstance(config, SearchConfig):
        words += [config.strategy, f"{config.n_candidates}x{config.run.n_splits}"]
    elif isinstance(config, GridSearchConfig):
        combinations = count_combinations(config.grid.param_grid)
        words += [f"{combinations}x{config.run.n_splits}", *_varying_keys(config.grid.param_grid)]
    else:
        words += [f"{config.run.n_splits}folds"]
        words += [_param_word(key, value) for key, value in config.params.items()]
    return safe_title("-".join(words))


def safe_title(text: str) -> str:
    """`text` as a safe file name: other characters become '-', at most MAX_NAME long."""
    return _UNSAFE.sub("-", _UNSAFE.sub("-", text)).strip("-.")[:MAX_NAME].rstrip("-.") or "run"


def run_tags(kind: str, config: CVConfig | GridSearchConfig) -> list[str]:
    """`foldflow`, the flow's kind (`cv` or `grid`), the dataset and the engine."""
    return ["foldflow", kind, dataset_name(config), f"engine:{config.run.engine}"]
