"""The embedded Prefect API `foldflow cv|grid` start before their heavy imports: flows inside
`use_embedded_api` run on it, as on Prefect's own embedded API, and nothing outlives it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import urllib.request
from pathlib import Path

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

from flows.runtime.embedded_api import EmbeddedApi, start_embedded_api, use_embedded_api
from flows.runtime.embedded_server import database_is_current


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
    # The next start finds the database migrated, skips migrating, and serves what it holds.
    migrations = Path(prefect.__file__).parent / "server" / "database" / "_migrations"
    url = f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"
    assert database_is_current(url, migrations / "versions" / "sqlite")
    again = EmbeddedApi()
    again.start()
    try:
        again.wait_until_ready(120)
        with urllib.request.urlopen(f"{again.api_url}/flow_runs/{seen['flow_run_id']}") as reply:
            assert json.load(reply)["state"]["type"] == "COMPLETED"
        # its warm-up (flows.runtime.embedded_server.warm_up) only read: still the one run
        count = urllib.request.Request(
            f"{again.api_url}/flow_runs/count",
            data=b"{}",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(count) as reply:
            assert json.load(reply) == 1
    finally:
        stopping = psutil.Process(again.process.pid)
        again.stop(wait=False)  # as at exit: it ends on its own, gracefully
    assert again.process is None
    # uvicorn's graceful stop ends by re-raising the SIGTERM it got (not a SIGKILL)
    assert stopping.wait(timeout=30) == -signal.SIGTERM


def _migrations(folder: Path, chain: list[str]) -> Path:
    """Migration scripts as Prefect writes them, each naming the one before."""
    folder.mkdir()
    for index, revision in enumerate(chain):
        down = f'"{chain[index - 1]}"' if index else "None"
        (folder / f"{index}_{revision}.py").write_text(
            f'"""A migration."""\nrevision = "{revision}"\ndown_revision = {down}\n'
        )
    return folder


def _database(path: Path, versions: list[str] | None) -> str:
    with sqlite3.connect(path) as connection:
        if versions is not None:
            connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
            connection.executemany(
                "INSERT INTO alembic_version VALUES (?)", [(v,) for v in versions]
            )
    return f"sqlite+aiosqlite:///{path}"


def test_only_a_sqlite_database_at_the_newest_migration_skips_migrating(tmp_path):
    versions = _migrations(tmp_path / "versions", ["aa01", "bb02", "cc03"])
    assert database_is_current(_database(tmp_path / "current.db", ["cc03"]), versions)
    assert not database_is_current(_database(tmp_path / "older.db", ["bb02"]), versions)
    assert not database_is_current(_database(tmp_path / "new.db", None), versions)
    assert not database_is_current(f"sqlite+aiosqlite:///{tmp_path / 'missing.db'}", versions)
    assert not database_is_current("postgresql+asyncpg://u@127.0.0.1:5432/prefect", versions)
    (versions / "9_dd04.py").write_text('revision = "dd04"\ndown_revision = "bb02"\n')
    assert not database_is_current(_database(tmp_path / "branched.db", ["cc03"]), versions)


def test_a_configured_server_is_used_as_it_is(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert start_embedded_api() is None


def test_ctrl_c_to_foldflows_process_group_does_not_reach_the_embedded_api():
    """The server runs in a session of its own (issue 27): SIGINT to foldflow's group stops
    foldflow, which prints the last line, and never makes the server print a traceback."""
    server = EmbeddedApi()
    server.start()
    try:
        assert os.getpgid(server.process.pid) != os.getpgid(0)
        assert os.getsid(server.process.pid) != os.getsid(0)
    finally:
        server.stop()
