"""Task runners users can pick: threads (default), processes, or an existing Dask engine."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from tasks.config import Runner


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


def task_runner_for(runner: Runner, workers: int, dask_address: str | None = None) -> TaskRunner:
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if runner == "processes":
        share_api_with_child_processes()
        return ProcessPoolTaskRunner(max_workers=workers)
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    share_api_with_child_processes()
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True}
    )


@contextmanager
def running_task_runner(
    runner: Runner, workers: int, dask_address: str | None = None
) -> Iterator[TaskRunner]:
    """A started task runner; PREFECT_API_URL exported for its workers is restored after."""
    saved = os.environ.get("PREFECT_API_URL")
    try:
        with task_runner_for(runner, workers, dask_address) as started:
            yield started
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
