"""Side-by-side benchmark: the tutorial's plain scikit-learn + scikeras scripts against foldflow's
CV and grid flows, on the same machine in one run. The grid runs the user's own function
(models/tutorial.py:create_model, the tutorial's bare grid keys) on both sides, and again on
foldflow's reference engine (one Keras fit per (combination, fold), the same per-fit seeds as
the fast engine) to compare the two engines fit by fit at full size; a Dropout model
(models/dropout.py, fast engine since Dropout is supported) is timed against GridSearchCV too.

    python -m benchmarks.run --data ../shared/data/pima-indians-diabetes.csv [--scale 0.1]

Each measurement runs in its own child process so peak RSS is its own; the table and the
ratios are printed and written to benchmarks/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import children
from benchmarks.startup import measure as measure_commands

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "pima-indians-diabetes.csv"
TUTORIAL_MODEL = PROJECT_ROOT / "models" / "tutorial.py"
DROPOUT_MODEL = PROJECT_ROOT / "models" / "dropout.py"
# The tutorial's grid as it writes it (bare keys): foldflow routes them to create_model;
# scikeras needs the `model__` prefix for the same arguments.
TUTORIAL_GRID = {
    "optimizer": ["rmsprop", "adam"],
    "init": ["glorot_uniform", "normal", "uniform"],
    "epochs": [50, 100, 150],
    "batch_size": [5, 10, 20],
}
DROPOUT_GRID = {
    "dropout": [0.0, 0.2],
    "learning_rate": [0.001, 0.01],
    "epochs": [50],
    "batch_size": [10],
}
TRAINING_KEYS = ("epochs", "batch_size")


def scaled_epochs(epochs: int, scale: float) -> int:
    return max(1, round(epochs * scale))


def scaled_grid(scale: float, grid: dict[str, list[Any]] = TUTORIAL_GRID) -> dict[str, list[Any]]:
    grid = dict(grid)
    grid["epochs"] = sorted({scaled_epochs(e, scale) for e in grid["epochs"]})
    return grid


def scikeras_grid(grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The same grid for scikeras, whose model-function arguments need `model__`."""
    return {(k if k in TRAINING_KEYS else f"model__{k}"): v for k, v in grid.items()}


def load_function(path: Path):
    """The user's function, imported from its file as a script would."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.create_model


def unprefixed(params: dict[str, Any]) -> dict[str, Any]:
    return {key.removeprefix("model__"): value for key, value in params.items()}


def _load(data: str):
    import numpy as np

    dataset = np.loadtxt(data, delimiter=",")
    return dataset[:, 0:8], dataset[:, 8]


def measure_reference_cv(data: str, scale: float) -> dict[str, Any]:
    import keras
    from scikeras.wrappers import KerasClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    features, labels = _load(data)
    keras.utils.set_random_seed(7)
    model = KerasClassifier(
        model=load_function(TUTORIAL_MODEL),
        model__optimizer="adam",
        epochs=scaled_epochs(150, scale),
        batch_size=10,
        verbose=0,
    )
    kfold = StratifiedKFold(n_splits=10, shuffle=True, random_state=7)
    started = time.perf_counter()
    results = cross_val_score(model, features, labels, cv=kfold)
    wall = time.perf_counter() - started
    return {
        "wall_seconds": wall,
        "fits": 10,
        "score": float(results.mean()),
        "std": float(results.std()),
    }


def measure_reference_grid(
    data: str, scale: float, model_file: Path = TUTORIAL_MODEL, grid=TUTORIAL_GRID
) -> dict[str, Any]:
    """GridSearchCV + scikeras over the user's own function (the same file foldflow runs)."""
    import keras
    from scikeras.wrappers import KerasClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    features, labels = _load(data)
    keras.utils.set_random_seed(7)
    model = KerasClassifier(model=load_function(model_file), verbose=0)
    # The tutorial passes cv=3; with scikeras 0.13 and scikit-learn >= 1.6 that is silently
    # plain KFold, so the same stratified folds as foldflow's are passed explicitly.
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=7)
    search = GridSearchCV(
        model, scikeras_grid(scaled_grid(scale, grid)), n_jobs=os.cpu_count(), cv=folds
    )
    started = time.perf_counter()
    result = search.fit(features, labels)
    wall = time.perf_counter() - started
    means = result.cv_results_["mean_test_score"]
    stds = result.cv_results_["std_test_score"]
    params = result.cv_results_["params"]
    return {
        "wall_seconds": wall,
        "fits": len(params) * 3,
        "score": float(result.best_score_),
        "best_params": unprefixed(result.best_params_),
        "combinations": [
            {"params": unprefixed(p), "mean": float(m), "std": float(s)}
            for p, m, s in zip(params, means, stds, strict=True)
        ],
    }


