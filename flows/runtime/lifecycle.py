"""foldflow's child processes never outlive it, and SIGINT or SIGTERM stop it at once.

The children: the embedded Prefect API (a uvicorn process Prefect starts on first API use),
process-pool and Dask workers, and `foldflow server`'s Prefect server and worker with the flow
runs the worker starts.

How they die with foldflow: `start_watchdog()` puts a token unique to this process in the
environment (FOLDFLOW_OWNER), which every process started from then on inherits however
indirectly, and starts a small watchdog process holding the read end of a pipe whose write end
only this process holds. However this process ends (exit, signal, SIGKILL) the kernel closes
that end; the watchdog reads EOF and stops every process whose environment carries the token:
SIGTERM, then SIGKILL after a grace period. A reused pid cannot carry the token.

Why not the Linux parent-death signal (prctl PR_SET_PDEATHSIG): it needs a hook in the Popen
that starts each child, and Prefect starts its server with its own Popen; it fires when the
*thread* that forked exits, and Prefect may start its server from a worker thread; and it
reaches direct children only, not a worker's flow runs or Dask's worker processes.

This file also runs as the watchdog (`python -I lifecycle.py OWNER_PID TOKEN`), so it imports
only the standard library and psutil.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

OWNER_VARIABLE = "FOLDFLOW_OWNER"
GRACE_SECONDS = 2.0

# The watchdog and the pipe's write end live as long as this process: closing it means "gone".
_watchdog: dict[str, object] = {}
_stopping = threading.Event()


def owned_processes(token: str) -> list[psutil.Process]:
    """Processes started under `token` (their environment at start carries it), not this one."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(OWNER_VARIABLE) == token:
                found.append(process)
        except (psutil.Error, OSError):  # gone meanwhile, or not ours to read
            continue
    return found


def is_gone(process: psutil.Process) -> bool:
    """Exited (a zombie has exited too: only its parent's wait is missing)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` seconds; returns the processes still running."""
    deadline = time.monotonic() + timeout
    alive = [process for process in processes if not is_gone(process)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [process for process in alive if not is_gone(process)]
    return alive


def stop_processes(processes: list[psutil.Process], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM, then SIGKILL what is still running after `grace` seconds."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    for process in wait_until_gone(processes, grace):
        with contextlib.suppress(psutil.Error):
            process.kill()
    wait_until_gone(processes, grace)


def stop_owned_processes(token: str, grace: float = GRACE_SECONDS) -> int:
    """Stop every process carrying `token`, looking again for any started meanwhile.

    Returns how many were stopped.
    """
    stopped = 0
    for _ in range(3):
        processes = owned_processes(token)
        if not processes:
            break
        stop_processes(processes, grace)
        stopped += len(processes)
    return stopped


def start_watchdog() -> str:
    """Mark the processes this one starts from now on, and start their watchdog.

    Returns the token. Call it once, early in `main()`, from the main thread.
    """
    token = f"{os.getpid()}-{secrets.token_hex(8)}"
    read_end, write_end = os.pipe()  # not inheritable: only the watchdog gets read_end, as stdin
    environment = {name: value for name, value in os.environ.items() if name != OWNER_VARIABLE}
    _watchdog["process"] = subprocess.Popen(
        [sys.executable, "-I", str(Path(__file__).resolve()), str(os.getpid()), token],
        stdin=read_end, stdout=subprocess.DEVNULL, env=environment,
        start_new_session=True,  # Ctrl-C to our process group must not stop it before us
    )  # fmt: skip
    os.close(read_end)
    _watchdog["write_end"] = write_end
    os.environ[OWNER_VARIABLE] = token
    return token


def watch(owner: int, token: str) -> None:
    """The watchdog: wait for EOF on stdin (or to be re-parented), then stop what is left."""
    while os.getppid() == owner:
        readable, _, _ = select.select([sys.stdin.fileno()], [], [], 1.0)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            break
    stop_owned_processes(token)


def stop_now(signum: int, frame: object = None) -> None:
    """Signal handler: one line, then exit 128 + signal number at once; the watchdog stops the
    children as soon as we are gone (some stop by themselves then, like multiprocessing's
    resource tracker, which ignores SIGTERM and cleans up once its users have exited).

    The process's stdout and stderr go to /dev/null after that line: the dying run's threads
    (Prefect's log and event workers) would otherwise print connection errors as the embedded
    API stops.
    """
    if _stopping.is_set():  # a second signal while stopping
        os._exit(128 + signum)
    _stopping.set()
    os.write(2, f"foldflow: stopped by {signal.Signals(signum).name}\n".encode())
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if "write_end" not in _watchdog and (token := os.environ.get(OWNER_VARIABLE)):
        stop_owned_processes(token)
    os._exit(128 + signum)  # closes the watchdog's pipe: it stops the children


def leave_ctrl_c_to_foldflow() -> None:
    """A pool worker's initializer (`--runner processes`): ignore SIGINT. Ctrl-C to the process
    group then stops foldflow, whose line is the last, and its watchdog stops the workers;
    left to Python, each worker printed its KeyboardInterrupt traceback after that line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_until_signalled(work: Callable[[], int]) -> int:
    """Run `work` in a thread while the main thread waits; SIGINT or SIGTERM: `stop_now`.

    Why a thread: run in the main thread, a flow swaps Prefect's own SIGTERM handler in for the
    run, and both it and Ctrl-C's KeyboardInterrupt unwind through the task runner, which waits
    for every running fit (minutes), then reports the crash to an API that Ctrl-C to the
    process group has already stopped (141 s of connection-refused retries). Why exit at once:
    finished fits are in the result cache, outputs are written atomically, and the next run
    marks this flow run Crashed.
    """
    outcome: dict[str, object] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["status"] = context.run(work)
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = error

    previous = {sig: signal.signal(sig, stop_now) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        thread = threading.Thread(target=target, name="foldflow-run", daemon=True)
        thread.start()
        thread.join()  # a signal interrupts the wait: its handler runs at once
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["status"]  # type: ignore[return-value]


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
