"""Atomic file writes: a crash leaves the old file or the new one, never half of one. And
what this process computed from a file, kept while that file is unchanged (FileMemo)."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cachetools

# A run folder holds this file until the run has written everything (tasks.results.run_folder).
INCOMPLETE_MARKER = "INCOMPLETE"


def create_temporary_beside(path: Path) -> Path:
    """A new empty file next to `path` (same file system, so the rename is atomic).

    Created with mode 0666 like any file `open()` makes, so the umask decides who may read it:
    `tempfile.mkstemp` makes 0600 whatever the umask, which hid a team's shared outputs from
    the team. The name keeps `path`'s suffix because some writers check it (Keras: `.keras`).
    """
    while True:
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary_path = create_temporary_beside(path)
    try:
        write(temporary_path)
        with open(temporary_path, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary_path, path)
    except OSError as error:  # a full or read-only disk: named by the file meant, not the temporary
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    finally:
        temporary_path.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


@contextmanager
def writes_beside(threads: int = 8) -> Iterator[Callable[..., None]]:
    """`submit(function, *args)` runs a file write on one of a few threads; leaving the block
    waits for every write and raises the first error.

    Why: each atomic write waits for its fsync, and a busy disk makes that milliseconds;
    one after another, a grid's hundreds of fit files held up the flow for ~0.5 s, while
    fsyncs waiting together are committed together.
    """
    futures: list[Future] = []
    with ThreadPoolExecutor(threads, thread_name_prefix="foldflow-write") as pool:

        def submit(function: Callable[..., None], *args: object) -> None:
            futures.append(pool.submit(function, *args))

        yield submit
    for future in futures:
        future.result()


def file_state(path: Path) -> tuple[int, int, int]:
    """(inode, size, modification time): another file, or a changed one, differs."""
    try:
        status = path.stat()
    except OSError:
        return (-1, -1, -1)
    return (status.st_ino, status.st_size, status.st_mtime_ns)


class FileMemo:
    """Results this process computed from files, by a key covering everything that shapes
    them, each given back only while its file is in the state it was computed from; the
    oldest forgotten past `size`. Shared by threads."""

    def __init__(self, size: int = 8) -> None:
        self._known: cachetools.FIFOCache = cachetools.FIFOCache(maxsize=size)
        self._lock = threading.Lock()

    def recall(self, key: Any, path: Path) -> Any | None:
        """The value remembered for `key` if `path` is still in its state then, else None."""
        with self._lock:
            known = self._known.get(key)
        if known is not None and known[0] == file_state(path):
            return known[1]
        return None

    def remember(self, key: Any, state: tuple[int, int, int], value: Any) -> None:
        """`value` for `key`, computed from the file in `state` (file_state)."""
        with self._lock:
            self._known[key] = (state, value)
