"""The embedded Prefect API `foldflow cv|grid` start before their heavy imports: flows inside
`use_embedded_api` run on it, as on Prefect's own embedded API, and nothing outlives it."""

from __future__ import annotations

import json
import os
import urllib.request

import prefect.context
import psutil
from prefect import flow
from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    get_current_settings,
    temporary_settings,
)

from flows.embedded_api import EmbeddedApi, start_embedded_api, use_embedded_api


def without_server():
    """No configured API (as on a user's machine), and time for a loaded machine's start."""
    return temporary_settings(
        updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120},
        restore_defaults={PREFECT_API_URL},
    )


@flow(name="foldflow-embedded-api-probe")
def probe() -> dict:
    from prefect.runtime import flow_run

    settings = get_current_settings()
    return {
        "api_url": settings.api.url,
        "heartbeat": settings.flows.heartbeat_frequency,
        "flow_run_id": flow_run.get_id(),
    }


def test_flows_run_on_the_early_server_without_heartbeats_and_settings_come_back(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))  # the server's database goes there
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    server = EmbeddedApi()
    server.start()
    process = psutil.Process(server.process.pid)
    try:
        with without_server():
            global_before = prefect.context.GLOBAL_SETTINGS_CONTEXT
            with use_embedded_api(server):
                seen = probe()
                APILogWorker.drain_all()  # the run's logs, before the server stops
            assert get_current_settings().api.url is None
            assert prefect.context.GLOBAL_SETTINGS_CONTEXT is global_before
        with urllib.request.urlopen(f"{server.api_url}/flow_runs/{seen['flow_run_id']}") as reply:
            recorded = json.load(reply)
    finally:
        server.stop()
    assert seen["api_url"] == server.api_url
    assert seen["heartbeat"] is None
    assert recorded["state"]["type"] == "COMPLETED"
    assert "PREFECT_API_URL" not in os.environ
    assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE


def test_a_configured_server_is_used_as_it_is(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert start_embedded_api() is None
