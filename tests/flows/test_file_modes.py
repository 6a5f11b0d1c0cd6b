"""Every file a run leaves (outputs, dataset cache, the fit cache) follows the umask,
so a team's shared output folder stays readable to the team."""

import os
import stat
from pathlib import Path

from flows.grid_search import grid_search_flow
from tasks.config import GridSearchConfig, GridSpec, RunSettings


def test_a_grid_run_under_umask_002_leaves_only_group_readable_files(run_settings):
    config = GridSearchConfig(
        grid=GridSpec.from_mapping({"epochs": [1], "batch_size": [64]}),
        run=RunSettings(**run_settings, n_splits=2, run_name="shared", fresh=True),
        refit=True,
    )
    previous = os.umask(0o002)
    try:
        summary = grid_search_flow(config)
    finally:
        os.umask(previous)
    written = {
        path: stat.S_IMODE(path.stat().st_mode)
        for folder in (run_settings["output_dir"], run_settings["cache_dir"])
        for path in Path(folder).rglob("*")
        if path.is_file()
    }
    names = {path.name for path in written}
    assert {"best_model.keras", "cv_results.parquet", "summary.txt"} <= names
    assert any(path.parent.parent.name == "fits" for path in written)  # the fit cache
    assert Path(summary.output_dir).is_dir()
    assert {path.name: oct(mode) for path, mode in written.items() if mode != 0o664} == {}
