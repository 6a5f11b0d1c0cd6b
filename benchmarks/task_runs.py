"""Thousands of task runs: a 2,000-fit grid on the reference engine (one task run per fit)
against Prefect's embedded API (SQLite) and against a `prefect server` on PostgreSQL.

    python -m benchmarks.task_runs [--fits 2000] [--databases sqlite postgres] [--workers 2]

Each database gets a fresh home (a new prefect.db, or a new PostgreSQL cluster with fsync on,
as a real one) and the flow runs in a child process. Reported per database: wall time of the
flow, train_fold task runs created and completed, task runs per second, failed fits and task
runs, ERROR/Traceback lines in the server's and the flow's logs, and the database's size after.
Results go to benchmarks/results/<timestamp>-task-runs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "pima-indians-diabetes.csv"
RESULT_PREFIX = "TASK-RUNS-RESULT "
N_SPLITS = 2


def tiny_grid(fits: int) -> dict[str, list]:
    """fits / 2 folds combinations: two optimizers x batch sizes 400, 401, ... (1 epoch each,
    one step: the 384 training rows fit in a batch), so the fits cost little beside the
    orchestration this measures."""
    combinations = fits // N_SPLITS
    if combinations % 2:
        raise SystemExit("--fits must be a multiple of 4")
    return {
        "model__optimizer": ["adam", "rmsprop"],
        "epochs": [1],
        "batch_size": list(range(400, 400 + combinations // 2)),
    }


def without_training() -> None:
    """Every fit returns at once with a fixed score: the flow, its 2,000 task runs (with the
    dataset shipped to each), cache, progress and aggregation stay as they are; only Keras is
    left out, to measure what the API and the runner cost on their own."""
    import tasks.train.dispatch
    from tasks.data.dataset import load_arrays
    from tasks.records import FitResult

    def instant_fits(dataset, folds, jobs, run_seed, source):
        load_arrays(dataset)  # as a real fit: the shipped arrays checked and decoded
        sizes = {fold.index: (len(fold.train), len(fold.test)) for fold in folds}
        scores = {"accuracy": 0.5, "log_loss": 0.69, "roc_auc": 0.5, "f1": 0.0}
        return [
            FitResult(
                combination=job.combination,
                params=job.params,
                fold=job.fold,
                accuracy=0.5,
                loss=0.69,
                scores=scores,
                n_train=sizes[job.fold][0],
                n_test=sizes[job.fold][1],
                fit_seconds=0.0,
                seed=run_seed,
                engine="reference",
            )  # fmt: skip
            for job in jobs
        ]

    tasks.train.dispatch.run_fit_jobs = instant_fits


def run_child(arguments: argparse.Namespace) -> None:
    """In the child: run the grid flow on whatever API the environment names; print counts."""
    if arguments.no_training:
        without_training()
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.grid_search import grid_search_flow
    from tasks.config import GridSearchConfig, GridSpec, RunSettings

    folder = Path(arguments.folder)
    config = GridSearchConfig(
        grid=GridSpec.from_mapping(tiny_grid(arguments.fits), n_splits=N_SPLITS),
        run=RunSettings(
            source=str(arguments.data),
            cache_dir=str(folder / "cache"),
            output_dir=str(folder / "runs"),
            n_splits=N_SPLITS,
            engine="reference",
            fresh=True,
            workers=arguments.workers,
            warn_above_fits=10 * arguments.fits,
        ),  # fmt: skip
        refit=False,
    )
    with get_client(sync_client=True) as client:
        client.hello()  # the embedded API starts (and migrates a new prefect.db) before timing
    started = time.perf_counter()
    state = grid_search_flow(config, return_state=True)
    wall = time.perf_counter() - started
    summary = state.result(raise_on_failure=False)
    flow_run_id = state.state_details.flow_run_id
    counts: dict[str, int] = {}
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                limit=200,
                offset=offset,
            )
            for task_run in page:
                if task_run.name.startswith("train_fold"):
                    name = task_run.state.name if task_run.state else "none"
                    counts[name] = counts.get(name, 0) + 1
            if len(page) < 200:
                break
            offset += 200
    result = {
        "flow_state": state.name,
        "wall_seconds": round(wall, 1),
        "n_fits": getattr(summary, "n_fits", None),
        "failed_fits": getattr(summary, "n_failed_fits", None),
        "train_fold_task_runs": counts,
        "training_seconds": round(getattr(summary, "fit_seconds", 0.0), 1),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def error_lines(text: str) -> int:
    return len(re.findall(r"^.*(ERROR|Traceback|database is locked).*$", text, re.MULTILINE))


def measure(database: str, arguments: argparse.Namespace, folder: Path) -> dict:
    """One database: fresh home, the flow in a child process, counts and sizes after."""
    from contextlib import ExitStack

    from flows.runtime.stack import (
        stack_environment,
        start_server,
        stop,
        wait_for_health,
        with_database,
    )

    environment = {
        **os.environ,
        "PREFECT_HOME": str(folder / "prefect-home"),
        "PYTHONPATH": str(PROJECT_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # A fresh prefect.db is migrated first: on a busy machine that outlasts the 20 s default.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    environment.pop("PREFECT_API_URL", None)
    server_log = folder / "server.log"
    with ExitStack() as stack:
        postgres = None
        if database == "postgres":
            from tests.e2e.postgres import free_port, running_postgres

            postgres = stack.enter_context(running_postgres(durable=True))
            environment = with_database(
                stack_environment("127.0.0.1", free_port(), None, base=environment), postgres.url
            )
            server = start_server(environment, log_path=server_log)
            stack.callback(stop, server)
            wait_for_health(environment["PREFECT_API_URL"], process=server)
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.task_runs", "--child", "--folder", str(folder),
             "--fits", str(arguments.fits), "--workers", str(arguments.workers),
             "--data", str(arguments.data), *(["--no-training"] if arguments.no_training else [])],
            cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, check=False,
        )  # fmt: skip
        (folder / "flow.log").write_text(child.stdout + child.stderr)
        lines = [line for line in child.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if not lines:
            raise SystemExit(f"{database}: the flow process failed:\n{child.stderr[-4000:]}")
        result = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
        if postgres is not None:
            result["database_bytes"] = postgres.size_bytes()
        else:
            home = folder / "prefect-home"
            result["database_bytes"] = sum(p.stat().st_size for p in home.glob("prefect.db*"))
    completed = result["train_fold_task_runs"].get("Completed", 0)
    result.update(
        database=database,
        task_runs_per_second=round(completed / result["wall_seconds"], 2),
        flow_log_error_lines=error_lines(child.stdout + child.stderr),
        server_log_error_lines=error_lines(server_log.read_text(errors="replace"))
        if server_log.exists()
        else None,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument(
        "--no-training",
        action="store_true",
        help="fits return at once (no Keras): the orchestration's own cost at this many task runs",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.child:
        run_child(arguments)
        return
    results = []
    for database in arguments.databases:
        with tempfile.TemporaryDirectory(prefix=f"task-runs-{database}-") as folder:
            result = measure(database, arguments, Path(folder))
        print(json.dumps(result), flush=True)
        results.append(result)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    kind = "orchestration" if arguments.no_training else "task-runs"
    out = PROJECT_ROOT / "benchmarks" / "results" / f"{stamp}-{kind}.json"
    out.parent.mkdir(exist_ok=True)
    machine = {"cpus": os.cpu_count(), "load_average": os.getloadavg()}
    payload = {
        "fits": arguments.fits,
        "workers": arguments.workers,
        "training": not arguments.no_training,
        "machine": machine,
    }
    out.write_text(json.dumps({**payload, "results": results}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
