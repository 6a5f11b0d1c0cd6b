"""What the caches share: every entry (a fit's record, a checkpoint, a compiled program) carries
a SHA-256 written with it and checked before it is used. An entry that fails the check (one
changed byte served a fit at accuracy 0.952 with F1 0.0, and a changed compiled program
changed scores silently) is dropped and recomputed, with one warning per cache folder and
process naming the folder: a cache gives the result a fresh computation would, or nothing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def drop_entry(kind: str, folder: Path, entry: Path, why: str) -> None:
    """Remove an entry that failed its check (its sidecar files too, given as `entry`'s
    siblings by the caller) and warn once for this cache folder in this process."""
    entry.unlink(missing_ok=True)
    warn_once(kind, folder, why)


def warn_once(kind: str, folder: Path, why: str) -> None:
    key = (kind, str(folder))
    with _WARNED_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    _logger().warning(
        "%s %s: an entry %s; it was dropped and is recomputed (further such entries in this "
        "folder are dropped without another warning)",
        kind,
        folder,
        why,
    )


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger when there is one (the UI shows the warning), else foldflow's."""
    try:
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError

        try:
            return get_run_logger()
        except MissingContextError:
            pass
    except ImportError:
        pass
    return logging.getLogger("foldflow.caches")
