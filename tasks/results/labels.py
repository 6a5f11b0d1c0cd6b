"""What a flow run is called and tagged in the Prefect UI, from its config alone.

Runs list pages show a run's name and tags only, so both say what the run does:
`grid-pima-indians-diabetes-4x3-epochs-optimizer` tagged `foldflow`, `grid`, the dataset and
the engine; every value in a name comes with its key (`folds_10-epochs_150`). A search's name
reads its space file (small YAML) to count the candidates it will have. The flows call these
when a run starts; its score is added as a tag when it ends (tasks.results.overview).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tasks.config import BUILTIN_MODEL, CVConfig, GridSearchConfig, SearchConfig
from tasks.limits import count_combinations
from tasks.numbers import param_text
from tasks.search.spaces import configured_space

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
    """`epochs_150`, `learning_rate_0.001757`, `layers_12x8`: always the key with its value,
    floats rounded as everywhere (tasks.numbers)."""
    return f"{key.removeprefix('model__')}_{param_text(value)}"


def _candidates(config: SearchConfig) -> int:
    """The candidates a search will have: `n_candidates`, or fewer when a space of choices
    only is smaller (random and halving then try each once); the space as configured."""
    if config.strategy == "tpe":
        return config.n_candidates
    try:
        size = configured_space(config).size()
    except Exception:  # the flow refuses a bad space with its own message
        return config.n_candidates
    return int(min(config.n_candidates, size))


def _varying_keys(grid: dict[str, list[Any]]) -> list[str]:
    return [key.removeprefix("model__") for key, values in grid.items() if len(values) > 1]


def run_title(kind: str, config: CVConfig | GridSearchConfig) -> str:
    """`cv-pima-indians-diabetes-folds_10-optimizer_adam-epochs_150-batch_size_10`,
    `grid-pima-indians-diabetes-54x3-optimizer-init-epochs-batch_size` (the keys it varies) or
    `search-pima-indians-diabetes-halving-candidates_8-folds_3-epochs_1-9-factor_3`; the
    user's `run_name` when there is one. Letters, digits, '.', '_' and '-' only."""
    if config.run.run_name:
        return config.run.run_name
    words = [kind, *_model_word(config.model), dataset_name(config)]
    if isinstance(config, SearchConfig):
        words += [config.strategy, f"candidates_{_candidates(config)}"]
        words += [f"folds_{config.run.n_splits}", *_repeats_word(config)]
        if config.strategy == "halving":
            words += [f"epochs_{config.min_epochs}-{config.max_epochs}", f"factor_{config.factor}"]
    elif isinstance(config, GridSearchConfig):
        combinations = count_combinations(config.grid.param_grid)
        words += [f"{combinations}x{config.run.n_splits}", *_repeats_word(config)]
        words += _varying_keys(config.grid.param_grid)
    else:
        words += [f"folds_{config.run.n_splits}", *_repeats_word(config)]
        words += [_param_word(key, value) for key, value in config.params.items()]
    return safe_title("-".join(words))


def _repeats_word(config: CVConfig | GridSearchConfig | SearchConfig) -> list[str]:
    """`repeats_2` for repeated k-fold; nothing for one draw of the folds."""
    return [f"repeats_{config.run.n_repeats}"] if config.run.n_repeats > 1 else []


def safe_title(text: str) -> str:
    """`text` as a safe file name: other characters become '-', at most MAX_NAME long."""
    return _UNSAFE.sub("-", _UNSAFE.sub("-", text)).strip("-.")[:MAX_NAME].rstrip("-.") or "run"


def run_tags(kind: str, config: CVConfig | GridSearchConfig) -> list[str]:
    """`foldflow`, the flow's kind (`cv` or `grid`), the dataset and the engine."""
    return ["foldflow", kind, dataset_name(config), f"engine:{config.run.engine}"]