def _foldflow_run(
    data: str,
    flow: str,
    scale: float,
    workers: int,
    engine: str = "auto",
    model: str = f"{TUTORIAL_MODEL}:create_model",
    grid: dict[str, list[Any]] = TUTORIAL_GRID,
) -> dict[str, Any]:
    """One foldflow flow end to end, on a Prefect API already up in this process."""
    import tempfile

    from flows.cv import cv_flow
    from flows.grid_search import grid_search_flow
    from tasks.config import CVConfig, GridSearchConfig, GridSpec, RunSettings

    workdir = Path(tempfile.mkdtemp(prefix="foldflow-bench-"))
    run = {
        "source": data,
        "cache_dir": str(workdir / "cache"),
        "output_dir": str(workdir / "runs"),
        "workers": workers,
        "fresh": True,
        "engine": engine,
    }
    n_splits = 10 if flow == "cv" else 3
    started = time.perf_counter()
    if flow == "cv":
        params = {"optimizer": "adam", "epochs": scaled_epochs(150, scale), "batch_size": 10}
        state = cv_flow(
            CVConfig(model=model, params=params, run=RunSettings(**run, n_splits=n_splits)),
            return_state=True,
        )
    else:
        config = GridSearchConfig(
            model=model,
            grid=GridSpec.from_mapping(scaled_grid(scale, grid)),
            run=RunSettings(**run, n_splits=n_splits),
            refit=False,
        )
        state = grid_search_flow(config, return_state=True)
    wall = time.perf_counter() - started
    summary = state.result()
    import pandas as pd

    table = pd.read_parquet(Path(summary.output_dir) / "cv_results.parquet")
    training = _training_seconds(state.state_details.flow_run_id)
    return {
        "wall_seconds": wall,
        "training_seconds": training,
        "fits": summary.n_fits,
        "score": summary.best_score,
        "std": summary.best_std,
        "best_params": summary.best_params,
        "engines": summary.engines,
        "combinations": [
            {
                "params": json.loads(row["params"]),
                "mean": float(row["mean_test_score"]),
                "std": float(row["std_test_score"]),
                "folds": [float(row[f"split{k}_test_accuracy"]) for k in range(n_splits)],
                # early stopping: the epoch each combination's fits stopped at, on average
                "stopped_epoch": float(row["mean_stopped_epoch"])
                if "mean_stopped_epoch" in row
                else None,
            }
            for _, row in table.iterrows()
        ],
    }


