"""Task runners users can pick: threads (default), processes, or Dask.

`dask` without an address starts a LocalCluster of single-threaded worker processes on this
machine; with `dask_address` the fits go to an existing scheduler, whose workers must have the
project installed and reach the same Prefect API; they need none of the flow's files: data and
model code travel with each task run (see docs/scale-out.md, "Scale out on Dask").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows.runtime.lifecycle import leave_ctrl_c_to_foldflow
from tasks.config import Runner

# TensorFlow reads these when its runtime starts (the first op), so they must be in the
# worker's environment before then: a LocalCluster's nanny sets them before the worker
# process starts; `dask worker ... --preload flows.runtime.runners` sets them at worker start.
TF_THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def tensorflow_threads(cores: int) -> dict[str, str]:
    """Environment that sizes TensorFlow's thread pools to the cores one worker has."""
    cores = max(1, cores)
    return {"TF_NUM_INTRAOP_THREADS": str(cores), "TF_NUM_INTEROP_THREADS": str(cores)}


def share_api_with_child_processes() -> str | None:
    """Point spawned workers at this process's API server.

    Without PREFECT_API_URL every spawned worker would start its own temporary server on the
    same SQLite file (slow, and "database is locked"); so start the ephemeral server here once
    and hand its URL to the children through the environment.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    configured = PREFECT_API_URL.value()
    if configured:
        os.environ["PREFECT_API_URL"] = configured
        return configured

    server = SubprocessASGIServer()  # the same singleton Prefect's ephemeral client uses
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    return server.api_url


def local_cluster_kwargs(workers: int) -> dict:
    """A LocalCluster of `workers` processes, one Dask thread each, TF sized to its share."""
    environment = tensorflow_threads(usable_cores() // workers)
    environment.update(
        {name: os.environ[name] for name in TF_THREAD_VARIABLES if name in os.environ}
    )
    return {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "env": environment,
    }


def task_runner_for(runner: Runner, workers: int, dask_address: str | None = None) -> TaskRunner:
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if runner == "processes":
        share_api_with_child_processes()
        return ProcessPoolTaskRunner(max_workers=workers, initializer=leave_ctrl_c_to_foldflow)
    from prefect_dask import DaskTaskRunner

    if dask_address:
        # Remote workers get PREFECT_API_URL from whoever started them, never from us.
        return DaskTaskRunner(address=dask_address)
    share_api_with_child_processes()
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(workers))


@contextmanager
def running_task_runner(
    runner: Runner, workers: int, dask_address: str | None = None
) -> Iterator[TaskRunner]:
    """A started task runner; PREFECT_API_URL exported for its workers is restored after."""
    saved = os.environ.get("PREFECT_API_URL")
    try:
        with task_runner_for(runner, workers, dask_address) as started:
            if runner == "dask" and dask_address:
                warn_about_workers_api(started.client)
            yield started
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved


def warn_about_workers_api(client) -> list[str]:
    """Warn when the cluster's workers report fits to another Prefect API than this flow.

    A worker without PREFECT_API_URL starts its own temporary server, so its task runs never
    reach the flow's API (the scores still come back through Dask). Returns the warnings.
    """
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_logger, get_run_logger
    from prefect.settings import PREFECT_API_URL

    ours = PREFECT_API_URL.value()
    # os.getenv, not os.environ.get: a bound method would ship this process's environ along.
    theirs = client.run(os.getenv, "PREFECT_API_URL")
    if ours is None:
        problems = [
            "this flow uses Prefect's embedded API, which workers on a separate Dask cluster "
            "cannot share: start a Prefect server and set PREFECT_API_URL for the flow and "
            "every worker"
        ]
    else:
        problems = [
            f"Dask worker {worker} has PREFECT_API_URL={url!r}, this flow {ours!r}: its "
            "task runs go elsewhere unless both name the same server"
            for worker, url in sorted(theirs.items())
            if url != ours
        ]
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = get_logger("foldflow.runners")
    for problem in problems:
        logger.warning(problem)
    return problems


def dask_setup(worker) -> None:
    """`dask worker ADDRESS --nthreads N --preload flows.runtime.runners`: TF sized to N threads.

    Variables already set in the worker's environment win.
    """
    for name, value in tensorflow_threads(worker.state.nthreads).items():
        os.environ.setdefault(name, value)


@contextmanager
def embedded_run_settings() -> Iterator[None]:
    """Prefect settings for flow runs in this process on the embedded API.

    Flow-run heartbeats let a long-lived server mark runs whose process died; the embedded
    server dies with this process (and the next run marks dead local runs Crashed), while the
    heartbeat thread sleeps in 1 s steps, so joining it adds up to 1 s to every run's end.
    With a configured server (PREFECT_API_URL) nothing changes.
    """
    from prefect.settings import get_current_settings, temporary_settings

    if get_current_settings().api.url:
        yield
        return
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield
