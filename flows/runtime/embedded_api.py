"""The embedded Prefect API, started first so it comes up while TensorFlow is imported.

Left to Prefect, the temporary API server starts at the first flow call, after every import:
the TensorFlow import (~5 s) and the server's start (~3-8 s) then run one after the other. The
server is its own process (the uvicorn command Prefect itself runs), so `foldflow cv|grid`
starts it before the heavy imports and waits for it only when the flow is about to run. This
process then talks to it as to any server (PREFECT_API_URL), which also spares it importing
Prefect's server code; flow-run heartbeats stay off as on the embedded API
(flows/runtime/runners.py).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import IO

from flows.runtime.embedded_server import PORT_VARIABLE

POLL_SECONDS = 0.1
# uvicorn exits with 3 when its port was taken meanwhile; then another port is tried.
PORT_TAKEN_EXIT = 3
# As Prefect's temporary server: no UI, ephemeral mode (its services are not started).
SERVER_ENVIRONMENT = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(port: int) -> list[str]:
    """The uvicorn command Prefect runs for its temporary server (SubprocessASGIServer), with
    its app from flows.runtime.embedded_server (Prefect's, without needless migration checks)."""
    spec = find_spec("prefect")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise ImportError("prefect is not installed")
    return [
        sys.executable, "-m", "uvicorn",
        "--app-dir", str(Path(spec.origin).parent.parent),
        "--factory", "flows.runtime.embedded_server:create_app",
        "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip


def pass_on_stderr(pipe: IO[bytes]) -> None:
    """Copy a child's stderr to this process's fd 2 (wherever it points now) until EOF."""
    with pipe:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            try:
                os.write(2, chunk)
            except OSError:
                return


class EmbeddedApi:
    """A temporary Prefect API server in its own process: `start()` returns at once,
    `wait_until_ready()` blocks until /api/health answers, `stop()` ends it."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        """Start the server in a session of its own, its stderr passed on by a thread.

        Its own session: Ctrl-C in a terminal (SIGINT to the foreground process group) then
        stops foldflow alone, which prints `foldflow: stopped by SIGINT` and exits; the server
        is stopped after it (atexit, or foldflow's watchdog). In foldflow's group the server
        got the SIGINT too and, on a loaded machine, printed asyncio's CancelledError
        traceback after foldflow's last line. Its stderr goes through this process's fd 2,
        which foldflow's signal handler closes to the terminal: nothing it writes while
        foldflow stops can come after foldflow's line."""
        self.port = free_port()
        self.process = subprocess.Popen(
            server_command(self.port),
            env={**os.environ, **SERVER_ENVIRONMENT, PORT_VARIABLE: str(self.port)},
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        threading.Thread(
            target=pass_on_stderr, args=(self.process.stderr,), daemon=True,
            name="foldflow-embedded-api-stderr",
        ).start()  # fmt: skip

    def wait_until_ready(self, timeout: float) -> str:
        """Block until the API answers; returns its URL. `timeout` counts as Prefect counts
        it for its own temporary server: 0.1 s per poll, so on a loaded machine, where each
        poll takes longer, the server gets more wall time, never less."""
        polls = int(timeout / POLL_SECONDS)
        for _ in range(polls):
            assert self.process is not None, "start() first"
            code = self.process.poll()
            if code == PORT_TAKEN_EXIT:
                self.start()
                continue
            if code is not None:
                raise RuntimeError(f"the embedded Prefect API exited with status {code}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.api_url
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(POLL_SECONDS)
        self.stop()
        raise RuntimeError(f"the embedded Prefect API did not answer within {timeout:.0f} s")

    def stop(self, wait: bool = True) -> None:
        """SIGTERM, as Prefect stops its temporary server; SIGKILL after 5 s. Without `wait`
        the server finishes its graceful stop on its own (~0.2 s here) while the caller goes
        on: at exit, where every request has been answered and the watchdog
        (flows/runtime/lifecycle.py) still ends it should it hang."""
        if self.process is None:
            return
        self.process.terminate()
        if not wait:
            self.process = None
            return
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


_server: dict[str, EmbeddedApi] = {}  # one per process, as Prefect's own temporary server


def configured_api_url() -> str | None:
    """The API URL the user configured, as far as it is known without importing Prefect: the
    environment, or Prefect's settings once something has imported them."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if "prefect.context" in sys.modules:
        from prefect.settings import get_current_settings

        return get_current_settings().api.url
    return None


def start_embedded_api() -> EmbeddedApi | None:
    """Start this process's embedded API now (once), unless a server is configured; the
    caller imports what it needs meanwhile, then runs its flows in `use_embedded_api`.

    A URL set in a Prefect profile or prefect.toml is only known once Prefect's settings load:
    `use_embedded_api` then stops the server unused. The server stops when this process exits
    (atexit, after Prefect's log and event workers have sent what they hold), or, if it is
    killed, by foldflow's watchdog (flows/runtime/lifecycle.py).
    """
    if configured_api_url():
        return None
    if "server" not in _server:
        server = EmbeddedApi()
        server.start()
        atexit.register(server.stop, wait=False)
        _server["server"] = server
    return _server["server"]


@contextmanager
def use_embedded_api(server: EmbeddedApi | None) -> Iterator[None]:
    """Flow runs inside talk to `server` (once it answers) with flow-run heartbeats off, as on
    Prefect's own embedded API; with no server, or a URL configured in Prefect's settings, they
    run as `embedded_run_settings` says."""
    import prefect.context
    from prefect.logging import get_logger
    from prefect.settings import get_current_settings, temporary_settings

    from flows.runtime.runners import embedded_run_settings

    if server is None or get_current_settings().api.url:
        if server is not None:
            server.stop()
            _server.clear()
        with embedded_run_settings():
            yield
        return
    # Prefect's own limit (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)
    url = server.wait_until_ready(get_current_settings().server.ephemeral.startup_timeout_seconds)
    get_logger().info("Using temporary server on %s", url.removesuffix("/api"))
    # This server serves no UI: without a UI URL Prefect logs no "View at" link to it.
    updates = {"PREFECT_API_URL": url, "PREFECT_UI_URL": os.environ.get("PREFECT_UI_URL", "")}
    saved_environment = {name: os.environ.get(name) for name in updates}
    saved_global = prefect.context.GLOBAL_SETTINGS_CONTEXT
    os.environ.update(updates)
    # Threads Prefect starts without a copy of this context (its log and event workers) read
    # the process-global settings: rebuilt from the environment, they name this server too.
    prefect.context.refresh_global_settings_context()
    try:
        # Heartbeats: see embedded_run_settings (the server dies with this process).
        with temporary_settings(
            updates={"api.url": url, "ui_url": updates["PREFECT_UI_URL"],
                     "flows.heartbeat_frequency": None}
        ):  # fmt: skip
            yield
    finally:
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        prefect.context.GLOBAL_SETTINGS_CONTEXT = saved_global
