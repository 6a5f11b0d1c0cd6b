"""The grid flow on real Dask clusters (`dask scheduler` + `dask worker` processes on 127.0.0.1).

One `prefect server` for the module; every fit reports to it from whichever process ran it.
Every process a test starts is stopped by PID (its process group) on the way out, pass or fail.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import copy_context
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName
from prefect.context import refresh_global_settings_context
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.grid_search import grid_search_flow
from flows.runtime.runners import TF_THREAD_VARIABLES, warn_about_workers_api
from flows.runtime.stack import stack_environment, start_server, stop, wait_for_health
from tasks.config import GridSearchConfig, GridSpec, RunSettings
from tests.conftest import PIMA_CSV
from tests.e2e.conftest import REPO, free_port

pytestmark = pytest.mark.e2e

# A user's own function with Dropout and unseeded initializers (models/dropout.py): seeds come
# from (run seed, arguments, fold), set before the function is called, so its fits give the
# same scores whatever thread, process or Dask worker ran them; shipped by value to workers
# that cannot read its file.
DROPOUT = f"{REPO / 'models' / 'dropout.py'}:create_model"
GRID = {"optimizer": ["rmsprop", "adam"], "dropout": [0.3], "epochs": [1], "batch_size": [64]}
N_FITS = 2 * 3  # combinations x folds
SCORES = ["params", "mean_test_score", "std_test_score", "rank_test_score"] + [
    f"split{k}_test_score" for k in range(3)
]
DASK = str(Path(sys.executable).with_name("dask"))
WORKER_USER = "foldflow-worker"  # an unprivileged account for workers that share no files


@dataclass
class Api:
    url: str
    environment: dict[str, str]

    @contextmanager
    def client(self):
        from prefect.client.orchestration import get_client

        with temporary_settings(updates={PREFECT_API_URL: self.url}):
            with get_client(sync_client=True) as client:
                yield client


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Api]:
    """`prefect server start` on a free port with its own PREFECT_HOME; the tests' API."""
    home = tmp_path_factory.mktemp("prefect")
    environment = stack_environment("127.0.0.1", free_port(), auth_string=None)
    environment.update({"PREFECT_HOME": str(home / "home"), "TF_CPP_MIN_LOG_LEVEL": "2"})
    # Without the tests' one-thread setting (tests/conftest.py): the Dask workers started with
    # this environment must get their TensorFlow threads from the preload, as users' do.
    for name in TF_THREAD_VARIABLES:
        environment.pop(name, None)
    url = environment["PREFECT_API_URL"]
    server = start_server(environment, log_path=home / "server.log")
    try:
        wait_for_health(url, process=server)
        # Prefect reads the environment once, at import; threads it starts (the process pool's
        # message forwarder) see only the global settings, so refresh those too.
        with pytest.MonkeyPatch.context() as patch, temporary_settings({PREFECT_API_URL: url}):
            patch.setenv("PREFECT_API_URL", url)
            refresh_global_settings_context()
            try:
                yield Api(url=url, environment=environment)
            finally:
                # Send buffered logs and events while the server is still up.
                APILogWorker.drain_all()
                EventsWorker.drain_all()
                patch.undo()
                refresh_global_settings_context()
    finally:
        stop(server)


@dataclass
class Cluster:
    address: str
    workers: dict[str, subprocess.Popen]  # by worker name


@dataclass
class Stranger:
    """Who the workers run as when they must not see the flow's files, their own folder, and
    a Python they can start (a venv whose interpreter sits in root's home is not one)."""

    account: pwd.struct_passwd
    home: Path
    python: str

    def command(self, *arguments: str) -> list[str]:
        """`dask worker ARGUMENTS` as this user; setpriv execs, so the PID is the worker's."""
        uid, gid = self.account.pw_uid, self.account.pw_gid
        setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        return [*setpriv, self.python, "-m", "distributed.cli.dask_worker", *arguments]

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        # This checkout's code and the venv's packages, both readable by anyone.
        paths = [str(REPO), sysconfig.get_paths()["purelib"]]
        return {
            **base,
            "HOME": str(self.home),
            "PREFECT_HOME": str(self.home / ".prefect"),
            "PYTHONPATH": os.pathsep.join(paths),
        }


