"""A real HTTP server on 127.0.0.1 for download tests: serves files, counts requests and can
answer 404, a truncated body or an HTML error page."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class DatasetServer:
    def __init__(self, files: dict[str, Path]):
        self.files = files
        self.mode = "ok"
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.requests.append(self.path)
                name = self.path.lstrip("/")
                if server.mode == "404" or name not in server.files:
                    self.send_error(404, "Not Found")
                    return
                body = server.files[name].read_bytes()
                if server.mode == "html":
                    body = b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode == "truncated":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> DatasetServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
