"""Memory sizes as a user writes them (`300MB`, `2GiB`), and how much memory this machine gives
foldflow: the smaller of its RAM and its cgroup's limit, so a container's cap counts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A fit may use this share of the memory foldflow has, split between its parallel workers.
DEFAULT_MEMORY_SHARE = 0.8
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)
# cgroup v1 reports "no limit" as a huge number near 2**63.
_NO_LIMIT = 2**60


def parse_memory_size(value: int | float | str) -> int:
    """Bytes from `300MB`, `300M`, `1.5GiB` or a plain number of bytes (K, M, G, T: powers of
    1024, as Docker and ulimit count). ValueError naming the value otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a memory size")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        match = _SIZE.fullmatch(value)
        if match is None:
            raise ValueError(f"{value!r} is not a memory size: write e.g. 300MB, 2GB or 2GiB")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"{value!r} is not a memory size above zero")
    return size


def format_bytes(size: float) -> str:
    """`312 MB`, `1.2 GB` (powers of 1024, as parse_memory_size reads them)."""
    for unit, scale in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(size) >= scale:
            shown = size / scale
            return f"{shown:.1f} {unit}" if shown < 10 else f"{shown:.0f} {unit}"
    return f"{size:.0f} B"


def machine_memory() -> int:
    """Bytes of memory this process may use: RAM, or the cgroup's limit if smaller (v2's
    memory.max or v1's memory.limit_in_bytes, of this process's own cgroup)."""
    sizes = [_ram()]
    sizes += [limit for limit in (_cgroup_v2_limit(), _cgroup_v1_limit()) if limit]
    return min(sizes)


def default_fit_memory(workers: int) -> int:
    """The memory a fit may use when the run names none: DEFAULT_MEMORY_SHARE of the machine's
    (machine_memory), split between the run's parallel workers."""
    return int(machine_memory() * DEFAULT_MEMORY_SHARE / max(1, workers))


def _ram() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.virtual_memory().total)


def _own_cgroup(controller: str) -> str | None:
    """This process's cgroup path for `controller` ('' for the v2 unified hierarchy)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers.split(",") == [controller] or (controller == "" and controllers == ""):
            return path
    return None


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) >= _NO_LIMIT:
        return None  # "max" (v2) or v1's "no limit"
    return int(text)


def _cgroup_v2_limit() -> int | None:
    own = _own_cgroup("")
    if own is None:
        return None
    root = Path("/sys/fs/cgroup")
    # Inside a container the cgroup namespace makes its own cgroup the root.
    for folder in (root / own.lstrip("/"), root):
        if (limit := _read_limit(folder / "memory.max")) is not None:
            return limit
    return None


def _cgroup_v1_limit() -> int | None:
    own = _own_cgroup("memory")
    if own is None:
        return None
    root = Path("/sys/fs/cgroup/memory")
    for folder in (root / own.lstrip("/"), root):
        if (limit := _read_limit(folder / "memory.limit_in_bytes")) is not None:
            return limit
    return None


# The bound the flow sets for building model functions in its own process (set_build_bound):
# the checks before training build each distinct model there, outside the fit workers' guards.
_BUILD_BOUND: dict[str, int | None] = {"bytes": None}


def set_build_bound(size: int | None) -> None:
    """The memory a model function may take while the flow builds it to check it (None: no
    bound); flows.stages sets the run's max_memory."""
    _BUILD_BOUND["bytes"] = size


def _data_size() -> int | None:
    """This process's private writable memory (VmData), what RLIMIT_DATA counts."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextmanager
def build_memory_bounded() -> Iterator[None]:
    """Within: allocations beyond the build bound raise MemoryError (RLIMIT_DATA above the
    process's current data size), naming max_memory, instead of taking the machine to the
    out-of-memory killer. Measured with TensorFlow: a Keras build and fit run under +300 MB;
    a 20 GB NumPy array raises at once. Without a bound, or off Linux, nothing changes."""
    bound, current = _BUILD_BOUND["bytes"], _data_size()
    if bound is None or current is None:
        yield
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = current + bound
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    except MemoryError as error:
        # With the bound; its traceback still names the model function's line.
        raise MemoryError(
            f"{error} (more than max_memory (--max-memory) {format_bytes(bound)} while the "
            "model was built)"
        ).with_traceback(error.__traceback__) from None
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