@contextmanager
def dask_cluster(
    api: Api, n_workers: int, logs: Path, stranger: Stranger | None = None
) -> Iterator[Cluster]:
    """`dask scheduler` and `dask worker --nthreads 1` processes on 127.0.0.1.

    The workers get the Prefect API from their environment, the project from this venv's
    editable install, and TF thread sizing from `--preload flows.runtime.runners`; with a `stranger`
    they run as that user, in its folder.
    """
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes: list[subprocess.Popen] = []

    def spawn(*arguments: str, log: str) -> subprocess.Popen:
        as_stranger = stranger is not None and arguments[0] == "worker"
        command = stranger.command(*arguments[1:]) if as_stranger else [DASK, *arguments]
        environment = stranger.environment(api.environment) if as_stranger else api.environment
        with open(logs / f"{log}.log", "ab") as output:
            process = subprocess.Popen(
                command, env=environment,
                cwd=stranger.home if as_stranger else logs, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        processes.append(process)
        return process

    try:
        spawn("scheduler", "--host", "127.0.0.1", "--port", str(port),
              "--dashboard-address", ":0", log="scheduler")  # fmt: skip
        workers = {
            f"w{index}": spawn(
                "worker",
                address,
                "--name",
                f"w{index}",
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--preload",
                "flows.runtime.runners",
                log=f"w{index}",
            )  # fmt: skip
            for index in range(n_workers)
        }
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=120)
        yield Cluster(address=address, workers=workers)
    finally:
        for process in reversed(processes):
            stop(process)


def grid_config(tmp_path: Path, name: str, **run) -> GridSearchConfig:
    return GridSearchConfig(
        model=DROPOUT,
        grid=GridSpec.from_mapping(GRID),
        run=RunSettings(
            source=str(PIMA_CSV),
            cache_dir=str(tmp_path / name / "cache"),
            output_dir=str(tmp_path / "runs"),
            run_name=name,
            n_splits=3,
            engine="reference",
            fresh=True,
            **run,
        ),  # fmt: skip
        refit=False,
    )


def completed_scores(state) -> pd.DataFrame:
    """cv_results of a COMPLETED run with every fit present and none failed."""
    assert state.is_completed(), state
    summary = state.result()
    assert (summary.n_fits, summary.n_failed_fits) == (N_FITS, 0)
    return pd.read_parquet(Path(summary.output_dir) / "cv_results.parquet")[SCORES]


@pytest.fixture(scope="module")
def threads_scores(api, tmp_path_factory) -> pd.DataFrame:
    """The reference: the same grid and seed on the default thread runner."""
    return completed_scores(
        grid_search_flow(
            grid_config(tmp_path_factory.mktemp("threads"), "threads"), return_state=True
        )
    )


def test_processes_give_the_same_cv_results_as_threads(threads_scores, tmp_path):
    """The user's Dropout function on Prefect's process pool: the threads' scores exactly."""
    state = grid_search_flow(
        grid_config(tmp_path, "processes", runner="processes"), return_state=True
    )
    pd.testing.assert_frame_equal(completed_scores(state), threads_scores)


def test_an_existing_dask_cluster_without_the_flows_files_gives_the_same_cv_results(
    api, threads_scores, tmp_path, stranger
):
    """No shared filesystem: data, fit cache and run folder sit in a folder only the flow's
    user may read (mode 700); the workers, another user in another folder, get what a fit
    needs by value. Any path that reaches a worker fails the run."""
    from distributed import Client

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    project.chmod(0o700)
    data = shutil.copy(PIMA_CSV, project / "data" / "pima.csv")
    with dask_cluster(api, 2, tmp_path, stranger) as cluster:
        with Client(cluster.address) as client:
            # The premise: the workers are another user, elsewhere, and cannot read the project.
            assert set(client.run(os.getuid).values()) == {stranger.account.pw_uid}
            assert set(client.run(os.getcwd).values()) == {str(stranger.home)}
            assert set(client.run(os.access, str(project), os.R_OK).values()) == {False}
        config = grid_config(tmp_path, "dask", runner="dask")
        run = config.run.model_copy(
            update={
                "dask_address": cluster.address,
                "source": str(data),
                "cache_dir": str(project / "data" / "cache"),
                "output_dir": str(project / "runs"),
            }
        )
        state = grid_search_flow(config.model_copy(update={"run": run}), return_state=True)
        with Client(cluster.address) as client:
            # The check the runner makes: workers report to this API, not another one.
            assert warn_about_workers_api(client) == []
            # `--preload flows.runtime.runners` sized TF to the worker's one thread.
            assert set(client.run(os.getenv, "TF_NUM_INTRAOP_THREADS").values()) == {"1"}
            with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
                assert len(warn_about_workers_api(client)) == 2
    pd.testing.assert_frame_equal(completed_scores(state), threads_scores)
    assert Path(state.result().output_dir).parent == project / "runs"


