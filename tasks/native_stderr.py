"""TensorFlow's start-up chatter, held back from a command's stderr.

On import, TensorFlow's C++ code logs "oneDNN custom operations are on ..." twice, each time
under absl's "All log messages before absl::InitializeLog() is called are written to STDERR".
Both are written straight to file descriptor 2 before any log level applies, so
TF_CPP_MIN_LOG_LEVEL cannot silence them. They tell a user nothing they can act on (the
"slightly different numerical results" are the same on every run here).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

TENSORFLOW_START_UP_LINES = (
    b"All log messages before absl::InitializeLog() is called are written to STDERR",
    b"] oneDNN custom operations are on.",
)


@contextmanager
def tensorflow_start_up_lines_held_back() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file while the block runs (a TensorFlow import),
    then write every line it got back to stderr, in order, but TensorFlow's start-up lines.

    Python's own writes to sys.stderr in the block come out afterwards, unchanged.
    """
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line
                for line in held.read().splitlines(keepends=True)
                if not any(noise in line for noise in TENSORFLOW_START_UP_LINES)
            ]
            _write_all(b"".join(kept))


def _write_all(data: bytes) -> None:
    while data:
        data = data[os.write(2, data) :]
