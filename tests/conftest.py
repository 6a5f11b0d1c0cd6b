"""Fixtures shared by every test folder: the real Pima CSV and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from tasks.config import PROJECT_ROOT

# Beside the repository (../shared/data), never inside it: the data is not ours to commit.
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
PIMA_CSV = SHARED_DATA / "pima-indians-diabetes.csv"

ServerMode = Literal["ok", "404", "500", "truncated", "html", "stall", "redirect"]
HTML_ERROR_PAGE = b"<!DOCTYPE html>\n<html><body><h1>Rate limit exceeded</h1></body></html>\n"


def unused_port() -> int:
    """A port nothing listens on (bound then released), for 'the server is down' tests."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FileServer:
    """A real threaded HTTP server that serves files, counts requests and misbehaves on demand.

    `mode` applies to every request, or only to the first `misbehave_times` ones when set (then
    it serves normally), so tests can check both "retried then refused" and "retried then ok".
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.mode: ServerMode = "ok"
        self.misbehave_times: int | None = None
        self.redirect_to = ""
        self.requests: list[str] = []
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

    def _mode_for(self, path: str) -> ServerMode:
        """Record the request and decide how to answer it."""
        with self._lock:
            self.requests.append(path)
            if self.misbehave_times is not None and len(self.requests) > self.misbehave_times:
                return "ok"
            return self.mode

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                mode = server._mode_for(self.path)
                body = server.files.get(self.path.lstrip("/"))
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
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "truncated":
                    # Announce the whole body, send half of it, then hang up.
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

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