@pytest.fixture
def stranger(tmp_path_factory) -> Iterator[Stranger]:
    """The unprivileged WORKER_USER (created once if missing) and a folder of its own."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: Dask workers run as {WORKER_USER} (useradd, setpriv)")
    try:
        account = pwd.getpwnam(WORKER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             WORKER_USER],
            check=True, capture_output=True,
        )  # fmt: skip
        account = pwd.getpwnam(WORKER_USER)
    home = Path(tempfile.mkdtemp(prefix="foldflow-worker-"))
    os.chown(home, account.pw_uid, account.pw_gid)
    try:
        yield Stranger(account=account, home=home, python=python_for(account))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def python_for(account: pwd.struct_passwd) -> str:
    """This Python, or the system's one of the same version, whichever the user can start and
    restart (multiprocessing re-executes it: Dask's nanny does)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    restart = "import os, sys; os.execv(sys.executable, [sys.executable, '-c', ''])"
    for candidate in (str(Path(sys.executable).resolve()), f"/usr/bin/python{version}"):
        started = subprocess.run(
            ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
             "--clear-groups", candidate, "-c", restart],
            capture_output=True, check=False, cwd="/",
        )  # fmt: skip
        if started.returncode == 0:
            return candidate
    pytest.fail(f"{account.pw_name} can start no Python {version} (tried {sys.executable})")


def test_a_worker_lost_mid_run_is_replaced_and_every_fit_appears_once(
    api, threads_scores, tmp_path
):
    from distributed import Client

    flow_run_name = f"lost-worker-{uuid.uuid4().hex[:8]}"
    with dask_cluster(api, 2, tmp_path) as cluster, Client(cluster.address) as client:
        config = grid_config(tmp_path, "lost-worker", runner="dask", dask_address=cluster.address)
        victim = worker_address(client, "w0")
        flow = grid_search_flow.with_options(flow_run_name=flow_run_name)
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            running = pool.submit(copy_context().run, flow, config, return_state=True)

            def victim_is_fitting() -> bool:
                fits = fit_states(api, flow_run_name)
                return "Running" in fits and bool(client.processing([victim])[victim])

            wait_for(victim_is_fitting, running.done, what="a fit running while w0 holds one")
            held = client.processing([victim])[victim]
            os.killpg(cluster.workers["w0"].pid, signal.SIGKILL)  # nanny and worker
            fits_at_kill = fit_states(api, flow_run_name)
            state = running.result(timeout=240)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # never block the cluster's teardown
        assert victim not in client.scheduler_info()["workers"]
    assert held, "the lost worker held no task: nothing had to be rescheduled"
    assert fits_at_kill.count("Completed") < N_FITS
    pd.testing.assert_frame_equal(completed_scores(state), threads_scores)
    # One train_fold task run per (combination, fold), each completed once.
    with api.client() as prefect:
        task_runs = train_fold_runs(prefect, flow_run_name)
    assert len(task_runs) == N_FITS
    assert len({run.name for run in task_runs}) == N_FITS
    assert {run.state.name for run in task_runs} == {"Completed"}


def worker_address(client, name: str) -> str:
    return next(
        address
        for address, info in client.scheduler_info()["workers"].items()
        if info["name"] == name
    )


def train_fold_runs(prefect, flow_run_name: str) -> list:
    runs = prefect.read_flow_runs(
        flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[flow_run_name]))
    )
    if not runs:
        return []
    task_runs = prefect.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id]))
    )
    return [run for run in task_runs if run.name.startswith("train_fold")]


def fit_states(api: Api, flow_run_name: str) -> list[str]:
    with api.client() as prefect:
        return [run.state.name for run in train_fold_runs(prefect, flow_run_name) if run.state]


def wait_for(
    condition: Callable[[], bool], gave_up: Callable[[], bool], what: str, timeout: float = 180
) -> None:
    """Poll `condition` until it holds; fail if `gave_up` first (e.g. the run already ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if gave_up():
            raise AssertionError(f"the run ended before {what}")
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout:.0f} s")
