"""Runs left RUNNING by a process that died, marked Crashed by the next run on the same host;
each run labelled with its process so the next one can tell."""

from __future__ import annotations

import os
import socket

import psutil
from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.runtime import flow_run
from prefect.states import Crashed

OWNER_PID = "foldflow.pid"
OWNER_HOST = "foldflow.host"


def claim_run_and_reap_dead_ones(tags: list[str]) -> list[str]:
    """Tag this flow run for the UI, label it with its process, and mark runs whose process
    died as Crashed.

    A flow killed with SIGKILL stays RUNNING in the API forever; the next run on the same
    host notices its process is gone and says so. The process is bookkeeping: it goes in
    the run's labels, not in the tags the runs list shows.
    """
    logger = get_run_logger()
    host = socket.gethostname()
    this_run = flow_run.get_id()
    reaped = []
    with get_client(sync_client=True) as client:
        running = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=200,
        )
        for other in running:
            pid, owner_host = other.labels.get(OWNER_PID), other.labels.get(OWNER_HOST)
            if str(other.id) == this_run or pid is None:
                continue
            if owner_host != host or psutil.pid_exists(int(pid)):
                continue
            logger.warning(
                "flow run %r (%s) was left RUNNING by process %s, which is gone: "
                "marking it Crashed. Its finished fits are reused from the result cache.",
                other.name,
                other.id,
                pid,
            )
            client.set_flow_run_state(
                other.id, Crashed(message=f"process {pid} on {host} died"), force=True
            )
            reaped.append(str(other.id))
        if this_run:
            current = client.read_flow_run(this_run)
            client.update_flow_run(this_run, tags=list(dict.fromkeys([*current.tags, *tags])))
            client.update_flow_run_labels(this_run, {OWNER_PID: str(os.getpid()), OWNER_HOST: host})
    return reaped
