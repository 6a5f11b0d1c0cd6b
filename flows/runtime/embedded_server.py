"""The embedded API's app (flows.runtime.embedded_api runs it under uvicorn): Prefect's own, except
that a SQLite database already at Prefect's newest migration is not migrated again, and that it
warms itself up once it answers.

Checking migrations at every start imports alembic and walks its scripts: about 1 s of the
server's 3-5 s start, on the path of every `foldflow cv|grid`. The check here reads the
database's `alembic_version` and the revision names of the installed Prefect's migration files;
anything else (no file yet, another version, PostgreSQL, any doubt) migrates as Prefect does.

The first requests that touch flow runs and task runs take 0.2-0.5 s each here (the database
layer sets itself up lazily), against 10-40 ms after. The server is ready well before the
command has imported TensorFlow, so it makes those first (read-only) requests itself meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path

SQLITE_PREFIX = "sqlite+aiosqlite:///"
REVISION = re.compile(r"^(down_revision|revision)\s*=\s*[\"']([0-9a-f]+)[\"']", re.MULTILINE)
# Set by flows.runtime.embedded_api for the server process: the port it listens on.
PORT_VARIABLE = "FOLDFLOW_EMBEDDED_API_PORT"
WARM_UP_READS = ("flows", "flow_runs", "task_runs", "artifacts", "logs")


def create_app():
    """uvicorn's factory: Prefect's app, told to skip migrating when the database is current."""
    import prefect
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    text = url.get_secret_value() if url is not None else ""
    migrations = Path(prefect.__file__).parent / "server" / "database" / "_migrations"
    if database_is_current(text, migrations / "versions" / "sqlite"):
        os.environ["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] = "false"
        refresh_global_settings_context()
    from prefect.server.api.server import create_app as prefect_app

    app = prefect_app()
    if os.environ.get(PORT_VARIABLE, "").isdigit():
        api = f"http://127.0.0.1:{os.environ[PORT_VARIABLE]}/api"
        threading.Thread(target=warm_up, args=(api,), name="warm-up", daemon=True).start()
    return app


def warm_up(api: str, timeout: float = 60.0) -> None:
    """Once `api` answers, read one row of each kind a run writes (nothing is written)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.1)
    else:
        return
    for kind in WARM_UP_READS:
        request = urllib.request.Request(
            f"{api}/{kind}/filter",
            data=json.dumps({"limit": 1}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30):
                pass
        except OSError:
            return  # a courtesy: the server serves as it would without it


def database_is_current(url: str, versions: Path) -> bool:
    """Whether `url` is a SQLite file whose alembic version is the newest of `versions`."""
    if not url.startswith(SQLITE_PREFIX):
        return False
    path = Path(url.removeprefix(SQLITE_PREFIX).split("?", 1)[0])
    head = newest_revision(versions)
    if head is None or not path.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    return rows == [(head,)]


def newest_revision(versions: Path) -> str | None:
    """The one revision no other migration file names as its `down_revision` (None: not one)."""
    revisions, parents = set(), set()
    for script in versions.glob("*.py"):
        for kind, name in REVISION.findall(script.read_text(encoding="utf-8", errors="replace")):
            (revisions if kind == "revision" else parents).add(name)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None
