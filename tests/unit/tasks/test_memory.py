"""Memory sizes as written (`--max-memory 300MB`) and the memory a run may use by default."""

import pytest
from pydantic import ValidationError

from tasks.config import RunSettings
from tasks.memory import default_fit_memory, format_bytes, machine_memory, parse_memory_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("300MB", 300 * 2**20),
        ("300M", 300 * 2**20),
        ("300 mib", 300 * 2**20),
        ("1.5GB", 3 * 2**29),
        ("2g", 2 * 2**30),
        ("4096", 4096),
        (4096, 4096),
    ],
)
def test_memory_sizes_are_read_as_docker_and_ulimit_count_them(text, size):
    assert parse_memory_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-1GB", "0", "1 PB", "", True])
def test_a_memory_size_that_is_none_is_refused_naming_it(text):
    with pytest.raises(ValueError, match="is not a memory size"):
        parse_memory_size(text)


def test_run_settings_refuse_a_bad_max_memory_naming_the_key():
    with pytest.raises(ValidationError, match="max_memory") as error:
        RunSettings(max_memory="lots")
    assert "not a memory size above zero" in str(error.value)
    assert RunSettings(max_memory="300MB").max_memory_bytes == 300 * 2**20
    assert RunSettings().max_memory_bytes is None  # the default share, where the fits run


def test_the_default_is_a_share_of_the_machine_split_between_workers():
    with open("/proc/meminfo") as meminfo:
        ram = int(meminfo.readline().split()[1]) * 1024
    assert 0 < machine_memory() <= ram
    assert default_fit_memory(2) == int(machine_memory() * 0.8 / 2)


def test_sizes_are_shown_as_read():
    assert format_bytes(300 * 2**20) == "300 MB"
    assert format_bytes(1.5 * 2**30) == "1.5 GB"


def test_building_under_the_bound_refuses_20_gb_naming_max_memory_and_restores_the_limit():
    """The checks before training build the model function in the flow's process: a function
    that allocates 20 GB there raised nothing before and took the machine to the OOM killer."""
    import resource

    import numpy as np

    from tasks.memory import build_memory_bounded, set_build_bound

    before = resource.getrlimit(resource.RLIMIT_DATA)
    set_build_bound(300 * 2**20)
    try:
        with pytest.raises(MemoryError, match=r"more than max_memory \(--max-memory\) 300 MB"):
            with build_memory_bounded():
                np.ones(20 * 10**9 // 8)
        with build_memory_bounded():
            small = np.ones(10 * 2**20 // 8)  # 10 MB: fine
    finally:
        set_build_bound(None)
    assert small.sum() > 0
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    assert np.ones(400 * 2**20 // 8).sum() > 0  # the limit is gone again
