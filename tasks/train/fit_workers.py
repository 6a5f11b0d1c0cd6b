"""Guarded fits: the reference engine's fits run in worker processes (tasks.train.fit_worker)
that this module watches and replaces.

Why processes of our own, not a ProcessPoolExecutor (`max_tasks_per_child`) or loky: a fit
over its memory or time must be stopped, and only killing its process stops TensorFlow
mid-op; a killed worker breaks either pool for every pending task. Here a task run leases one
worker and sends it one fit at a time, while its thread samples the worker's RSS every
POLL_SECONDS:

- a fit whose worker grows by more than `max_memory` since the fit started, or that runs
  longer than `fit_timeout`, is stopped (SIGKILL) and recorded as failed with the reason;
  the worker is replaced. (RLIMIT_AS cannot do this: TensorFlow's first op reserves ~1 GB of
  address space, and under a tight limit it aborts with std::bad_alloc - docs/reliability.md.)
- a worker is replaced after `recycle_after_fits` fits, or once its RSS has grown by
  `recycle_above` since it started, so Keras' few MB kept per built model stay bounded;
  each replacement is a log line.

Workers are forked from a fork server (_ForkServer, multiprocessing's) that imported TensorFlow once
(tasks.train.fit_worker_preload): a new worker is ready in ~0.1 s instead of the ~5 s (30-60 s
on a loaded machine) an import of its own takes. Each starts with the parent's sys.path, working
folder and environment (TensorFlow sized to one worker's share of the cores), never with the
parent's `__main__` (a user's script without a main guard would run again in it), and is kept
idle between task runs and flow runs of this process. Nothing here imports TensorFlow: the flow
plans groups with `reference_groups` before training.
"""

from __future__ import annotations

import atexit
import importlib
import io
import itertools
import logging
import math
import multiprocessing
import os
import pickle
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import (
    connection,
    forkserver,
    popen_forkserver,
    reduction,
    resource_tracker,
    spawn,
    util,
)
from multiprocessing import context as mp_context
from typing import Any

import cloudpickle
import psutil
from pydantic import BaseModel, ConfigDict

from tasks.data.dataset import DatasetHandle
from tasks.memory import default_fit_memory, format_bytes
from tasks.metrics import ScorerSpec
from tasks.model.sources import ModelSource
from tasks.records import FitJob, FitResult, Fold
from tasks.train.reuse import failed_results

POLL_SECONDS = 0.01
IDLE_SECONDS = 120.0  # an idle worker is stopped after this (a notebook's next fit reuses it)
READY_TIMEOUT = (
    600.0  # the first waits for the fork server's TensorFlow import: ~5 s idle, longer loaded
)
WORKER_MODULE = "tasks.train.fit_worker"
PRELOAD_MODULE = "tasks.train.fit_worker_preload"
# Task runs per worker worth planning (balance), and most fits per task run: each task run
# costs Prefect ~0.1-0.3 s and a log line, and the flow hears of fits (cache, progress bar)
# as their task run ends.
GROUPS_PER_WORKER = 8
MAX_GROUP_FITS = 20


class FitGuards(BaseModel):
    """What a task run's reference fits are held to (from RunSettings, per run)."""

    model_config = ConfigDict(frozen=True)

    max_memory: int | None = None  # bytes a fit may add to its worker; None: default_fit_memory
    fit_timeout: float | None = None  # seconds; None: no limit
    recycle_after_fits: int = 200
    recycle_above: int = 2**30  # bytes a worker may grow by since it started
    workers: int = 1  # the run's parallel workers: TensorFlow threads and the default memory
    fail_fast: bool = False  # a fit's own error stops the task run (else a failed record)

    @classmethod
    def of_run(cls, run: Any, fail_fast: bool = False) -> FitGuards:
        """The guards of a run's settings (tasks.config.RunSettings)."""
        return cls(
            max_memory=run.max_memory_bytes,
            fit_timeout=run.fit_timeout,
            recycle_after_fits=run.recycle_after_fits,
            recycle_above=run.recycle_above_bytes,
            workers=run.workers,
            fail_fast=fail_fast,
        )

    def memory_bound(self) -> int:
        return self.max_memory if self.max_memory is not None else default_fit_memory(self.workers)


