"""Which task runner each setting builds, and how Dask workers get their TF thread counts."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.runtime import runners


def test_threads_is_a_thread_pool_of_the_run_s_workers():
    runner = runners.task_runner_for("threads", 3)
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3


def test_dask_with_an_address_connects_and_exports_nothing(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    runner = runners.task_runner_for("dask", 2, "tcp://10.0.0.5:8786")
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address == "tcp://10.0.0.5:8786" and not runner.cluster_kwargs
    assert "PREFECT_API_URL" not in os.environ


def test_a_local_cluster_has_one_thread_per_worker_and_tf_sized_to_its_share(monkeypatch):
    for name in runners.TF_THREAD_VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(runners, "usable_cores", lambda: 8)
    kwargs = runners.local_cluster_kwargs(2)
    assert kwargs["n_workers"] == 2 and kwargs["threads_per_worker"] == 1 and kwargs["processes"]
    assert kwargs["env"] == {"TF_NUM_INTRAOP_THREADS": "4", "TF_NUM_INTEROP_THREADS": "4"}
    # More workers than cores: each still gets one thread.
    assert runners.local_cluster_kwargs(16)["env"]["TF_NUM_INTRAOP_THREADS"] == "1"


def test_thread_counts_already_in_the_environment_win(monkeypatch):
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "")
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS")  # restored (absent) after the test
    monkeypatch.setattr(runners, "usable_cores", lambda: 2)
    env = runners.local_cluster_kwargs(2)["env"]
    assert env == {"TF_NUM_INTRAOP_THREADS": "3", "TF_NUM_INTEROP_THREADS": "1"}
    runners.dask_setup(SimpleNamespace(state=SimpleNamespace(nthreads=2)))
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "3"
    assert os.environ["TF_NUM_INTEROP_THREADS"] == "2"


@pytest.mark.parametrize("before", [None, "http://127.0.0.1:1/api"])
def test_the_exported_api_url_is_restored_after_the_runner(monkeypatch, before):
    monkeypatch.setattr(
        runners, "task_runner_for", lambda *args: _Exporting("http://127.0.0.1:2/api")
    )
    if before is None:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
    else:
        monkeypatch.setenv("PREFECT_API_URL", before)
    with runners.running_task_runner("processes", 2):
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:2/api"
    assert os.environ.get("PREFECT_API_URL") == before


class _Exporting:
    """Stands in for a runner whose construction exported the API URL for its workers."""

    def __init__(self, url: str):
        os.environ["PREFECT_API_URL"] = url

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None


class _Workers:
    """Answers `client.run(os.getenv, "PREFECT_API_URL")` like a Dask client would."""

    def __init__(self, urls: dict[str, str | None]):
        self.urls = urls

    def run(self, function, name):
        assert (function, name) == (os.getenv, "PREFECT_API_URL")
        return self.urls


def test_workers_on_another_api_are_named(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ours = "http://10.0.0.1:4200/api"
    workers = _Workers({"tcp://10.0.0.7:1": ours, "tcp://10.0.0.8:1": None})
    with temporary_settings({PREFECT_API_URL: ours}):
        problems = runners.warn_about_workers_api(workers)
    assert len(problems) == 1 and "tcp://10.0.0.8:1" in problems[0]


def test_the_embedded_api_cannot_be_shared_with_a_separate_cluster():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        problems = runners.warn_about_workers_api(_Workers({"tcp://10.0.0.7:1": None}))
    assert len(problems) == 1 and "embedded API" in problems[0]


def test_a_pool_worker_leaves_ctrl_c_to_foldflow():
    """SIGINT to the process group reaches the workers of `--runner processes` too: they
    ignore it (foldflow prints the last line, then its watchdog stops them), instead of each
    printing a KeyboardInterrupt traceback after foldflow's line (issue 27)."""
    import multiprocessing
    import os
    import signal
    from concurrent.futures import ProcessPoolExecutor

    from flows.runtime.lifecycle import leave_ctrl_c_to_foldflow

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, spawn, initializer=leave_ctrl_c_to_foldflow) as pool:
        worker = pool.submit(os.getpid).result()
        os.kill(worker, signal.SIGINT)
        assert pool.submit(os.getpid).result() == worker  # still there, nothing printed
