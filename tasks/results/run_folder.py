"""One run per run folder: a reused name is refused, or replaced whole on request.

A second run written into a finished run's folder would replace `cv_results` and the summary
yet leave the first run's `best_model.*`: a folder that mixes two runs. So a run folder that
already holds files is refused before any training (and again when it is created), unless
`overwrite` asks for it to be cleared first. Folders foldflow creates carry a marker file;
`overwrite` clears only those, never a folder of someone else's files that happens to share
the name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tasks.config import RunSettings
from tasks.dataset_spec import safe_name
from tasks.errors import ConfigError

RUN_MARKER = ".foldflow-run"


def check_output_dir(output_root: Path) -> None:
    """The output folder must be a folder, or creatable, and writable; nothing is created."""
    existing = output_root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = (
            "is a file" if existing == output_root else f"cannot be created: {existing} is a file"
        )
        raise ConfigError(f"output folder {output_root} {where}; choose a folder (--output-dir)")
    try:
        # An unnamed temporary file: the same test the run's own writes will face, root or not.
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise ConfigError(
            f"output folder {output_root} cannot be written: creating a file in {existing} "
            f"failed ({error.strerror or error}); choose another folder (--output-dir)"
        ) from None


def run_folder_path(output_root: Path, name: str) -> Path:
    """`output_root/name`, refused if the name could steer it elsewhere."""
    output_root = output_root.resolve()
    run_dir = (output_root / safe_name(name, "run name")).resolve()
    if output_root not in run_dir.parents:
        raise ConfigError(f"run folder {run_dir} is outside {output_root}")
    return run_dir


def check_run_folder(run_dir: Path, overwrite: bool) -> None:
    """Refuse a run folder that already holds files, unless `overwrite` may clear it."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} is a file; choose another --run-name")
    if not any(run_dir.iterdir()):
        return
    if not overwrite:
        raise ConfigError(
            f"run folder {run_dir} already holds a run: choose another --run-name, or pass "
            "--overwrite to replace it (its files are removed, none are mixed with the new run's)"
        )
    if not (run_dir / RUN_MARKER).is_file():
        raise ConfigError(
            f"run folder {run_dir} was not written by foldflow (no {RUN_MARKER} in it): "
            "--overwrite clears only foldflow's own run folders; choose another --run-name"
        )


def claim_run_folder(run_dir: Path, overwrite: bool) -> Path:
    """Create the run folder for this run alone: checked again, cleared if `overwrite`."""
    check_output_dir(run_dir.parent)
    check_run_folder(run_dir, overwrite)
    if run_dir.exists() and any(run_dir.iterdir()):
        _clear(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        # Exclusive creation: of two runs racing for one name, only one gets it; 0o666 less
        # the umask, like every file foldflow writes.
        os.close(os.open(run_dir / RUN_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        raise ConfigError(f"run folder {run_dir} already holds a run (claimed meanwhile)") from None
    return run_dir


def _clear(run_dir: Path) -> None:
    """Move the old run aside in one rename, then delete it: no old file stays in place."""
    aside = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.replaced-"))
    os.replace(run_dir, aside / run_dir.name)
    shutil.rmtree(aside)


def check_run_destination(run: RunSettings) -> None:
    """Before any training: the output folder is usable and a named run folder is free."""
    output_root = run.resolve(run.output_dir)
    check_output_dir(output_root)
    if run.run_name is not None:
        check_run_folder(run_folder_path(output_root, run.run_name), run.overwrite)
