"""One stacked feature matrix per (data, fold views) in a process, built once and shared.

The fast engine trains a group of fits on one matrix: a copy of the rows per distinct (fold,
preprocessing) view, one under the other. Task runs on the threads of one process often stack
the very same views (the grid's architectures are separate groups over the same folds and
preprocessing choices); each used to encode and hold its own copies. Here the first thread to
ask allocates the matrix and every thread asking for it fills the blocks no one has taken yet,
so each view is encoded once and all of them train on one matrix. Only weak references are
kept once it is built: the matrix goes when its last group is done, or, while a run's fits
train (keeping_last_stack), when another matrix is asked for or the fits end, so that groups
run one after another (one worker) share it too.

The matrix starts on a 64-byte boundary, so TensorFlow can wrap it as a tensor in place
(tasks.train.fast.trainer.shared_tensor); `tf.constant` copied a large array twice over.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

# Bytes: the alignment TensorFlow requires of a buffer it takes over without a copy.
ALIGNMENT = 64


def aligned_float32(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 C-ordered array whose buffer starts on an ALIGNMENT boundary."""
    count = int(np.prod(shape))
    raw = np.empty(count * 4 + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + count * 4].view(np.float32).reshape(shape)


def is_aligned_float32(array: np.ndarray) -> bool:
    """Whether TensorFlow can take `array` in place (float32, C order, writable, aligned)."""
    return (
        array.dtype == np.float32
        and array.flags.c_contiguous
        and array.flags.writeable
        and array.ctypes.data % ALIGNMENT == 0
    )


def rows_digest(rows: Sequence[int] | np.ndarray) -> str:
    """A short name for a fold's training rows: a view depends on which rows it was fitted on,
    not only on the fold's number (another seed or outer fold gives fold 0 other rows)."""
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


class _Stack:
    """One matrix being filled block by block by whichever threads ask for it."""

    def __init__(self, sources: tuple[Any, ...], n_blocks: int):
        self.sources = tuple(weakref.ref(source) for source in sources)
        self.n_blocks = n_blocks
        self.condition = threading.Condition()
        self.taken = [False] * n_blocks
        self.filled = [False] * n_blocks
        self.array: np.ndarray | None = None  # held while anyone is filling or waiting
        self.built: weakref.ref | None = None  # then only this
        self.askers = 0
        self.error: BaseException | None = None

    def dead(self) -> bool:
        """Failed, dropped once built, or made from objects that are gone."""
        if self.error is not None or (self.built is not None and self.built() is None):
            return True
        return any(ref() is None for ref in self.sources)

    def serves(self, sources: tuple[Any, ...]) -> bool:
        """Alive and made from these very objects (an id is reused once its object is gone)."""
        return not self.dead() and all(
            ref() is source for ref, source in zip(self.sources, sources, strict=True)
        )

    def fill(self, block_of: Callable[[int], np.ndarray]) -> np.ndarray | None:
        """Fill blocks until none is left to take, wait for the others' blocks, return the
        matrix (None: it was built and dropped meanwhile; ask again)."""
        with self.condition:
            self.askers += 1
        try:
            while True:
                with self.condition:
                    index = self._take()
                    if index is None:
                        self.condition.wait_for(lambda: all(self.filled) or self.error is not None)
                        if self.error is not None:
                            raise self.error
                        return self.array if self.array is not None else self.built()
                try:
                    block = block_of(index)
                    with self.condition:
                        self._put(index, block)
                except BaseException as error:
                    with self.condition:
                        self.error = error
                        self.condition.notify_all()
                    raise
        finally:
            with self.condition:
                self.askers -= 1
                if not self.askers and self.array is not None and all(self.filled):
                    self.built, self.array = weakref.ref(self.array), None

    def _take(self) -> int | None:
        """The first block no thread has taken (None: all are); block 0 goes first, alone,
        since its width sets the matrix's."""
        if self.taken[0] and self.array is None and self.built is None:
            self.condition.wait_for(lambda: self.array is not None or self.error is not None)
        if self.error is not None:
            raise self.error
        pending = [index for index, taken in enumerate(self.taken) if not taken]
        if not pending:
            return None
        self.taken[pending[0]] = True
        return pending[0]

    def _put(self, index: int, block: np.ndarray) -> None:
        if self.array is None:
            self.array = aligned_float32((self.n_blocks * len(block), *block.shape[1:]))
        rows = len(self.array) // self.n_blocks
        if block.shape != (rows, *self.array.shape[1:]):
            raise ValueError(
                f"view {index} of a stacked matrix has shape {block.shape}, the first "
                f"{(rows, *self.array.shape[1:])}: a group's views must have one width"
            )
        self.array[index * rows : (index + 1) * rows] = block
        self.filled[index] = True
        self.condition.notify_all()


_STACKS: dict[Hashable, _Stack] = {}
_STACKS_LOCK = threading.Lock()
# The last matrix built and what it was made from (the user's rows live only while held),
# held while a run's fits train (keeping_last_stack); one at a time.
_KEPT: dict[str, Any] = {"depth": 0, "held": None}


@contextmanager
def keeping_last_stack() -> Iterator[None]:
    """Inside, the last matrix built stays alive until another one is asked for, so groups
    that run one after another over the same views encode them once; let go at the end."""
    with _STACKS_LOCK:
        _KEPT["depth"] += 1
    try:
        yield
    finally:
        with _STACKS_LOCK:
            _KEPT["depth"] -= 1
            if not _KEPT["depth"]:
                _KEPT["held"] = None


def shared_stack(
    key: Hashable, sources: tuple[Any, ...], n_blocks: int, block_of: Callable[[int], np.ndarray]
) -> np.ndarray:
    """The `n_blocks` views (`block_of(i)`: view i, every row) one under the other, built once
    per process for `key` and shared while anyone holds it.

    `sources`: the objects the views are computed from (the features, the user's rows),
    compared by identity; `key` must name everything else that shapes the views: their
    preprocessing and the rows each was fitted on."""
    while True:
        with _STACKS_LOCK:
            for dead in [name for name, stack in _STACKS.items() if stack.dead()]:
                del _STACKS[dead]
            stack = _STACKS.get(key)
            if stack is None or not stack.serves(sources):
                _KEPT["held"] = None  # let the kept one go before another is allocated
                stack = _STACKS[key] = _Stack(sources, n_blocks)
        array = stack.fill(block_of)
        if array is not None:
            with _STACKS_LOCK:
                if _KEPT["depth"]:
                    _KEPT["held"] = (array, sources)
            return array