class FitStopped(Exception):
    """A fit stopped by a guard (memory, time) or whose worker died: the fit's failure."""


def on_reference_engine(job: FitJob) -> bool:
    """A job neither the stacked engine (its network) nor the vectorized path takes."""
    return job.network is None and not getattr(job, "vectorized", "")


def reference_groups(groups: list[list[FitJob]], workers: int) -> list[list[FitJob]]:
    """Single reference-engine jobs gathered into fewer task runs of near-equal size, in job
    order: GROUPS_PER_WORKER per worker for balance (so a small run keeps one fit per task
    run), more where a task run would hold over MAX_GROUP_FITS fits; other groups first."""

    def single(group: list[FitJob]) -> bool:
        return len(group) == 1 and on_reference_engine(group[0])

    singles = [group[0] for group in groups if single(group)]
    kept = [group for group in groups if not single(group)]
    if not singles:
        return kept
    wanted = min(len(singles), GROUPS_PER_WORKER * max(1, workers))
    count = max(wanted, math.ceil(len(singles) / MAX_GROUP_FITS))
    size, extra = divmod(len(singles), count)
    bounds = [index * size + min(index, extra) for index in range(count + 1)]
    return kept + [singles[start:end] for start, end in itertools.pairwise(bounds)]


def tensorflow_threads(workers: int) -> dict[str, str]:
    """TensorFlow's thread pools sized to one worker's share of the usable cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    share = str(max(1, cores // max(1, workers)))
    return {"TF_NUM_INTRAOP_THREADS": share, "TF_NUM_INTEROP_THREADS": share}


class _ForkServer(forkserver.ForkServer):
    """multiprocessing's fork server, started with `python -P`: its preload then imports
    foldflow's installed packages, never a module of the working folder (a user's `tasks.py`
    would shadow foldflow's `tasks` and, as the wheel test's does, stop the server). Python
    3.11's fork server ignores the parent's sys.path it is handed; the workers get it anyway
    (multiprocessing's preparation data)."""

    def ensure_running(self) -> None:  # multiprocessing's own, with -P
        with self._lock:
            resource_tracker.ensure_running()
            if self._forkserver_pid is not None:
                pid, _ = os.waitpid(self._forkserver_pid, os.WNOHANG)
                if not pid:
                    return  # still running
                os.close(self._forkserver_alive_fd)
                self._forkserver_address = self._forkserver_alive_fd = None
                self._forkserver_pid = None
            command = (
                "from multiprocessing.forkserver import main; "
                f"main(%d, %d, {self._preload_modules!r})"
            )
            with socket.socket(socket.AF_UNIX) as listener:
                address = connection.arbitrary_address("AF_UNIX")
                listener.bind(address)
                if not util.is_abstract_socket_namespace(address):
                    os.chmod(address, 0o600)
                listener.listen()
                alive_r, alive_w = os.pipe()  # the server ends when every client has closed it
                try:
                    executable = spawn.get_executable()
                    arguments = [executable, *util._args_from_interpreter_flags(), "-P", "-c"]
                    arguments.append(command % (listener.fileno(), alive_r))
                    pid = util.spawnv_passfds(executable, arguments, [listener.fileno(), alive_r])
                except BaseException:
                    os.close(alive_w)
                    raise
                finally:
                    os.close(alive_r)
                self._forkserver_address = address
                self._forkserver_alive_fd = alive_w
                self._forkserver_pid = pid


_SERVER = _ForkServer()
_SERVER.set_forkserver_preload([PRELOAD_MODULE])
_STARTING = threading.Lock()  # a worker starting, or the unused server stopping
_WORKERS: weakref.WeakSet[FitWorker] = weakref.WeakSet()


def stop_server_if_unused() -> bool:
    """Stop the fork server (TensorFlow's ~0.7 GB) when no worker lives; the next worker
    starts it again. True if it was stopped."""
    with _STARTING:
        if _SERVER._forkserver_pid is None or any(w.alive() for w in list(_WORKERS)):
            return False
        _SERVER._stop()
        return True


class _WorkerPopen(popen_forkserver.Popen):
    """multiprocessing's fork-server launch through _SERVER, without the parent's `__main__`:
    left in, a worker would import the user's script (or notebook's program) again, top-level
    code and all, as spawned processes do."""

    def _launch(self, process_obj: Any) -> None:
        preparation = spawn.get_preparation_data(process_obj._name)
        preparation.pop("init_main_from_name", None)
        preparation.pop("init_main_from_path", None)
        data = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            reduction.dump(preparation, data)
            reduction.dump(process_obj, data)
        finally:
            mp_context.set_spawning_popen(None)
        self.sentinel, write_end = _SERVER.connect_to_new_process(self._fds)
        parent_end = os.dup(write_end)  # the child's sign that this process still lives
        self.finalizer = util.Finalize(self, util.close_fds, (parent_end, self.sentinel))
        with open(write_end, "wb", closefd=True) as pipe:
            pipe.write(data.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _WorkerProcess(mp_context.ForkServerProcess):
    _start_method = "forkserver"

    @staticmethod
    def _Popen(process_obj: Any) -> _WorkerPopen:  # noqa: N802 (multiprocessing's name)
        return _WorkerPopen(process_obj)


def start(module: str, receive: Any, send: Any, environment: dict[str, str]) -> None:
    """A forked worker's entry: the parent's environment now (TensorFlow reads its thread
    counts when its first op runs, not at import), then `module`'s `run` (fit_worker's)."""
    os.environ.clear()
    os.environ.update(environment)
    importlib.import_module(module).run(receive, send)


@contextmanager
def _children_allowed() -> Iterator[None]:
    """multiprocessing refuses children to a daemonic process, and Dask's worker processes
    are daemonic: their reference fits would fail. Its rule guards against orphans; a fit
    worker leaves by itself once its parent is gone (fit_worker._exit_with_parent). Held
    under _STARTING, as every worker start is."""
    this = multiprocessing.current_process()
    if not this.daemon:
        yield
        return
    this.daemon = False
    try:
        yield
    finally:
        this.daemon = True


class FitWorker:
    """One worker process and the two pipes to it."""

    def __init__(self, workers: int, module: str = WORKER_MODULE) -> None:
        self.receive, child_send = multiprocessing.Pipe(duplex=False)
        child_receive, self.send = multiprocessing.Pipe(duplex=False)
        environment = {**tensorflow_threads(workers), **os.environ}  # the user's settings win
        self.process = _WorkerProcess(
            target=start, args=(module, child_receive, child_send, environment),
            name=f"foldflow-fit-worker-{module}", daemon=True,
        )  # fmt: skip
        try:
            with _STARTING, _children_allowed():
                self.process.start()
            _WORKERS.add(self)
        finally:
            child_receive.close()
            child_send.close()
        self.workers, self.module = workers, module
        self.watched = psutil.Process(self.process.pid)
        self.started_rss: int | None = None  # when ready
        self.fits = 0
        self.context_key: str | None = None
        self.idle_since = time.monotonic()
        self.busy = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def rss(self) -> int | None:
        try:
            return self.watched.memory_info().rss
        except psutil.Error:
            return None

    def wait_ready(self) -> None:
        """Block until the worker has imported what it trains with (RuntimeError if it died)."""
        if self.started_rss is not None:
            return
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.receive.poll(0.05):
            if not self.alive() or time.monotonic() > deadline:
                code = self.process.exitcode
                self.stop()
                raise RuntimeError(f"a fit worker process did not start (exit code {code})")
        try:
            pickle.loads(self.receive.recv_bytes())
        except EOFError:
            self.stop()
            raise RuntimeError("a fit worker process ended while starting") from None
        self.started_rss = self.rss() or 0

    def run(self, request: bytes, guards: FitGuards) -> tuple:
        """Send one fit; its answer, or ("stopped", reason) / ("died", reason)."""
        self.wait_ready()
        bound = guards.memory_bound()
        at_start = self.rss() or 0
        started = time.monotonic()
        self.busy = True  # until its answer is read: a worker left busy is never lent again
        self.send.send_bytes(request)
        self.fits += 1
        while True:
            if self.receive.poll(POLL_SECONDS):
                try:
                    answer = pickle.loads(self.receive.recv_bytes())
                except EOFError:
                    return ("died", self._death())
                self.busy = False
                return answer
            rss = self.rss()
            if rss is None or not self.alive():
                return ("died", self._death())
            if rss - at_start > bound:
                self.stop()
                return (
                    "stopped",
                    f"the fit used more than max_memory (--max-memory) {format_bytes(bound)}: "
                    f"its process grew by {format_bytes(rss - at_start)} and was stopped",
                )
            elapsed = time.monotonic() - started
            if guards.fit_timeout is not None and elapsed > guards.fit_timeout:
                self.stop()
                return (
                    "stopped",
                    f"the fit ran longer than fit_timeout (--fit-timeout) "
                    f"{guards.fit_timeout:g} s and was stopped",
                )

    def _death(self) -> str:
        self.process.join(timeout=5)
        if self.process.exitcode is None:
            self.stop()
        code = self.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        hint = " (the system's out-of-memory killer?)" if code == -9 else ""
        return f"the fit's worker process ended during the fit ({how}){hint}"

    def stop(self) -> None:
        """Kill the process (it may be deep in a TensorFlow op) and close the pipes."""
        if self.alive():
            self.process.kill()
        self.process.join(timeout=10)
        for end in (self.receive, self.send):
            end.close()


class _Pool:
    """Idle workers of this process, by their TensorFlow sizing and module, lent to one task
    run at a time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[FitWorker] = []
        self.replaced = 0  # workers retired after their bound, in this process's life
        self.reaper: threading.Thread | None = None

    def take(self, workers: int, module: str = WORKER_MODULE) -> FitWorker:
        with self.lock:
            for worker in list(self.idle):
                if not worker.alive():
                    self.idle.remove(worker)
                    worker.stop()
                elif (worker.workers, worker.module) == (workers, module):
                    self.idle.remove(worker)
                    return worker
        return FitWorker(workers, module)

    def give_back(self, worker: FitWorker | None) -> None:
        if worker is None:
            return
        if worker.busy or not worker.alive():  # busy: its task run ended mid-fit (Ctrl-C)
            worker.stop()
            return
        worker.idle_since = time.monotonic()
        with self.lock:
            self.idle.append(worker)
            if self.reaper is None:
                self.reaper = threading.Thread(target=self._reap, daemon=True)
                self.reaper.start()

    def _reap(self) -> None:
        """Stop workers idle for IDLE_SECONDS: each holds TensorFlow's ~0.8 GB; then the fork
        server too, if no worker is left."""
        while True:
            time.sleep(IDLE_SECONDS / 10)
            now = time.monotonic()
            with self.lock:
                stale = [w for w in self.idle if now - w.idle_since > IDLE_SECONDS]
                self.idle = [w for w in self.idle if w not in stale]
            for worker in stale:
                worker.stop()
            if stale:
                stop_server_if_unused()

    def warm(self, count: int, workers: int, module: str = WORKER_MODULE) -> None:
        """Start workers now (they import TensorFlow meanwhile) so that `count` are idle."""
        with self.lock:
            ready = sum(
                1 for w in self.idle if w.alive() and (w.workers, w.module) == (workers, module)
            )
            self.idle += [FitWorker(workers, module) for _ in range(max(0, count - ready))]

    def stop_all(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for worker in idle:
            worker.stop()
        stop_server_if_unused()


POOL = _Pool()
atexit.register(POOL.stop_all)


def warm_fit_workers(count: int, workers: int) -> None:
    """Start fit workers ahead of the first reference fit of a run (flows.stages)."""
    POOL.warm(count, workers)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("foldflow.fit_workers")


def recycle_reason(worker: FitWorker, guards: FitGuards) -> str | None:
    """Why a worker is replaced after its last fit (None: it carries on)."""
    if worker.fits >= guards.recycle_after_fits:
        return f"after {worker.fits} fits (recycle_after_fits)"
    rss = worker.rss()
    if rss is not None and worker.started_rss is not None:
        growth = rss - worker.started_rss
        if growth > guards.recycle_above:
            return (
                f"after {worker.fits} fits: it grew by {format_bytes(growth)} since it started "
                f"(recycle_above_memory {format_bytes(guards.recycle_above)})"
            )
    return None


def guarded_answers(
    requests: list[Any], context: Any, guards: FitGuards, module: str = WORKER_MODULE
) -> Iterator[tuple]:
    """Each request answered in order by one leased worker at a time (`context` sent once per
    worker): ("done", value), ("error", pickled exception or None, text), or ("stopped" |
    "died", reason) when a guard stopped it or its process ended. A worker that is gone is
    replaced for the next request; one past its bound (recycle_reason) too, with a log line."""
    if not requests:  # most task runs: the fast engine took every fit
        return
    context_key = f"{os.getpid()}-{time.monotonic_ns()}"
    logger = _logger()
    worker: FitWorker | None = POOL.take(guards.workers, module)
    try:
        for request in requests:
            if worker is None:
                worker = FitWorker(guards.workers, module)
            first = worker.context_key != context_key
            message = cloudpickle.dumps(("fit", context_key, context if first else None, request))
            answer = worker.run(message, guards)
            worker.context_key = context_key
            if not worker.alive():
                worker.stop()
                worker = None
            elif reason := recycle_reason(worker, guards):
                rss = worker.rss() or 0
                worker.stop()
                POOL.replaced += 1
                logger.info(
                    "fit worker %d replaced %s; RSS %s", worker.pid, reason, format_bytes(rss)
                )
                worker = None
            yield answer
    finally:
        POOL.give_back(worker)


def train_in_workers(
    dataset: DatasetHandle,
    folds: list[Fold],
    jobs: list[FitJob],
    run_seed: int,
    source: ModelSource,
    scorers: list[ScorerSpec] | None,
    guards: FitGuards,
) -> list[FitResult]:
    """Each job one fit in a guarded worker (guarded_answers), in order. A fit stopped by a
    guard, or whose worker died, is a failed record naming the reason (and a warning in the
    task run's log); a fit's own error is a failed record too, or raised with `fail_fast`."""
    context = (dataset, folds, run_seed, source, scorers)
    logger = _logger()
    results = []
    answers = guarded_answers(jobs, context, guards)
    try:
        for job, answer in zip(jobs, answers, strict=True):
            kind = answer[0]
            if kind == "done":
                results.append(answer[1])
            elif kind == "error":
                if guards.fail_fast:
                    raise pickle.loads(answer[1]) if answer[1] else RuntimeError(answer[2])
                results.append(_failed(job, folds, answer[2]))
            else:
                logger.warning("fit %s stopped: %s", _fit_name(job), answer[1])
                results.append(_failed(job, folds, f"{FitStopped.__name__}: {answer[1]}"))
    finally:
        answers.close()  # the leased worker goes back to the pool
    return results


def _failed(job: FitJob, folds: list[Fold], message: str) -> FitResult:
    (record,) = failed_results([job], folds, RuntimeError())
    return record.model_copy(update={"error": message})


def _fit_name(job: FitJob) -> str:
    params = ", ".join(f"{key}={value}" for key, value in sorted(job.params.items()))
    return f"(combination {job.combination}{': ' + params if params else ''}, fold {job.fold})"
