"""Fixtures shared by every test folder: the real Pima CSV and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import atexit
import gzip
import hashlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from tasks.config import PROJECT_ROOT


def _caches_of_the_test_session() -> None:
    """foldflow's default cache home (tasks.cache_home: the user's cache folder) is a folder
    of this test session, never the user's; a test that sets FOLDFLOW_HOME gets its own
    ($FOLDFLOW_HOME/cache), as before. Subprocesses inherit it. The compiled-program cache
    stays where it was (the user's ~/.cache/foldflow/xla): programs are code, checked before
    use, and compiling them anew each session costs seconds."""
    if os.environ.get("FOLDFLOW_TEST_CACHES_SET"):
        return
    import platformdirs

    user_xla = Path(platformdirs.user_cache_dir("foldflow", appauthor=False)) / "xla"
    os.environ.setdefault("FOLDFLOW_XLA_CACHE", str(user_xla))
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="foldflow-test-caches-")
    atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)
    os.environ.pop("FOLDFLOW_CACHE", None)
    # The checkout's own data/cache/ (the developer's) is not moved into this session's cache.
    os.environ["FOLDFLOW_NO_CACHE_MIGRATION"] = "1"
    os.environ["FOLDFLOW_TEST_CACHES_SET"] = "1"


_caches_of_the_test_session()


def _one_tensorflow_thread_per_process() -> None:
    """`make test` runs four pytest processes (three unit workers, the e2e side) and their fit
    workers, flow runs and servers on however many cores there are, usually two. TensorFlow's
    pools, each sized to every core, then spin waiting for one another: one thread each spends
    less CPU for the same results. Set before any TensorFlow op; subprocesses inherit it; a
    value already set wins (tests of the defaults unset it)."""
    from flows.runtime.runners import TF_THREAD_VARIABLES

    for name in TF_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


_one_tensorflow_thread_per_process()

# Beside the repository (../shared/data), never inside it: the data is not ours to commit.
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
PIMA_CSV = SHARED_DATA / "pima-indians-diabetes.csv"

ServerMode = Literal[
    "ok", "404", "500", "truncated", "html", "stall", "redirect", "endless", "drip", "gzip", "br"
]  # fmt: skip
HTML_ERROR_PAGE = b"<!DOCTYPE html>\n<html><body><h1>Rate limit exceeded</h1></body></html>\n"
LAST_MODIFIED = "Tue, 24 Nov 2026 10:00:00 GMT"


def unused_port() -> int:
    """A port nothing listens on (bound then released), for 'the server is down' tests."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FileServer:
    """A real threaded HTTP server that serves files, counts requests and misbehaves on demand.

    `mode` applies to every request, or only to the first `misbehave_times` ones when set (then
    it serves normally), so tests can check both "retried then refused" and "retried then ok".
    Modes beyond plain failures: "endless" streams `endless_bytes` without a Content-Length,
    "drip" sends the file one byte every `drip_seconds`, "gzip" and "br" send it with that
    Content-Encoding (br is not really compressed: only the header matters). With
    `send_validators`, answers carry an ETag (the content's sha256) and a Last-Modified date
    and a matching If-None-Match / If-Modified-Since gets 304 Not Modified.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.mode: ServerMode = "ok"
        self.misbehave_times: int | None = None
        self.redirect_to = ""
        self.send_validators = False
        self.endless_bytes = 5 * 1024 * 1024
        self.drip_seconds = 0.1
        self.requests: list[str] = []
        self.request_headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _mode_for(self, path: str, headers: dict[str, str]) -> ServerMode:
        """Record the request and decide how to answer it."""
        with self._lock:
            self.requests.append(path)
            self.request_headers.append(headers)
            if self.misbehave_times is not None and len(self.requests) > self.misbehave_times:
                return "ok"
            return self.mode

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                mode = server._mode_for(self.path, dict(self.headers.items()))
                body = server.files.get(self.path.lstrip("/"))
                if mode == "endless":
                    self._send_endless()
                    return
                if mode == "stall":
                    server._released.wait(timeout=30)
                    return
                if mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode in ("404", "500") or body is None:
                    self.send_error(500 if mode == "500" else 404)
                    return
                if mode == "html":
                    body = HTML_ERROR_PAGE
                etag = f'"{hashlib.sha256(body).hexdigest()}"'
                # If-None-Match, when sent, decides alone (RFC 9110, 13.2.2).
                if_none_match = self.headers.get("If-None-Match")
                if server.send_validators and (
                    if_none_match == etag
                    if if_none_match is not None
                    else self.headers.get("If-Modified-Since") == LAST_MODIFIED
                ):
                    self.send_response(304)
                    self.end_headers()
                    return
                if mode == "gzip":
                    body = gzip.compress(body)
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                if mode in ("gzip", "br"):
                    self.send_header("Content-Encoding", mode)
                if server.send_validators:
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", LAST_MODIFIED)
                self.end_headers()
                if mode == "drip":
                    self._drip(body)
                    return
                if mode == "truncated":
                    # Announce the whole body, send half of it, then hang up.
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def _send_endless(self) -> None:
                """No Content-Length: the body ends when the server hangs up, far too late."""
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.end_headers()
                line = b"6,148,72,35,0,33.6,0.627,50,1\n" * 1000
                sent = 0
                try:
                    while sent < server.endless_bytes and not server._released.is_set():
                        self.wfile.write(line)
                        sent += len(line)
                except OSError:  # the client hung up, as it should
                    pass
                self.close_connection = True

            def _drip(self, body: bytes) -> None:
                try:
                    for index in range(len(body)):
                        if server._released.wait(server.drip_seconds):
                            break
                        self.wfile.write(body[index : index + 1])
                        self.wfile.flush()
                except OSError:
                    pass
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="session")
def pima_csv() -> Path:
    """The real Pima CSV from ../shared/data (768 rows, 9 numeric columns, no header)."""
    if not PIMA_CSV.is_file():
        raise FileNotFoundError(f"the shared dataset is missing: expected it at {PIMA_CSV}")
    return PIMA_CSV


@pytest.fixture(scope="session")
def pima_arrays(pima_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """The real Pima data: float32 features and int labels."""
    data = np.loadtxt(pima_csv, delimiter=",", dtype=np.float32)
    return data[:, :8], data[:, 8].astype(np.int64)


@pytest.fixture
def file_server(pima_csv: Path) -> Iterator[FileServer]:
    """A real HTTP server on 127.0.0.1 (free port) serving the real CSV as /pima.csv."""
    with FileServer({"pima.csv": pima_csv.read_bytes()}) as server:
        yield server


@pytest.fixture
def down_url() -> str:
    """The URL of a server that is down: a free port with nothing listening."""
    return f"http://127.0.0.1:{unused_port()}/pima.csv"


@pytest.fixture(scope="session")
def prefect_api():
    """One real, temporary Prefect API (SQLite) per test process, shared by every test that
    needs one. A second harness in the same process (xdist runs flow and unit files in one
    worker) left Prefect's events client sending to the first one's closed server, and the
    flow tests after it lost their task runs."""
    from prefect.testing.utilities import prefect_test_harness

    # The server keeps what tests read (runs, task runs, logs, artifacts) and skips what none
    # does: the event feed (its persister is ~20% of the server's CPU per task run, measured)
    # and Prefect's telemetry. The UI tests' servers (tests/e2e) keep both.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED", "false")
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_test_harness(server_startup_timeout=120):
            yield
