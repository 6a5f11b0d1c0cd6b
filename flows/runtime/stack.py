"""`foldflow server`: the local stack for people who want the UI and schedules.

Starts `prefect server` (127.0.0.1 by default), creates the process work pool if missing,
deploys prefect.yaml and starts a worker; Ctrl-C (or SIGTERM) stops all of it, and if
foldflow is killed outright (SIGKILL) its watchdog does (flows/runtime/lifecycle.py).

The pieces (environment, health wait, pool, deploy, start/stop) are also what the e2e tests
use, so the tests run exactly what `foldflow server` runs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tasks.config import PROJECT_ROOT
from tasks.messages import escape_controls
from tasks.model.allowed import ALLOWED_MODELS_VARIABLE

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

WORK_POOL = "foldflow-process"
# Prefect's names for its server's database URL (the first is the current one).
DATABASE_URL_VARIABLES = (
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WILDCARD = {"0.0.0.0", "::", ""}
# The auth string `foldflow server` makes when none is given, kept for its next starts.
AUTH_FILE_NAME = "foldflow-server-auth"
AUTH_USER = "foldflow"


class StackStopped(Exception):
    """Raised by the SIGINT/SIGTERM handler so every wait unwinds into the clean-up."""


def prefect_command(*arguments: str) -> list[str]:
    """The Prefect CLI of this interpreter's environment (never another one on PATH)."""
    script = Path(sys.executable).with_name("prefect")
    if script.exists():
        return [str(script), *arguments]
    return [sys.executable, "-m", "prefect", *arguments]


def client_host(host: str) -> str:
    """Where clients reach a server bound to `host` (a wildcard bind is reached on loopback)."""
    return "127.0.0.1" if host in WILDCARD else host


