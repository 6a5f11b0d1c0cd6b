"""The guarded worker pool (tasks.train.fit_workers) with real worker processes whose fits are
instructions (tiny_fit_worker: allocate, sleep, exit), and the reference-group planning."""

import os
import queue
import time
from pathlib import Path

import pytest

from tasks.records import FitJob
from tasks.train.fit_workers import POOL, FitGuards, guarded_answers, reference_groups
from tests.unit.tasks.train.tiny_fit_worker import __name__ as TINY

MB = 2**20


def answers(requests, **guards):
    settings = {"max_memory": 200 * MB, "recycle_above": 10**12, **guards}
    return list(guarded_answers(requests, "context", FitGuards(**settings), module=TINY))


def test_a_worker_is_replaced_after_recycle_after_fits():
    replaced = POOL.replaced
    got = answers([{"value": n} for n in range(5)], recycle_after_fits=2)
    assert [answer[1]["value"] for answer in got] == [0, 1, 2, 3, 4]
    pids = [answer[1]["pid"] for answer in got]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert POOL.replaced - replaced == 2
    assert all(answer[1]["context"] == "context" for answer in got)  # sent to each new worker


def test_a_worker_is_replaced_once_it_grew_past_recycle_above():
    got = answers(
        [{"allocate": 60 * MB, "keep": True}, {"value": 1}, {"value": 2}],
        recycle_above=50 * MB,
    )
    assert got[0][1]["pid"] != got[1][1]["pid"] == got[2][1]["pid"]


def test_a_fit_over_max_memory_is_stopped_and_the_next_fit_runs():
    started = time.monotonic()
    got = answers([{"allocate": 2000 * MB, "sleep": 30}, {"value": "after"}], max_memory=100 * MB)
    assert got[0][0] == "stopped"
    assert "more than max_memory (--max-memory) 100 MB" in got[0][1]
    assert got[1] == ("done", got[1][1]) and got[1][1]["value"] == "after"
    assert time.monotonic() - started < 20


def test_a_fit_past_fit_timeout_is_stopped_and_the_next_fit_runs():
    started = time.monotonic()
    got = answers([{"sleep": 600}, {"value": "after"}], fit_timeout=0.5)
    assert got[0] == (
        "stopped",
        "the fit ran longer than fit_timeout (--fit-timeout) 0.5 s and was stopped",
    )
    assert got[1][1]["value"] == "after"
    assert time.monotonic() - started < 20


def test_a_worker_that_dies_is_a_failed_fit_and_replaced():
    got = answers([{"exit": 3}, {"value": "after"}])
    assert got[0] == ("died", "the fit's worker process ended during the fit (exit code 3)")
    assert got[1][1]["value"] == "after"


def test_a_fits_own_error_comes_back_and_the_worker_carries_on():
    import pickle

    got = answers([{"raise": "bad"}, {"value": 1}])
    assert got[0][0] == "error" and got[0][2] == "ValueError: bad"
    assert str(pickle.loads(got[0][1])) == "bad"
    assert got[1][0] == "done"


def job(combination, fold, network=None):
    return FitJob.model_construct(combination=combination, fold=fold, network=network, params={})


