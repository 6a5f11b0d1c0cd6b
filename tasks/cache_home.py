"""One home for every cache foldflow keeps: downloads, converted data, fits, checkpoints,
compiled programs and model functions, in one folder a user can find, size and clear.

Where: `$FOLDFLOW_CACHE`, else `$FOLDFLOW_HOME/cache` when FOLDFLOW_HOME is set, else the
platform's user cache folder (`~/.cache/foldflow` on Linux). Never the working folder by
default: the user's data copied into a git checkout's working tree was issue 29's complaint.

Runs hold a shared lock on `<cache>/.lock` while they use the cache; `clear` takes it
exclusively, so a cache is never emptied under a running run. Older versions kept the cache
in `data/cache/` of the working folder (or of FOLDFLOW_HOME): `migrate_old_cache` moves it
here once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.errors import ConfigError

CACHE_VARIABLE = "FOLDFLOW_CACHE"
HOME_VARIABLE = "FOLDFLOW_HOME"
NO_MIGRATION_VARIABLE = "FOLDFLOW_NO_CACHE_MIGRATION"
LOCK_NAME = ".lock"
OLD_CACHE = Path("data") / "cache"  # where versions before issue 29 kept it

# Kind -> the folders (or, for "*.parquet", the top-level files) that hold it.
KINDS: dict[str, tuple[str, ...]] = {
    "downloads": ("sources", "urls"),
    "converted data": ("*.parquet", "in-memory"),
    "fits": ("fits",),
    "checkpoints": ("checkpoints",),
    "compiled programs": ("xla",),
    "model functions": ("model-functions",),
}


def cache_home() -> Path:
    """The cache folder: $FOLDFLOW_CACHE, else $FOLDFLOW_HOME/cache, else the user's."""
    chosen = os.environ.get(CACHE_VARIABLE, "").strip()
    if chosen:
        return Path(chosen).expanduser().resolve()
    home = os.environ.get(HOME_VARIABLE, "").strip()
    if home:
        return Path(home).expanduser().resolve() / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("foldflow", appauthor=False))


def _kind_entries(folder: Path, kind: str) -> list[Path]:
    entries: list[Path] = []
    for pattern in KINDS[kind]:
        if "*" in pattern:
            entries += sorted(p for p in folder.glob(pattern) if p.is_file())
        elif (folder / pattern).exists():
            entries.append(folder / pattern)
    return entries


def _files_under(path: Path) -> Iterator[Path]:
    if path.is_symlink() or path.is_file():
        yield path
        return
    for root, _, names in os.walk(path):
        for name in names:
            yield Path(root) / name


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:  # removed meanwhile
        return 0


def sizes_by_kind(folder: Path) -> dict[str, int]:
    """Bytes per kind (and "other" for anything else in the folder but the lock)."""
    sizes = {kind: 0 for kind in KINDS}
    known: set[Path] = set()
    for kind in KINDS:
        for entry in _kind_entries(folder, kind):
            known.add(entry)
            sizes[kind] += sum(_size(f) for f in _files_under(entry))
    other = 0
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry not in known and entry.name != LOCK_NAME:
                other += sum(_size(f) for f in _files_under(entry))
    sizes["other"] = other
    return sizes


def size_text(size: int) -> str:
    """`0 B`, `812 kB`, `4.8 MB`, `2.1 GB` (powers of 1000, as du -h --si)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            digits = 1 if size < 10 * scale else 0
            return f"{size / scale:.{digits}f} {unit}"
    return f"{size} B"


def info_lines(folder: Path) -> list[str]:
    """`foldflow cache info`: the folder, then each kind's size, then the total."""
    sizes = sizes_by_kind(folder)
    width = max(len(kind) for kind in sizes)
    lines = [f"cache: {folder}" + ("" if folder.is_dir() else " (empty: not created yet)")]
    lines += [f"  {kind.ljust(width)}  {size_text(size)}" for kind, size in sizes.items()]
    lines.append(f"  {'total'.ljust(width)}  {size_text(sum(sizes.values()))}")
    return lines


@contextmanager
def cache_in_use(folder: Path) -> Iterator[None]:
    """A shared lock on the cache while a run uses it (`clear` waits for none)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def clear_cache(folder: Path, older_than_days: float | None = None) -> tuple[int, int]:
    """Remove the cache's files (those not modified for `older_than_days`, if given), then
    its empty folders; (files, bytes) removed. Refused while a run holds the cache."""
    if not folder.is_dir():
        return 0, 0
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    with open(folder / LOCK_NAME, "a+b") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"a run is using the cache {folder}: clear it when no foldflow run is going"
            ) from None
        removed, freed = 0, 0
        for path in list(_files_under(folder)):
            if path.name == LOCK_NAME and path.parent == folder:
                continue
            try:
                stat = path.lstat()
                if cutoff is not None and stat.st_mtime >= cutoff:
                    continue
                path.unlink()
            except OSError:
                continue
            removed, freed = removed + 1, freed + stat.st_size
        for root, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
            if Path(root) != folder:
                try:
                    Path(root).rmdir()  # only if empty
                except OSError:
                    pass
    return removed, freed


def old_cache_folder() -> Path:
    """Where versions before issue 29 kept the cache: data/cache of FOLDFLOW_HOME or of the
    working folder."""
    home = os.environ.get(HOME_VARIABLE, "").strip()
    return (Path(home).expanduser().resolve() if home else Path.cwd()) / OLD_CACHE


def _move_into(source: Path, target: Path) -> None:
    """Move `source` to `target`, merging folders. An entry `target` already has stays and
    the old one goes: cache entries are named by their content or key, so both are the same."""
    if not target.exists() and not target.is_symlink():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(target))
    elif source.is_dir() and not source.is_symlink() and target.is_dir():
        for child in list(source.iterdir()):
            _move_into(child, target / child.name)
        try:
            source.rmdir()
        except OSError:
            pass
    elif not source.is_dir() or source.is_symlink():
        source.unlink()


def migrate_old_cache(old: Path | None = None, new: Path | None = None) -> str | None:
    """Move the caches of an old `data/cache/` into the cache home, once: the line to show,
    or None when there is nothing to move. Only what foldflow put there is moved (the kinds
    above); the old folder goes if that leaves it empty. Not with FOLDFLOW_CACHE set: a chosen
    cache is used as it is, nor with FOLDFLOW_NO_CACHE_MIGRATION set (the test suite runs in
    a checkout whose data/cache/ is the developer's)."""
    if old is None and new is None and os.environ.get(NO_MIGRATION_VARIABLE):
        return None
    if new is None and os.environ.get(CACHE_VARIABLE, "").strip():
        return None
    old = old_cache_folder() if old is None else old
    new = cache_home() if new is None else new
    if not old.is_dir() or old.resolve() == new.resolve():
        return None
    entries = [entry for kind in KINDS for entry in _kind_entries(old, kind)]
    if not entries:
        return None
    new.mkdir(parents=True, exist_ok=True)
    with cache_in_use(new):
        for entry in entries:
            _move_into(entry, new / entry.name)
    try:
        old.rmdir()
    except OSError:
        pass
    return f"foldflow: moved the cache from {old} to {new} (once; foldflow keeps it there now)"
