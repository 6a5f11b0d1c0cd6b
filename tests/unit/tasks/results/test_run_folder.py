"""A run folder holds one run: an existing one is refused, or replaced whole on request."""

from pathlib import Path

import pytest

from tasks.config import RunSettings
from tasks.errors import ConfigError
from tasks.results.run_folder import (
    check_output_dir,
    check_run_destination,
    check_run_folder,
    claim_run_folder,
    mark_run_complete,
)


def first_run(run_dir):
    """A folder as a finished grid search leaves it (claimed by foldflow, then written)."""
    claim_run_folder(run_dir, overwrite=False)
    for name in ("cv_results.csv", "summary.txt", "best_model.keras", "best_model.json"):
        (run_dir / name).write_text("first run")
    mark_run_complete(run_dir)
    return sorted(path.name for path in run_dir.iterdir())


def test_a_new_run_folder_is_created_and_claimed(tmp_path):
    run_dir = tmp_path / "runs" / "new"
    check_run_folder(run_dir, overwrite=False)
    assert claim_run_folder(run_dir, overwrite=False) == run_dir
    assert run_dir.is_dir()


def test_an_existing_run_folder_is_refused_and_left_as_it_was(tmp_path):
    run_dir = tmp_path / "runs" / "taken"
    before = first_run(run_dir)
    for check in (check_run_folder, claim_run_folder):
        with pytest.raises(
            ConfigError, match=f"run folder {run_dir} already holds a run.*--overwrite"
        ):
            check(run_dir, overwrite=False)
    assert sorted(path.name for path in run_dir.iterdir()) == before
    assert (run_dir / "best_model.keras").read_text() == "first run"


def test_overwrite_leaves_none_of_the_old_files(tmp_path):
    run_dir = tmp_path / "runs" / "again"
    first_run(run_dir)
    check_run_folder(run_dir, overwrite=True)
    claim_run_folder(run_dir, overwrite=True)
    assert [path.name for path in run_dir.iterdir() if not path.name.startswith(".")] == [
        "INCOMPLETE"
    ]
    assert [path.name for path in run_dir.parent.iterdir()] == ["again"]


def test_an_empty_existing_folder_is_used(tmp_path):
    run_dir = tmp_path / "runs" / "empty"
    run_dir.mkdir(parents=True)
    check_run_folder(run_dir, overwrite=False)
    claim_run_folder(run_dir, overwrite=False)


def test_overwrite_never_clears_a_folder_foldflow_did_not_write(tmp_path):
    run_dir = tmp_path / "runs" / "notes"
    run_dir.mkdir(parents=True)
    (run_dir / "thesis.tex").write_text("precious")
    for check in (check_run_folder, claim_run_folder):
        with pytest.raises(ConfigError, match="was not written by foldflow"):
            check(run_dir, overwrite=True)
    assert (run_dir / "thesis.tex").read_text() == "precious"


def test_a_second_claim_of_the_same_folder_is_refused(tmp_path):
    run_dir = tmp_path / "runs" / "race"
    claim_run_folder(run_dir, overwrite=False)
    with pytest.raises(ConfigError, match="belongs to a run in progress"):
        claim_run_folder(run_dir, overwrite=False)


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    output = tmp_path / "results.csv"
    output.write_text("a file")
    with pytest.raises(ConfigError, match=f"output folder {output} is a file"):
        check_output_dir(output)
    with pytest.raises(ConfigError, match=f"output folder {output / 'sub'} .*{output} is a file"):
        check_output_dir(output / "sub")


def test_an_unwritable_output_dir_is_refused():
    # /proc refuses new files even to root, where permission bits would not.
    with pytest.raises(ConfigError, match="output folder /proc/foldflow-runs cannot be written"):
        check_output_dir(Path("/proc/foldflow-runs"))


def test_a_missing_output_dir_is_fine_and_not_created_by_the_check(tmp_path):
    check_output_dir(tmp_path / "not" / "yet")
    assert not (tmp_path / "not").exists()


def test_run_settings_are_checked_before_any_training(tmp_path):
    first_run(tmp_path / "runs" / "named")
    settings = {"output_dir": str(tmp_path / "runs"), "run_name": "named"}
    with pytest.raises(ConfigError, match="already holds a run"):
        check_run_destination(RunSettings(**settings))
    check_run_destination(RunSettings(**settings, overwrite=True))
    check_run_destination(RunSettings(output_dir=str(tmp_path / "runs")))
    assert (tmp_path / "runs" / "named" / "best_model.keras").exists()