@pytest.mark.parametrize(
    ("fits", "workers", "sizes"),
    [
        (10, 2, [1] * 10),  # small runs: one fit per task run, for balance
        (40, 2, [3] * 8 + [2] * 8),  # eight task runs per worker, near-equal
        (2000, 2, [20] * 100),  # at most MAX_GROUP_FITS per task run
    ],
)
def test_reference_fits_are_gathered_into_fewer_task_runs(fits, workers, sizes):
    singles = [[job(n // 3, n % 3)] for n in range(fits)]
    fast = [job(900, 0, network="stacked"), job(901, 0, network="stacked")]
    groups = reference_groups([fast, *singles], workers)
    assert groups[0] == fast
    assert [len(group) for group in groups[1:]] == sizes
    assert [j for group in groups[1:] for j in group] == [j for (j,) in singles]


def test_a_worker_left_mid_fit_is_stopped_not_lent_again():
    """A task run that ends while its fit runs (Ctrl-C) must not hand the next one a worker
    whose answer is still to come."""
    import cloudpickle

    worker = POOL.take(1, TINY)
    worker.wait_ready()
    worker.send.send_bytes(cloudpickle.dumps(("fit", "key", "context", {"sleep": 600})))
    worker.busy = True  # what FitWorker.run sets until the answer is read
    POOL.give_back(worker)
    assert not worker.alive() and worker not in POOL.idle


def test_a_users_script_without_a_main_guard_is_not_run_again_by_the_workers(tmp_path):
    """Workers are forked from a fork server; spawned processes import the parent's __main__
    again, so a script calling foldflow at top level would run once more in every worker. And
    a `tasks.py` in the working folder (invoke's, say) must not shadow foldflow's `tasks` in
    the fork server (`python -c` puts the working folder first on sys.path)."""
    import subprocess
    import sys

    marker = tmp_path / "runs.txt"
    script = tmp_path / "scripts" / "user_script.py"
    script.parent.mkdir()
    script.write_text(
        f"with open({str(marker)!r}, 'a') as runs:\n"
        "    runs.write('ran\\n')\n"
        "from tasks.train.fit_workers import FitGuards, guarded_answers\n"
        f"got = list(guarded_answers([{{'value': 1}}], 'c', FitGuards(), module={TINY!r}))\n"
        "print(got[0][0], got[0][1]['value'])\n"
    )
    working_folder = tmp_path / "project"
    working_folder.mkdir()
    (working_folder / "tasks.py").write_text('raise SystemExit("the folder\'s tasks.py")\n')
    root = Path(__file__).resolve().parents[4]
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(root)}, cwd=working_folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["done", "1"]
    assert marker.read_text() == "ran\n"


def test_a_worker_runs_with_the_environment_of_its_start_not_the_fork_servers(monkeypatch):
    monkeypatch.setenv("FOLDFLOW_TEST_SETTING", "first")
    worker = POOL.take(3, TINY)  # a sizing no other test leases: a new worker
    try:
        import cloudpickle

        worker.wait_ready()
        worker.busy = False
        answer = worker.run(
            cloudpickle.dumps(("fit", "k", "c", {"environ": "FOLDFLOW_TEST_SETTING"})), FitGuards()
        )
        assert answer[1]["environ"] == "first"
    finally:
        worker.stop()
    monkeypatch.setenv("FOLDFLOW_TEST_SETTING", "second")
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")  # the default, as when the user sets none
    got = answers([{"environ": "FOLDFLOW_TEST_SETTING"}, {"environ": "TF_NUM_INTRAOP_THREADS"}])
    assert got[0][1]["environ"] == "second"
    assert got[1][1]["environ"] == str(max(1, len(os.sched_getaffinity(0))))


def answer_in_this_process(results) -> None:
    results.put(answers([{"value": "from a daemon"}])[0])


def test_a_daemonic_process_such_as_a_dask_worker_gets_its_fit_workers():
    """multiprocessing refuses children to daemonic processes (Dask's workers are)."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    process = spawn.Process(target=answer_in_this_process, args=(results,), daemon=True)
    process.start()
    deadline = time.monotonic() + 300
    try:
        while True:
            try:
                kind, value = results.get(timeout=1)
                break
            except queue.Empty:
                assert process.is_alive(), f"it ended with exit code {process.exitcode}"
                assert time.monotonic() < deadline
    finally:
        process.join(timeout=60)
    assert kind == "done" and value["value"] == "from a daemon"


def test_the_fork_server_stops_once_no_worker_lives_and_starts_again_when_needed():
    """It holds TensorFlow (~0.7 GB): a notebook's idle session must not keep it."""
    import psutil

    from tasks.train import fit_workers

    worker = POOL.take(1, TINY)
    worker.wait_ready()
    server = fit_workers._SERVER._forkserver_pid
    assert not fit_workers.stop_server_if_unused()  # a worker lives
    POOL.give_back(worker)
    POOL.stop_all()
    assert fit_workers.stop_server_if_unused() or fit_workers._SERVER._forkserver_pid is None
    assert not psutil.pid_exists(server) or psutil.Process(server).status() == "zombie"
    assert answers([{"value": "again"}])[0][1]["value"] == "again"


def test_no_fits_start_no_worker(monkeypatch):
    """Every task run passes its reference fits, often none (the fast engine took them all):
    taking a worker for none waited for the fork server's TensorFlow import (~5 s) at the end
    of each fast task run."""
    from tasks.train import fit_workers

    def no_worker(*args, **kwargs):
        raise AssertionError("a worker was started for no fit")

    monkeypatch.setattr(fit_workers, "FitWorker", no_worker)
    monkeypatch.setattr(POOL, "idle", [])
    assert answers([]) == []
    assert fit_workers.train_in_workers(None, [], [], 7, None, None, FitGuards()) == []
