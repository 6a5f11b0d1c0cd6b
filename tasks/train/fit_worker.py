"""One fit worker process: trains the reference engine's fits one at a time for
tasks.train.fit_workers, which watches its memory and time, stops it when a fit goes over a
bound, and replaces it after enough fits (Keras keeps a few MB of every model it builds).

Forked by fit_workers.FitWorker from a fork server that has TensorFlow imported, it runs
`fit_workers.start` with the parent's environment and sys.path, so it imports what the parent
process could. It speaks over two pipes, never over stdout or stderr, which stay the model
code's (a print in a model function is harmless). Messages are pickled tuples:

    parent -> worker   ("fit", context_key, context or None, job)
    worker -> parent   ("ready", pid) once, then per fit ("done", FitResult)
                       or ("error", pickled exception or None, "Type: message")

`context` (dataset, folds, run seed, model source, scorers) is sent once per worker and run.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from tasks.native_stderr import tensorflow_start_up_lines_held_back


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent died (SIGKILL, no goodbye) leaves even in the middle of a fit."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _picklable(error: BaseException) -> bytes | None:
    try:
        data = pickle.dumps(error)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 (any exception the user's code raised may not pickle)
        return None


def reference_fit(context: tuple, job: Any) -> Any:
    """One reference-engine fit (tasks.train.dispatch, without guards: in this process)."""
    from tasks.train.dispatch import run_fit_jobs

    dataset, folds, run_seed, source, scorers = context
    (result,) = run_fit_jobs(dataset, folds, [job], run_seed, source, scorers)
    return result


def load_reference_fit() -> Callable[[tuple, Any], Any]:
    from tasks.train.dispatch import load_engines

    with tensorflow_start_up_lines_held_back():
        load_engines()  # TensorFlow, before the worker says it is ready
    return reference_fit


def serve(
    receive: Connection,
    send: Connection,
    load_fit: Callable[[], Callable[[Any, Any], Any]] = load_reference_fit,
) -> None:
    """Answer fit requests until the parent closes its end; `load_fit` imports what fits need
    and returns the function that runs one (context, request)."""
    # Ctrl-C is the parent's to handle: it stops this worker (flows.runtime.lifecycle).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    fit = load_fit()
    send.send_bytes(pickle.dumps(("ready", os.getpid())))
    context = None
    while True:
        try:
            request = pickle.loads(receive.recv_bytes())
        except EOFError:
            return
        _, _, new_context, job = request
        if new_context is not None:
            context = new_context
        try:
            answer = ("done", fit(context, job))
        except BaseException as error:  # noqa: BLE001 (the user's code: any error is the fit's)
            answer = ("error", _picklable(error), f"{type(error).__name__}: {error}")
        send.send_bytes(pickle.dumps(answer))


def run(receive: Connection, send: Connection) -> None:
    serve(receive, send)