def _training_seconds(flow_run_id) -> float:
    """Wall time during which at least one train_fold task run was running (union of spans)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )

    spans = sorted(
        (run.start_time.timestamp(), run.end_time.timestamp())
        for run in asyncio.run(read())
        if run.name.startswith("train_fold") and run.start_time and run.end_time
    )
    total, current_start, current_end = 0.0, None, None
    for start, end in spans:
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def measure_foldflow(data: str, scale: float, workers: int) -> dict[str, Any]:
    """Both flows in one process: the Prefect API and TensorFlow start once, as for a user."""
    started = time.perf_counter()
    import tensorflow  # noqa: F401
    from prefect.testing.utilities import prefect_test_harness  # noqa: F401

    import_seconds = time.perf_counter() - started
    from flows.cv import cv_flow  # noqa: F401  (first flow call starts the embedded API)
    from flows.runtime.runners import embedded_run_settings

    # The settings `foldflow cv|grid` run the flows with.
    with embedded_run_settings():
        api_started = time.perf_counter()
        _warm_up_api()
        api_seconds = time.perf_counter() - api_started
        return {
            "startup": {"import_seconds": import_seconds, "api_seconds": api_seconds},
            "cv": _foldflow_run(data, "cv", scale, workers),
            "grid": _foldflow_run(data, "grid", scale, workers),
            "dropout": _foldflow_run(
                data,
                "grid",
                scale,
                workers,
                model=f"{DROPOUT_MODEL}:create_model",
                grid=DROPOUT_GRID,
            ),
        }


def measure_reference_engine(data: str, scale: float, workers: int) -> dict[str, Any]:
    """The grid flow on foldflow's reference engine: one Keras fit per (combination, fold)
    with the same per-fit seeds as the fast engine, so the two can be compared fit by fit."""
    from flows.runtime.runners import embedded_run_settings

    with embedded_run_settings():
        _warm_up_api()
        return _foldflow_run(data, "grid", scale, workers, engine="reference")


def _warm_up_api() -> None:
    from prefect import flow

    @flow(name="foldflow-benchmark-warm-up")
    def warm_up() -> None:
        return None

    warm_up()


def measure_reference_dropout(data: str, scale: float) -> dict[str, Any]:
    return measure_reference_grid(data, scale, DROPOUT_MODEL, DROPOUT_GRID)


MEASUREMENTS = {
    "reference_cv": measure_reference_cv,
    "reference_grid": measure_reference_grid,
    "reference_dropout": measure_reference_dropout,
}


def run_child(name: str, data: str, scale: float, workers: int) -> dict[str, Any]:
    """Run one measurement in a fresh process; returns its result and peak RSS (MiB)."""
    return children.run_child(
        "benchmarks.run", "--child", name, "--data", data,
        "--scale", str(scale), "--workers", str(workers),
    )  # fmt: skip


def child_main(name: str, data: str, scale: float, workers: int) -> None:
    import resource

    if name == "foldflow":
        result = measure_foldflow(data, scale, workers)
    elif name == "reference_engine":
        result = measure_reference_engine(data, scale, workers)
    else:
        result = MEASUREMENTS[name](data, scale)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["peak_rss_mib"] = round(max(peak_kib, children_kib) / 1024, 1)
    print(json.dumps(result, default=str))


def _matched(reference: dict[str, Any], ours: dict[str, Any]) -> Iterator[tuple[dict, dict]]:
    """(reference, ours) records of each combination, matched by params."""
    ours_by_params = {json.dumps(c["params"], sort_keys=True): c for c in ours["combinations"]}
    for combination in reference["combinations"]:
        yield (
            combination,
            ours_by_params[json.dumps(combination["params"], sort_keys=True, default=str)],
        )


def compare(reference: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Best-score gap, and how many combinations' means agree within their fold std."""
    pairs = list(_matched(reference, ours))
    agreeing = sum(abs(a["mean"] - b["mean"]) <= max(a["std"], b["std"]) for a, b in pairs)
    return {
        "best_score_gap": abs(reference["score"] - ours["score"]),
        "means_within_std": f"{agreeing}/{len(pairs)}",
    }


def compare_engines(reference: dict[str, Any], fast: dict[str, Any]) -> dict[str, Any]:
    """`compare`, plus fit-by-fit agreement of the fast engine with the reference engine (same
    seeds)."""
    pairs = list(_matched(reference, fast))
    fold_gaps = [abs(x - y) for a, b in pairs for x, y in zip(a["folds"], b["folds"], strict=True)]
    return {
        **compare(reference, fast),
        "identical_fold_scores": f"{sum(gap == 0 for gap in fold_gaps)}/{len(fold_gaps)}",
        "max_fold_gap": max(fold_gaps),
        "max_mean_gap": max(abs(a["mean"] - b["mean"]) for a, b in pairs),
    }


