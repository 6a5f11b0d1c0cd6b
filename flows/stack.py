"""`foldflow server`: the local stack for people who want the UI and schedules.

Starts `prefect server` on 127.0.0.1, creates the process work pool if missing, deploys
prefect.yaml and starts a worker; Ctrl-C stops all of it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tasks.config import PROJECT_ROOT

WORK_POOL = "foldflow-process"


def prefect_command(*arguments: str) -> list[str]:
    """The Prefect CLI of this interpreter's environment."""
    return [str(Path(sys.executable).with_name("prefect")), *arguments]


def stack_environment(host: str, port: int, auth_string: str | None) -> dict[str, str]:
    """Environment for the server, the worker and clients: one API on host:port."""
    environment = dict(os.environ)
    environment.update(
        {
            "PREFECT_SERVER_API_HOST": host,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_API_URL": f"http://{host}:{port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": f"http://{host}:{port}/api",
        }
    )
    if auth_string:
        environment["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
        environment["PREFECT_API_AUTH_STRING"] = auth_string
    return environment


def wait_for_health(api_url: str, timeout: float = 120, process=None) -> None:
    """Poll /api/health (open even with auth) until the server answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"prefect server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"prefect server at {api_url} did not answer within {timeout:.0f} s")


def ensure_work_pool(environment: dict[str, str], pool: str = WORK_POOL) -> None:
    """Create the process work pool unless it already exists."""
    inspect = subprocess.run(
        prefect_command("work-pool", "inspect", pool),
        env=environment, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if inspect.returncode != 0:
        subprocess.run(
            prefect_command("work-pool", "create", pool, "--type", "process"),
            env=environment, check=True, capture_output=True, text=True,
        )  # fmt: skip


def deploy_all(environment: dict[str, str], project: Path = PROJECT_ROOT) -> str:
    """`prefect deploy --all` from the project folder (its prefect.yaml)."""
    completed = subprocess.run(
        prefect_command("--no-prompt", "deploy", "--all"),
        cwd=project, env={**environment, "PWD": str(project)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{completed.stdout}\n{completed.stderr}")
    return completed.stdout


def start_server(environment: dict[str, str], log_path: Path | None = None) -> subprocess.Popen:
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        prefect_command("server", "start"),
        env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def start_worker(
    environment: dict[str, str], pool: str = WORK_POOL, log_path: Path | None = None
) -> subprocess.Popen:
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        prefect_command("worker", "start", "--pool", pool, "--type", "process"),
        cwd=PROJECT_ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def stop(process: subprocess.Popen | None, timeout: float = 20) -> None:
    """Stop a child and everything it started (its process group), politely then firmly."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=timeout)


def run_stack(host: str, port: int, auth_string: str | None, pool: str = WORK_POOL) -> int:
    environment = stack_environment(host, port, auth_string)
    api_url = environment["PREFECT_API_URL"]
    server = worker = None
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        print(f"starting prefect server on http://{host}:{port} ...", flush=True)
        server = start_server(environment)
        wait_for_health(api_url, process=server)
        ensure_work_pool(environment, pool)
        deploy_all(environment)
        print(f"deployed prefect.yaml to work pool {pool!r}", flush=True)
        worker = start_worker(environment, pool)
        print(
            f"\nPrefect UI: http://{host}:{port}\n"
            f"Runs started with `PREFECT_API_URL={api_url} foldflow cv|grid` appear there.\n"
            "Ctrl-C stops the server and the worker.",
            flush=True,
        )
        while not stopping and server.poll() is None and worker.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop(worker)
        stop(server)
        print("stopped", flush=True)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--pool", default=WORK_POOL, help="process work pool to create and serve")


def run_from_args(args: argparse.Namespace) -> int:
    auth_string = os.environ.get("PREFECT_SERVER_API_AUTH_STRING")
    return run_stack(args.host, args.port, auth_string, args.pool)
