"""Atomic writes: the new file replaces the old in one step and gets the umask's mode."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from tasks.files import write_atomically, write_text_atomically, writes_beside


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_mode_the_umask_allows(tmp_path, mask, mode):
    text_file = tmp_path / "shared" / "summary.txt"
    table_file = tmp_path / "shared" / "cv_results.parquet"
    with umask(mask):
        write_text_atomically(text_file, "Best: 0.75\n")
        write_atomically(table_file, lambda p: pd.DataFrame({"a": [1]}).to_parquet(p))
    assert text_file.stat().st_mode & 0o777 == mode
    assert table_file.stat().st_mode & 0o777 == mode


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.txt"
    target.write_text("old\n")

    def fail(temporary: Path) -> None:
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, fail)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.txt"]


def test_the_temporary_keeps_the_suffix_writers_check(tmp_path):
    seen = []
    write_atomically(tmp_path / "best_model.keras", lambda p: (seen.append(p), p.write_bytes(b"")))
    assert seen[0].suffix == ".keras" and seen[0].parent == tmp_path


def test_writes_beside_are_all_done_when_the_block_ends(tmp_path):
    with writes_beside(threads=4) as write:
        for index in range(40):
            write(write_text_atomically, tmp_path / f"{index}.json", str(index))
    assert sorted(int(p.read_text()) for p in tmp_path.glob("*.json")) == list(range(40))


def test_a_failed_write_beside_is_raised_when_the_block_ends(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises((NotADirectoryError, FileExistsError)):
        with writes_beside() as write:
            write(write_text_atomically, tmp_path / "fine.json", "1")
            write(write_text_atomically, blocker / "inside.json", "2")  # its folder is a file
    assert (tmp_path / "fine.json").read_text() == "1"
