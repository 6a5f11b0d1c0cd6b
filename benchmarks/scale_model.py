"""Scale on paper: wall time of a 10,000-fit search against the number of Dask workers.

    python -m benchmarks.scale_model [--task-runs benchmarks/results/...-orchestration.json]

Measures on this machine, one worker (one thread runner slot) each time:
  * fits/s of the tutorial grid (162 fits, fast engine) and of a 4x larger grid (648 fits);
  * the Dask scheduler's cost per task (LocalCluster, 5,000 no-op tasks, one worker thread);
and reads from benchmarks/task_runs.py's latest result the per-task-run cost of the Prefect API
(the 2,000-task-run flow without training, `--no-training`: its wall per task run).

The model (bottleneck form: the workers train in parallel, the API server and the Dask
scheduler each handle their task runs one at a time):

    wall(W) = start + max(fits / (W * fits_per_second),
                          task_runs * api_seconds_per_task_run,
                          task_runs * scheduler_seconds_per_task)

with task_runs = fits on the reference engine (one task run per fit) and, on the fast engine,
the groups plan_groups makes (at least one per worker, each a few hundred fits at most).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "pima-indians-diabetes.csv"
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
TUTORIAL_GRID = {
    "model__optimizer": ["rmsprop", "adam"],
    "model__init": ["glorot_uniform", "normal", "uniform"],
    "epochs": [50, 100, 150],
    "batch_size": [5, 10, 20],
}
LARGER_GRID = {**TUTORIAL_GRID, "model__learning_rate": [0.0005, 0.001, 0.002, 0.005]}
WORKERS = [1, 2, 5, 10, 20, 50, 100]
SEARCH_FITS = 10_000
START_SECONDS = 10.0  # flow process start + API + cluster connect, paid once (docs/scale-out.md)
FAST_GROUP_CAP = 300  # fits per fast-engine task run at most, for the task-run count


def grid_fits_per_second(grid: dict, data: Path, folder: Path) -> dict:
    """One worker: the grid flow's fits / (wall of the flow), fast engine, fresh."""
    from flows.grid_search import grid_search_flow
    from tasks.config import GridSearchConfig, GridSpec, RunSettings

    config = GridSearchConfig(
        grid=GridSpec.from_mapping(grid, n_splits=3),
        run=RunSettings(
            source=str(data),
            cache_dir=str(folder / "cache"),
            output_dir=str(folder / "runs"),
            n_splits=3,
            workers=1,
            fresh=True,
        ),  # fmt: skip
        refit=False,
    )
    started = time.perf_counter()
    summary = grid_search_flow(config)
    wall = time.perf_counter() - started
    return {
        "fits": summary.n_fits,
        "wall_seconds": round(wall, 2),
        "fits_per_second": round(summary.n_fits / wall, 2),
        "engines": summary.engines,
    }


def dask_seconds_per_task(tasks: int = 5000) -> float:
    """Scheduler round trip per task: map no-op tasks onto one single-threaded worker."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster:
        with Client(cluster) as client:
            client.gather(client.map(int, range(100)))  # warm up
            started = time.perf_counter()
            client.gather(client.map(int, range(100, 100 + tasks)))
            return (time.perf_counter() - started) / tasks


def latest_task_runs(path: Path | None) -> dict:
    if path is None:
        found = sorted(RESULTS.glob("*-orchestration.json"))
        if not found:
            raise SystemExit(
                "run `python -m benchmarks.task_runs --no-training` first (or pass --task-runs)"
            )
        path = found[-1]
    path = path.resolve()
    shown = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
    return {"file": str(shown), **json.loads(path.read_text())}


def per_task_run_costs(task_runs: dict) -> dict:
    """From the 2,000-task-run flow without training: its wall per task run, per database
    (every client-side and API-side cost of one task run, the flow's own steps spread in)."""
    costs = {}
    for result in task_runs["results"]:
        runs = result["train_fold_task_runs"].get("Completed", 0)
        costs[result["database"]] = {
            "api_seconds_per_task_run": round(result["wall_seconds"] / runs, 4)
        }
    return costs


def wall_seconds(fits: int, workers: int, fits_per_second: float, task_runs: int, api: float,
                 scheduler: float) -> float:  # fmt: skip
    return START_SECONDS + max(
        fits / (workers * fits_per_second), task_runs * api, task_runs * scheduler
    )


def table(measured: dict) -> list[str]:
    fast = measured["larger_grid"]["fits_per_second"]
    reference = 1 / measured["reference_seconds_per_fit_tutorial"]
    api = measured["api_seconds_per_task_run"]
    scheduler = measured["dask_seconds_per_task"]
    lines = [
        "| workers | fast engine: task runs | fast engine: wall | reference engine (1 task run "
        "per fit): wall | bound by |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for workers in WORKERS:
        fast_runs = max(workers, math.ceil(SEARCH_FITS / FAST_GROUP_CAP))
        fast_wall = wall_seconds(SEARCH_FITS, workers, fast, fast_runs, api, scheduler)
        ref_wall = wall_seconds(SEARCH_FITS, workers, reference, SEARCH_FITS, api, scheduler)
        compute = SEARCH_FITS / (workers * reference)
        bound = "training" if compute >= SEARCH_FITS * max(api, scheduler) else "Prefect API"
        lines.append(
            f"| {workers} | {fast_runs} | {human(fast_wall)} | {human(ref_wall)} | {bound} |"
        )
    return lines


def human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--task-runs", type=Path, help="a benchmarks/task_runs.py result")
    parser.add_argument(
        "--reference-seconds-per-fit",
        type=float,
        default=8.2,
        help="the reference engine's seconds per tutorial-grid fit on one worker (default: "
        "benchmarks/results/20261125T112444-scale1.0: 162 fits in 664.4 s on 2 workers)",
    )
    arguments = parser.parse_args(argv)
    task_runs = latest_task_runs(arguments.task_runs)
    costs = per_task_run_costs(task_runs)
    with tempfile.TemporaryDirectory(prefix="scale-model-") as folder:
        tutorial = grid_fits_per_second(TUTORIAL_GRID, arguments.data, Path(folder) / "t")
        larger = grid_fits_per_second(LARGER_GRID, arguments.data, Path(folder) / "l")
    scheduler = dask_seconds_per_task()
    server = costs.get("postgres") or next(iter(costs.values()))
    measured = {
        "tutorial_grid": tutorial,
        "larger_grid": larger,
        "dask_seconds_per_task": round(scheduler, 5),
        "task_runs_source": task_runs["file"],
        "per_database": costs,
        "api_seconds_per_task_run": server["api_seconds_per_task_run"],
        "reference_seconds_per_fit_tutorial": arguments.reference_seconds_per_fit,
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
    }
    lines = table(measured)
    print(json.dumps(measured, indent=2))
    print("\n".join(lines))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stamp}-scale-model.json"
    out.write_text(json.dumps({**measured, "table": lines}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
