"""A named run claims its folder as it starts, and a folder stays marked INCOMPLETE until its
run has written everything (issue 27): a clash is refused before any training, and a run
stopped during its aggregation never leaves a folder that looks finished."""

import subprocess
import sys

import pytest

from tasks.config import RunSettings
from tasks.errors import ConfigError
from tasks.results import run_folder
from tasks.results.run_folder import (
    INCOMPLETE_MARKER,
    RUN_MARKER,
    check_run_destination,
    claim_run_folder,
    mark_run_complete,
    reserve_run_destination,
)


@pytest.fixture(autouse=True)
def no_reservations_left(monkeypatch):
    monkeypatch.setattr(run_folder, "_reserved_here", set())


def named(tmp_path, name="nightly", **settings) -> RunSettings:
    return RunSettings(output_dir=str(tmp_path / "runs"), run_name=name, **settings)


def claimed_by_another_process(run_dir, process: subprocess.Popen) -> None:
    """The folder as another foldflow process leaves it once it has claimed it."""
    import psutil

    run_dir.mkdir(parents=True)
    started = psutil.Process(process.pid).create_time()
    (run_dir / RUN_MARKER).write_text(
        f"{run_folder.socket.gethostname()} {process.pid} {started:.3f}\n"
    )
    (run_dir / INCOMPLETE_MARKER).write_text(run_folder.INCOMPLETE_TEXT)


def stopped(run_dir) -> None:
    """The folder's claim as a process that has exited leaves it."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (run_dir / RUN_MARKER).write_text(f"{run_folder.socket.gethostname()} {gone} 1.000\n")


def test_a_folder_says_incomplete_until_its_run_has_written_everything(tmp_path):
    run_dir = claim_run_folder(tmp_path / "runs" / "a", overwrite=False)
    (run_dir / "cv_results.csv").write_text("written before Ctrl-C")
    with pytest.raises(ConfigError, match="belongs to a run in progress"):
        check_run_destination(named(tmp_path, "a"))  # this process is still writing it
    stopped(run_dir)  # Ctrl-C during the aggregation
    assert "--overwrite" in (run_dir / INCOMPLETE_MARKER).read_text()
    with pytest.raises(ConfigError, match="holds an incomplete run .*--overwrite"):
        check_run_destination(named(tmp_path, "a"))
    mark_run_complete(run_dir)
    assert not (run_dir / INCOMPLETE_MARKER).exists()
    with pytest.raises(ConfigError, match="already holds a run"):
        check_run_destination(named(tmp_path, "a"))


def test_a_named_run_claims_its_folder_as_it_starts_and_keeps_it_at_the_end(tmp_path):
    reserve_run_destination(named(tmp_path))
    run_dir = tmp_path / "runs" / "nightly"
    assert (run_dir / INCOMPLETE_MARKER).exists()
    reserve_run_destination(named(tmp_path))  # prepare_data again in the same run: still ours
    assert claim_run_folder(run_dir, overwrite=False) == run_dir  # the flow's end: taken as is
    with pytest.raises(ConfigError, match="belongs to a run in progress"):
        claim_run_folder(run_dir, overwrite=False)  # a second run of the same process


def test_a_second_run_of_the_same_name_is_refused_while_the_first_runs(tmp_path):
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claimed_by_another_process(tmp_path / "runs" / "nightly", first)
        for check in (check_run_destination, reserve_run_destination):
            with pytest.raises(ConfigError, match=f"run in progress \\(process {first.pid}\\)"):
                check(named(tmp_path))
    finally:
        first.kill()
        first.wait()
    # the first run was stopped before writing anything: its claim is taken over
    reserve_run_destination(named(tmp_path))
    assert (tmp_path / "runs" / "nightly" / INCOMPLETE_MARKER).exists()


def test_overwrite_does_not_clear_the_old_run_before_the_new_one_has_results(tmp_path):
    run_dir = claim_run_folder(tmp_path / "runs" / "nightly", overwrite=False)
    (run_dir / "best_model.keras").write_text("old")
    mark_run_complete(run_dir)
    reserve_run_destination(named(tmp_path, overwrite=True))
    assert (run_dir / "best_model.keras").read_text() == "old"


def test_a_full_disk_names_the_run_folder_and_undoes_the_claim(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(full)]).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        (full / "filler").write_bytes(b"x" * 4096)  # the disk is full now
        with pytest.raises(OSError, match="No space left on device") as refused:
            claim_run_folder(full / "runs" / "a", overwrite=False)
        assert refused.value.filename == str(full / "runs" / "a" / RUN_MARKER)
        assert not (full / "runs" / "a").exists()
    finally:
        subprocess.run(["umount", str(full)], check=True)