def report(results: dict[str, Any], scale: float) -> str:
    ours = results["foldflow"]
    rows = [
        ("CV: scikit-learn + scikeras", results["reference_cv"], None),
        ("CV: foldflow flow", ours["cv"], results["reference_cv"]),
        ("Grid: GridSearchCV + scikeras", results["reference_grid"], None),
        ("Grid: foldflow flow", ours["grid"], results["reference_grid"]),
        ("Grid: foldflow, reference engine", results["reference_engine"], None),
        ("Dropout: GridSearchCV + scikeras", results["reference_dropout"], None),
        ("Dropout: foldflow", ours["dropout"], results["reference_dropout"]),
    ]
    lines = [
        f"scale={scale} (epochs x{scale}); machine: {os.cpu_count()} cores",
        f"{'run':32} {'wall s':>9} {'fits/s':>8} {'peak MiB':>9} {'score':>8} {'speed-up':>9}",
    ]
    for label, result, reference in rows:
        peak = result.get("peak_rss_mib", ours.get("peak_rss_mib"))
        speedup = f"{reference['wall_seconds'] / result['wall_seconds']:.1f}x" if reference else ""
        fits_per_second = result["fits"] / result["wall_seconds"]
        lines.append(
            f"{label:32} {result['wall_seconds']:9.1f} {fits_per_second:8.2f} {peak:9.0f} "
            f"{result['score']:8.4f} {speedup:>9}"
        )
    grid = ours["grid"]
    overhead = 1 - grid["training_seconds"] / grid["wall_seconds"]
    lines.append(
        f"foldflow process start (imports {ours['startup']['import_seconds']:.1f} s, "
        f"embedded Prefect API {ours['startup']['api_seconds']:.1f} s) is paid once, "
        "outside the flow timings above"
    )
    lines.append(f"Prefect overhead in the grid flow (wall - training): {overhead:.1%}")
    check = compare(results["reference_grid"], grid)
    lines.append(
        f"Grid: best score gap {check['best_score_gap']:.4f}; "
        f"per-combination means within fold std: {check['means_within_std']}"
    )
    lines.append(
        f"Grid best: foldflow {grid['best_params']} / reference "
        f"{results['reference_grid']['best_params']}"
    )
    dropout = compare(results["reference_dropout"], ours["dropout"])
    lines.append(
        f"Dropout grid (engines {ours['dropout']['engines']}): best score gap "
        f"{dropout['best_score_gap']:.4f}; means within fold std: {dropout['means_within_std']}"
    )
    if "commands" in results:
        commands = {name: min(walls) for name, walls in results["commands"].items()}
        lines.append(
            "Whole process, start to exit (the commands at full size, every fit retrained): "
            f"foldflow cv {commands['foldflow cv']:.1f} s, foldflow grid "
            f"{commands['foldflow grid']:.1f} s; the plain scripts' processes: CV "
            f"{results['reference_cv']['process_seconds']:.1f} s, GridSearchCV "
            f"{results['reference_grid']['process_seconds']:.1f} s"
        )
    engines = compare_engines(results["reference_engine"], grid)
    lines.append(
        "Grid, fast vs reference engine with the same per-fit seeds: identical fold scores "
        f"{engines['identical_fold_scores']}, largest fold gap {engines['max_fold_gap']:.4f}, "
        f"largest mean gap {engines['max_mean_gap']:.4f}, means within fold std "
        f"{engines['means_within_std']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--scale", type=float, default=1.0, help="epoch multiplier")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data = str(Path(args.data).resolve())
    if args.child:
        child_main(args.child, data, args.scale, args.workers)
        return 0
    results = {}
    for name in (
        "foldflow",
        "reference_cv",
        "reference_grid",
        "reference_engine",
        "reference_dropout",
    ):
        print(f"running {name} ...", flush=True)
        results[name] = run_child(name, data, args.scale, args.workers)
    print("running foldflow cv and grid as commands ...", flush=True)
    results["commands"] = measure_commands(data, repeat=1)
    text = report(results, args.scale)
    print(text)
    children.write_results(f"scale{args.scale}", results, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
