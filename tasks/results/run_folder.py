"""One run per run folder: a reused name is refused, or replaced whole on request.

A second run written into a finished run's folder would replace `cv_results` and the summary
yet leave the first run's `best_model.*`: a folder that mixes two runs. So a run folder that
already holds files is refused before any training (and again when it is created), unless
`overwrite` asks for it to be cleared first. Folders foldflow creates carry a marker file;
`overwrite` clears only those, never a folder of someone else's files that happens to share
the name.

A named run claims its folder as it starts (reserve_run_destination), so a second run of the
same name is refused then, not after all its training. Until the run has written everything,
its folder holds an INCOMPLETE file (removed last, by mark_run_complete): a folder left by a
run stopped halfway (Ctrl-C during the aggregation) never looks finished, and is replaced only
on request. The marker names the process that claimed it: a folder claimed by a process that
is gone is taken over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

import psutil

from tasks.config import RunSettings
from tasks.dataset_spec import safe_name
from tasks.errors import ConfigError
from tasks.files import INCOMPLETE_MARKER

RUN_MARKER = ".foldflow-run"
INCOMPLETE_TEXT = (
    "This run has not finished, or was stopped before it did: its files may be partial "
    "(cv_results without best_model, ...). Run it again with --overwrite, or choose another "
    "--run-name.\n"
)
# Named run folders this process claimed as its runs started, not yet taken by their end,
# and the folders above each that the claim created (removed again with an unused claim).
_reserved_here: set[Path] = set()
_created_for: dict[Path, list[Path]] = {}


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


def _this_process() -> str:
    """Who claims a folder: host, process id and its start time (a reused id is not us)."""
    return f"{socket.gethostname()} {os.getpid()} {psutil.Process().create_time():.3f}\n"


def _claimed_by_a_live_process(run_dir: Path) -> str | None:
    """`process N on HOST` when the process that claimed `run_dir` still runs (or runs on
    another host, where it cannot be checked); None when it is gone or unknown."""
    try:
        host, pid, started = (run_dir / RUN_MARKER).read_text().split()
    except (OSError, ValueError):  # no marker, or an older foldflow's empty one
        return None
    if host != socket.gethostname():
        return f"process {pid} on {host}"
    try:
        alive = f"{psutil.Process(int(pid)).create_time():.3f}" == started
    except (psutil.Error, ValueError):
        alive = False
    return f"process {pid}" if alive else None


def _only_markers(run_dir: Path) -> bool:
    return {path.name for path in run_dir.iterdir()} <= {RUN_MARKER, INCOMPLETE_MARKER}


def check_run_folder(run_dir: Path, overwrite: bool) -> None:
    """Refuse a run folder that already holds files, unless `overwrite` may clear it; a run
    still writing it is refused either way."""
    if not run_dir.exists() or run_dir.resolve() in _reserved_here:
        return
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} is a file; choose another --run-name")
    if not any(run_dir.iterdir()):
        return
    if (run_dir / INCOMPLETE_MARKER).is_file():
        owner = _claimed_by_a_live_process(run_dir)
        if owner is not None and not (overwrite and _only_markers(run_dir)):
            raise ConfigError(
                f"run folder {run_dir} belongs to a run in progress ({owner}): choose another "
                "--run-name (or, if that process runs no foldflow run, pass --overwrite)"
            )
        if owner is None and _only_markers(run_dir):
            return  # claimed by a run that stopped before writing anything: taken over
        if not overwrite:
            raise ConfigError(
                f"run folder {run_dir} holds an incomplete run (stopped before it finished; "
                f"see {INCOMPLETE_MARKER} in it): pass --overwrite to replace it, or choose "
                "another --run-name"
            )
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
    """Create the run folder for this run alone: checked again, cleared if `overwrite`, and
    marked INCOMPLETE until mark_run_complete. A folder this process reserved as the run
    started is taken as it is."""
    if run_dir.resolve() in _reserved_here:
        _reserved_here.discard(run_dir.resolve())
        return run_dir
    check_output_dir(run_dir.parent)
    check_run_folder(run_dir, overwrite)
    if run_dir.exists() and any(run_dir.iterdir()):
        _clear(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        # Exclusive creation: of two runs racing for one name, only one gets it; 0o666 less
        # the umask, like every file foldflow writes.
        marker = os.open(run_dir / RUN_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        raise ConfigError(f"run folder {run_dir} already holds a run (claimed meanwhile)") from None
    try:
        with os.fdopen(marker, "w") as out:
            out.write(_this_process())
        (run_dir / INCOMPLETE_MARKER).write_text(INCOMPLETE_TEXT)
    except OSError as error:  # a full disk: the claim undone, the folder named
        for name in (INCOMPLETE_MARKER, RUN_MARKER):
            (run_dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only if nothing else is in it
        raise OSError(error.errno, error.strerror, str(run_dir / RUN_MARKER)) from None
    return run_dir


def mark_run_complete(run_dir: Path) -> None:
    """The run has written everything: its folder no longer says INCOMPLETE."""
    (Path(run_dir) / INCOMPLETE_MARKER).unlink(missing_ok=True)


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


def reserve_run_destination(run: RunSettings) -> None:
    """check_run_destination, and a named run's folder claimed now, as the run starts: a
    second run of that name is refused before its training, not after. With `overwrite` the
    old run stays until this one has results to put in its place."""
    check_run_destination(run)
    if run.run_name is None or run.overwrite:
        return
    run_dir = run_folder_path(run.resolve(run.output_dir), run.run_name)
    if run_dir in _reserved_here:
        return
    created = [folder for folder in run_dir.parents if not folder.exists()]
    claim_run_folder(run_dir, overwrite=False)
    _reserved_here.add(run_dir)
    _created_for[run_dir] = created


def release_unwritten_run_folders() -> None:
    """Folders this process claimed as its runs started and that hold nothing but the claim
    (a run refused before writing, e.g. a bad grid): removed, so that a refused run leaves
    nothing behind. A run that finished has already taken its folder (claim_run_folder)."""
    for run_dir in list(_reserved_here):
        _reserved_here.discard(run_dir)
        created = _created_for.pop(run_dir, [])
        if run_dir.is_dir() and _only_markers(run_dir):
            for name in (INCOMPLETE_MARKER, RUN_MARKER):
                (run_dir / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run_dir.rmdir()
                for folder in created:  # nearest first; stops at the first one not empty
                    folder.rmdir()
