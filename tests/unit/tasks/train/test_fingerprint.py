"""The fit cache's code fingerprint covers every module that can shape a result."""

import shutil
import subprocess
import sys

from tasks.config import PROJECT_ROOT
from tasks.train.fingerprint import (
    FINGERPRINTED_PACKAGES,
    code_fingerprint,
    fingerprint_of,
    source_files,
)

# Loads every entry point (CLI, Python API, the flows) and the training dispatch with both
# engines, then prints the files of every module that ended up loaded.
TRAINING_PATH = """
import sys
import flows.cli, flows.cv, flows.grid_search, flows.search, flows.stages, foldflow
import tasks.train.dispatch, tasks.train.fast.trainer
print("\\n".join(sorted(
    getattr(module, "__file__", None) or "" for module in list(sys.modules.values())
)))
"""


def test_every_project_module_loaded_by_the_entry_points_is_fingerprinted():
    loaded = subprocess.run(
        [sys.executable, "-c", TRAINING_PATH],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    project = {
        line
        for line in loaded
        if line.startswith(str(PROJECT_ROOT)) and "/.venv/" not in line and "/tests/" not in line
    }
    covered = {str(path) for path in source_files()}
    assert project, "no project module was loaded: the probe is broken"
    assert project <= covered, f"modules outside the fingerprint: {sorted(project - covered)}"
    assert {"train", "data", "model"} <= {part for path in project for part in path.split("/")}


def test_a_change_to_any_source_file_changes_the_fingerprint(tmp_path):
    for package in FINGERPRINTED_PACKAGES:
        shutil.copytree(
            PROJECT_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("_data")
        )
    before = fingerprint_of(tmp_path, "libs")
    files = source_files(tmp_path)
    assert len(files) > 40
    seen = {before}
    for path in files:
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        changed = fingerprint_of(tmp_path, "libs")
        assert changed not in seen, f"editing {path.relative_to(tmp_path)} kept a fingerprint"
        seen.add(changed)
        path.write_bytes(original)
    assert fingerprint_of(tmp_path, "libs") == before
    # A renamed module with the same bytes is another program (its imports now differ).
    first = files[0]
    first.rename(first.with_name("renamed_" + first.name))
    assert fingerprint_of(tmp_path, "libs") != before


def test_library_versions_are_part_of_the_fingerprint(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.py").write_text("x = 1\n")
    assert fingerprint_of(tmp_path, "keras=3.15") != fingerprint_of(tmp_path, "keras=3.16")


def test_the_checkouts_fingerprint_is_stable_within_a_process():
    assert code_fingerprint() == code_fingerprint()
    assert len(code_fingerprint()) == 16
