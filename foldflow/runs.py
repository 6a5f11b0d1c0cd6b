"""The run a search or CV asks foldflow's flows for: the data stored as Parquet, the folds,
workers and seed as scikit-learn's arguments give them, and the flow run itself."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError
from sklearn import model_selection

from tasks.cache_home import cache_home, migrate_old_cache
from tasks.config import ExplicitSplit, RunSettings

if TYPE_CHECKING:
    from flows.progress import Display
from tasks.messages import validation_line

DEFAULT_SEED = 7


def n_workers(n_jobs: int | None) -> int:
    """scikit-learn's n_jobs as parallel task runs: None is 1, -1 every CPU."""
    if n_jobs is None:
        return 1
    cpus = os.cpu_count() or 1
    return max(1, n_jobs if n_jobs > 0 else cpus + 1 + n_jobs)


def explicit_splits(cv: Any, X: Any, y: Any, groups: Any = None) -> list[ExplicitSplit] | None:
    """A splitter's folds as explicit rows; None for an int (foldflow's stratified folds)."""
    folds = splitter_folds(cv, X, y, groups)
    if folds is None:
        return None
    return [ExplicitSplit(train=train.tolist(), test=test.tolist()) for train, test in folds]


def splitter_folds(cv: Any, X: Any, y: Any, groups: Any = None) -> list | None:
    """A splitter's (train, test) row arrays; None for an int (foldflow's stratified folds)."""
    if cv is None or isinstance(cv, int | np.integer):
        return None
    splitter = cv if hasattr(cv, "split") else model_selection.check_cv(cv)
    return list(splitter.split(X, y, groups))


# RunSettings' fields under the names scikit-learn's searches give them.
PARAMETER_NAMES = {"n_splits": "cv", "seed": "random_state", "workers": "n_jobs"}


def run_settings(
    X: Any,
    y: Any,
    task: str,
    cv: Any,
    seed: int,
    workers: int,
    engine: str,
    refit_metric: str,
    home: Path,
    groups: Any = None,
    train_scores: bool = False,
) -> RunSettings:
    """The data written to the cache as Parquet and described inline, and checked as the flow
    will check it (a ValueError naming X or y); folds, seed, engine. (Their modules import
    Prefect: here, once start_api_early has started the API, not when foldflow is imported.)"""
    from tasks.data.folds import store_splits
    from tasks.data.in_memory import check_in_memory_data, store_in_memory_data

    if moved := migrate_old_cache():  # an old data/cache/, once (tasks.cache_home)
        print(moved, file=sys.stderr)
    cache_dir = cache_home()
    spec, parquet = store_in_memory_data(X, y, task, cache_dir)  # type: ignore[arg-type]
    folds = splitter_folds(cv, X, y, groups)
    # The splitter's rows travel as a file (the flow run's parameters would outgrow Prefect's
    # 512 KB at some 20,000 rows); the flow reads them back and checks them.
    splits_file = None if folds is None else str(store_splits(folds, cache_dir))
    n_splits = len(folds) if folds is not None else int(5 if cv is None else cv)
    values = dict(
        seed=seed,
        n_splits=n_splits,
        splits_file=splits_file,
        engine=engine,  # type: ignore[arg-type]
        workers=workers,
        dataset=spec,
        source=str(parquet),
        cache_dir=str(cache_dir),
        output_dir=str(home / "runs"),
        refit_metric=refit_metric,
        train_scores=train_scores,
    )
    try:
        settings = RunSettings(**values)  # type: ignore[arg-type]
    except ValidationError as error:  # one line in scikit-learn's names: "cv must be at least 2"
        raise ValueError(validation_line(error.errors(), PARAMETER_NAMES)) from None
    check_in_memory_data(settings)  # before any flow run: errors name X, y and X's columns
    return settings


def start_api_early() -> None:
    """This process's embedded API started now (unless a server is configured), as `foldflow
    cv|grid` start theirs: it takes seconds to come up, meanwhile the data are stored and
    checked, Prefect and the flow imported; run_flow waits for it. Once started it serves this
    process's next searches too, even if this one's data are refused, and stops with it."""
    from flows.runtime.embedded_api import start_embedded_api

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    start_embedded_api()


def run_flow(
    flow: Any, *args: Any, verbose: int = 0, display: Display | None = None, **kwargs: Any
) -> Any:
    """The flow on the server in PREFECT_API_URL, else on this process's embedded API (started
    by start_api_early or the first call, as `foldflow cv|grid` start it: this process then
    never imports Prefect's server code).

    Quiet as scikit-learn's searches are by default: `verbose=0` shows no Prefect line (they
    stay in the run's log in the UI; warnings and errors still show), `verbose=1` a progress
    bar (tqdm's notebook bar in Jupyter), `verbose>=2` Prefect's INFO lines too. `display`
    hears the fits as they end (scikit-learn's callbacks: foldflow.callbacks)."""
    from flows.progress import (
        BarDisplay,
        RunProgress,
        expected_fits,
        notebook_display,
        prefect_console_at,
        strategy_of,
        watching,
    )
    from flows.runtime.embedded_api import start_embedded_api, use_embedded_api

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    config = args[0] if args else kwargs["config"]
    if display is None and verbose >= 1:
        display = notebook_display()
    progress = (
        None
        if display is None
        else RunProgress(display, expected_fits(config), strategy_of(config))
    )
    bar = display if isinstance(display, BarDisplay) else None
    quiet = nullcontext() if verbose >= 2 else prefect_console_at(logging.WARNING, bar)
    with quiet, watching(progress), use_embedded_api(start_embedded_api()):
        return flow(*args, **kwargs)


def quietly_imported(flow_getter: Callable[[], Any]) -> Any:
    """A flow imported, and TensorFlow loaded without its start-up lines on stderr (the flows
    import without it: flows.stages.load_tensorflow), as the command line imports it."""
    from flows.stages import load_tensorflow
    from tasks.native_stderr import tensorflow_start_up_lines_held_back

    with tensorflow_start_up_lines_held_back():
        flow = flow_getter()
    load_tensorflow()
    return flow


def run_seed(search_seed: Any, estimator_seed: int | None) -> int:
    """The run seed: the search's random_state, else the estimator's, else foldflow's 7."""
    for seed in (search_seed, estimator_seed):
        if isinstance(seed, int | np.integer):
            return int(seed)
    return DEFAULT_SEED