def stack_environment(
    host: str,
    port: int,
    auth_string: str | None,
    base: dict[str, str] | None = None,
    allowed_models: Sequence[Path] = (PROJECT_ROOT,),
) -> dict[str, str]:
    """Environment for the server, the worker, `prefect deploy` and clients: one API.

    `prefect server start --port` alone leaves the UI calling the API on 4200, so the port
    goes through PREFECT_SERVER_API_PORT and the UI gets PREFECT_UI_API_URL. The worker's
    flow runs load model files only from `allowed_models` (ALLOWED_MODELS_VARIABLE).
    """
    api_url = f"http://{client_host(host)}:{port}/api"
    environment = dict(os.environ if base is None else base)
    for name in ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING"):
        environment.pop(name, None)
    environment.update(
        {
            "PREFECT_SERVER_API_HOST": host,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_API_URL": api_url,
            "PREFECT_UI_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
            ALLOWED_MODELS_VARIABLE: os.pathsep.join(
                str(Path(folder).expanduser().resolve()) for folder in allowed_models
            ),
        }
    )
    if auth_string:
        environment["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
        environment["PREFECT_API_AUTH_STRING"] = auth_string
    return environment


def prefect_home(environment: dict[str, str] | None = None) -> Path:
    """PREFECT_HOME as Prefect reads it (default ~/.prefect)."""
    environment = os.environ if environment is None else environment
    return Path(environment.get("PREFECT_HOME") or "~/.prefect").expanduser()


def server_auth_string(auth_file: Path) -> tuple[str, bool]:
    """The auth string kept in `auth_file` (0600, this user's), made first if need be; returns
    it and whether it is new.

    A file that others could read, or that another user owns, is not trusted: it is replaced
    by a new string (clients then need the new one)."""
    if auth_file.is_symlink() or auth_file.exists():
        info = auth_file.lstat()  # a symbolic link is not this user's file, whoever made it
        mine = stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()
        if mine and not info.st_mode & 0o077 and ":" in (text := auth_file.read_text().strip()):
            return text, False
        auth_file.unlink()
    auth_file.parent.mkdir(parents=True, exist_ok=True)
    auth_string = f"{AUTH_USER}:{secrets.token_urlsafe(24)}"
    # Created with mode 0600 at once (never readable by others, whatever the umask).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    descriptor = os.open(auth_file, flags, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(auth_string + "\n")
    return auth_string, True


def auth_refusal(host: str, auth_string: str | None, no_auth: bool) -> str | None:
    """Why the stack will not start as asked (an open API beyond loopback), or None."""
    if no_auth and not auth_string and host not in LOOPBACK:
        return (
            f"--no-auth on --host {host} would let anyone who reaches that address run code "
            "as you: drop --no-auth (an auth string is made) or serve on 127.0.0.1"
        )
    return None


def stack_auth_string(
    given: str | None, no_auth: bool, environment: dict[str, str] | None = None
) -> tuple[str | None, Path | None]:
    """The server's auth string and the file it is kept in: the one given (no file), none
    when asked (`no_auth`), else the one in PREFECT_HOME/foldflow-server-auth."""
    if given:
        return given, None
    if no_auth:
        return None, None
    auth_file = prefect_home(environment) / AUTH_FILE_NAME
    return server_auth_string(auth_file)[0], auth_file


def banner_lines(
    host: str, port: int, api_url: str, pool: str, auth_file: Path | None, has_auth: bool
) -> list[str]:
    """What `foldflow server` prints once everything runs: where the UI is (on the host it is
    bound to) and how clients pass the auth string."""
    ui_url = api_url.removesuffix("/api")
    if host in WILDCARD:
        where = [
            f"Prefect UI: {ui_url} (bound to {host or '*'}:{port}, every interface: "
            f"http://{socket.gethostname()}:{port} from other machines)"
        ]
    else:
        where = [f"Prefect UI: {ui_url}"]
    if auth_file is not None:
        client = f'PREFECT_API_AUTH_STRING="$(cat {auth_file})" PREFECT_API_URL={api_url}'
        auth = [
            f"Auth: the API requires the auth string kept in {auth_file} (readable by you "
            "alone); the UI asks for it.",
        ]
    elif has_auth:
        client = f"PREFECT_API_AUTH_STRING=<the auth string> PREFECT_API_URL={api_url}"
        auth = ["Auth: the API requires the auth string you gave; the UI asks for it."]
    else:
        client = f"PREFECT_API_URL={api_url}"
        auth = ["Auth: none (--no-auth): every user of this machine can run deployments."]
    return [
        f"worker started on pool {pool!r}",
        "",
        *where,
        *auth,
        f"Run a deployment: {client} prefect deployment run foldflow-cv/cv-nightly",
        f"Runs of `{client} foldflow cv|grid` appear there too.",
        "Ctrl-C stops the worker and the server.",
    ]


def configured_database_url(
    database_url: str | None, environment: dict[str, str] | None = None
) -> str | None:
    """`--database-url`, else Prefect's own variable for it, else None (SQLite in PREFECT_HOME)."""
    environment = os.environ if environment is None else environment
    if database_url:
        return database_url
    return next(
        (environment[name] for name in DATABASE_URL_VARIABLES if environment.get(name)), None
    )


def with_database(environment: dict[str, str], database_url: str | None) -> dict[str, str]:
    """The stack's environment with the server's database URL under both of Prefect's names."""
    if not database_url:
        return environment
    return {**environment, **dict.fromkeys(DATABASE_URL_VARIABLES, database_url)}


def database_problem(database_url: str, timeout: float = 10) -> str | None:
    """Why the server could not use this PostgreSQL database (unreachable, no such database,
    refused login), in one line without the password; None when a connection works.

    SQLite URLs are not checked: the server creates the file.
    """
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database_url)
    except ArgumentError:
        return f"cannot read the database URL {database_url.split('@')[-1]!r}"
    if not url.drivername.startswith("postgresql"):
        return None
    shown = url.render_as_string(hide_password=True)
    if url.drivername != "postgresql+asyncpg":
        return f"{shown}: Prefect's server needs the asyncpg driver: postgresql+asyncpg://..."
    host, port = url.host or "localhost", url.port or 5432
    where = f"PostgreSQL at {host}:{port}"

    async def connect() -> None:
        connection = await asyncpg.connect(
            host=host, port=port, user=url.username, password=url.password,
            database=url.database, timeout=timeout,
        )  # fmt: skip
        await connection.close()

    try:
        asyncio.run(connect())
    except asyncpg.InvalidCatalogNameError:
        return f"{where} has no database {url.database!r}: create it (docs/scale-out.md)"
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as error:
        return f"{where} refused user {url.username!r}: {error}"
    except (OSError, TimeoutError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        return (
            f"cannot reach {where} (database {url.database!r}): {reason}: is PostgreSQL "
            "running there and accepting TCP connections from this machine?"
        )
    except asyncpg.PostgresError as error:
        return f"{where}, database {url.database!r}: {error}"
    return None


def port_is_free(host: str, port: int) -> bool:
    """Nothing listens on it: a bind with SO_REUSEADDR succeeds, as the server's own will.

    Without SO_REUSEADDR, the connections of a server stopped a moment ago (TIME_WAIT for
    a minute) made a restart on the same port fail with "in use".
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_health(
    api_url: str, timeout: float = 120, process: subprocess.Popen | None = None
) -> None:
    """Poll /api/health (open even with an auth string) until the server answers.

    Plain httpx, not Prefect's client: it polls a server that may not be listening yet, on
    the one route that needs no auth string."""
    import httpx  # `foldflow --help` does not load it

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"prefect server exited with status {process.returncode}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except (httpx.TransportError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"prefect server at {api_url} did not answer within {timeout:.0f} s")


def stack_client(environment: dict[str, str]) -> SyncPrefectClient:
    """Prefect's own client for the stack's API and auth string (from `environment`, which may
    differ from this process's settings)."""
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(
        environment["PREFECT_API_URL"], auth_string=environment.get("PREFECT_API_AUTH_STRING")
    )


def ensure_work_pool(environment: dict[str, str], pool: str = WORK_POOL) -> bool:
    """Create the process work pool unless it exists; True when it was created."""
    inspect = subprocess.run(
        prefect_command("work-pool", "inspect", pool),
        env=environment, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if inspect.returncode == 0:
        return False
    created = subprocess.run(
        prefect_command("work-pool", "create", pool, "--type", "process"),
        env=environment, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if created.returncode != 0:
        raise RuntimeError(f"cannot create work pool {pool!r}:\n{created.stdout}{created.stderr}")
    return True


def deploy_all(environment: dict[str, str], project: Path = PROJECT_ROOT) -> str:
    """`prefect deploy --all` from the project folder, with PWD set for prefect.yaml's pull step."""
    completed = subprocess.run(
        prefect_command("--no-prompt", "deploy", "--all"),
        cwd=project, env={**environment, "PWD": str(project)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{completed.stdout}\n{completed.stderr}")
    return completed.stdout


def deployment_lines(environment: dict[str, str]) -> list[str]:
    """One line per deployment: name, pool and schedules, read back from the API."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterId

    with stack_client(environment) as client:
        deployments = client.read_deployments(limit=200)
        flow_ids = [deployment.flow_id for deployment in deployments]
        flows = client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=flow_ids)))
    flow_names = {flow.id: flow.name for flow in flows}
    lines = []
    for deployment in deployments:
        flow_name = flow_names.get(deployment.flow_id, str(deployment.flow_id))
        # As the API sends them (a cron string, an interval in seconds), not as Python objects.
        shown = [(s.schedule.model_dump(mode="json"), s.active) for s in deployment.schedules]
        schedules = ", ".join(
            f"{schedule.get('cron') or schedule.get('interval')} "
            f"{schedule.get('timezone') or ''}".strip()
            + ("" if active else " (paused)")
            for schedule, active in shown
        )
        lines.append(
            f"  {flow_name}/{deployment.name}  pool={deployment.work_pool_name}  "
            f"schedule={schedules or 'none'}"
        )
    return sorted(lines)


def _output(log_path: Path | None) -> IO[bytes] | int | None:
    return open(log_path, "ab") if log_path else None  # noqa: SIM115 - child owns it


def start_server(environment: dict[str, str], log_path: Path | None = None) -> subprocess.Popen:
    """`prefect server start` in its own process group (so it can be stopped as a whole), its
    SQLite writes begun IMMEDIATE (flows.runtime.sqlite_writes: no "database is locked")."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.runtime.sqlite_writes", "server", "start"],
        env=environment, stdout=_output(log_path), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def start_worker(
    environment: dict[str, str],
    pool: str = WORK_POOL,
    log_path: Path | None = None,
    project: Path = PROJECT_ROOT,
) -> subprocess.Popen:
    """A process worker on `pool`; each flow run is a child process of it."""
    return subprocess.Popen(
        prefect_command("worker", "start", "--pool", pool, "--type", "process"),
        cwd=project, env=environment, stdout=_output(log_path), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def stop(process: subprocess.Popen | None, timeout: float = 20) -> None:
    """Stop a child and everything it started (its process group): SIGTERM, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=timeout)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise StackStopped in the main thread; old handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        raise StackStopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_stack(
    host: str = "127.0.0.1",
    port: int = 4200,
    auth_string: str | None = None,
    pool: str = WORK_POOL,
    log_dir: Path | None = None,
    database_url: str | None = None,
    no_auth: bool = False,
    allowed_models: Sequence[Path] = (PROJECT_ROOT,),
) -> int:
    """Server + work pool + deployments + worker until Ctrl-C; 0 on a requested stop, 2 for a
    refused setting, else 1."""
    if refusal := auth_refusal(host, auth_string, no_auth):
        print(f"foldflow server: {refusal}", file=sys.stderr, flush=True)
        return 2
    environment = stack_environment(host, port, None, allowed_models=allowed_models)
    database_url = configured_database_url(database_url, environment)
    environment = with_database(environment, database_url)
    api_url = environment["PREFECT_API_URL"]
    if not port_is_free(host, port):
        print(f"port {port} on {host} is in use (another Prefect server?): try --port", flush=True)
        return 1
    if database_url and (problem := database_problem(database_url)):
        print(f"foldflow server: {escape_controls(problem)}", file=sys.stderr, flush=True)
        return 1
    try:
        auth_string, auth_file = stack_auth_string(auth_string, no_auth, environment)
    except OSError as error:
        where = error.filename or prefect_home(environment)
        print(
            f"foldflow server: cannot keep the auth string in {where}: {error.strerror or error}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    environment = with_database(
        stack_environment(host, port, auth_string, allowed_models=allowed_models), database_url
    )
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    server = worker = None
    status = 0
    with stop_on_signals():
        try:
            print(f"starting prefect server on {host or '*'}:{port} ...", flush=True)
            server = start_server(environment, log_dir / "server.log" if log_dir else None)
            wait_for_health(api_url, process=server)
            if ensure_work_pool(environment, pool):
                print(f"created work pool {pool!r} (type process)", flush=True)
            deploy_all(environment)
            print("deployed prefect.yaml:", *deployment_lines(environment), sep="\n", flush=True)
            worker = start_worker(environment, pool, log_dir / "worker.log" if log_dir else None)
            lines = banner_lines(host, port, api_url, pool, auth_file, bool(auth_string))
            print("\n".join(lines), flush=True)
            while True:
                for name, process in (("server", server), ("worker", worker)):
                    if process.poll() is not None:
                        print(f"prefect {name} exited with status {process.returncode}", flush=True)
                        status = 1
                if status:
                    break
                time.sleep(0.5)
        except StackStopped:
            print("\nstopping ...", flush=True)
        except (RuntimeError, TimeoutError, OSError) as error:
            print(f"foldflow server: {error}", file=sys.stderr, flush=True)
            status = 1
        finally:
            stop(worker)
            stop(server)
            print("stopped the worker and the server", flush=True)
    return status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=4200, help="API and UI port (default 4200)")
    parser.add_argument("--pool", default=WORK_POOL, help="process work pool to create and serve")
    parser.add_argument(
        "--database-url",
        help="the server's database, e.g. postgresql+asyncpg://USER@HOST:PORT/DB (default: "
        "PREFECT_API_DATABASE_CONNECTION_URL if set, else SQLite in PREFECT_HOME)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="write server.log and worker.log there instead of this terminal",
    )
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="serve the API without an auth string (refused unless --host is loopback)",
    )
    parser.add_argument(
        "--allow-models",
        action="append",
        type=Path,
        metavar="DIR",
        help="a folder deployment runs may load model files and packages from; repeatable "
        f"(default: the project folder, {PROJECT_ROOT}); foldflow's mlp is always allowed",
    )
    parser.epilog = (
        "Auth: the API requires an auth string: PREFECT_SERVER_API_AUTH_STRING='user:password' "
        "(or PREFECT_API_AUTH_STRING) if set, else one made and kept in "
        f"$PREFECT_HOME/{AUTH_FILE_NAME} (mode 0600). The worker and deploy get it; clients "
        "need PREFECT_API_AUTH_STRING."
    )


def run_from_args(args: argparse.Namespace) -> int:
    auth_string = os.environ.get("PREFECT_SERVER_API_AUTH_STRING") or os.environ.get(
        "PREFECT_API_AUTH_STRING"
    )
    return run_stack(
        args.host,
        args.port,
        auth_string,
        args.pool,
        args.log_dir,
        args.database_url,
        no_auth=args.no_auth,
        allowed_models=args.allow_models or (PROJECT_ROOT,),
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.runtime.stack` works before the CLI wires `foldflow server`."""
    from flows.runtime.lifecycle import start_watchdog

    start_watchdog()
    parser = argparse.ArgumentParser(prog="foldflow server", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
