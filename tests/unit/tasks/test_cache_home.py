"""One cache home (tasks.cache_home, issue 29): where it is, its size by kind, clearing it only
while no run holds it, and an old data/cache/ moved into it once."""

import io
import os
import time
from pathlib import Path

import pytest

from flows.cli import run
from tasks.cache_home import (
    cache_home,
    cache_in_use,
    clear_cache,
    migrate_old_cache,
    sizes_by_kind,
)
from tasks.config import RunSettings
from tasks.errors import ConfigError


def fill(folder: Path) -> None:
    """A cache as runs leave it: a download, a converted file, a fit, a compiled program."""
    for relative, size in {
        "sources/ab.csv": 1000,
        "urls/cd.json": 10,
        "pima-0123.parquet": 300,
        "fits/ab/ab12.json": 200,
        "xla/tf-1/program": 5000,
    }.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(b"x" * size)


def test_the_cache_home_is_foldflow_cache_else_foldflow_home_else_the_users(monkeypatch, tmp_path):
    monkeypatch.delenv("FOLDFLOW_CACHE", raising=False)
    monkeypatch.delenv("FOLDFLOW_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_home() == tmp_path / "xdg" / "foldflow"
    monkeypatch.setenv("FOLDFLOW_HOME", str(tmp_path / "home"))
    assert cache_home() == tmp_path / "home" / "cache"
    monkeypatch.setenv("FOLDFLOW_CACHE", str(tmp_path / "chosen"))
    assert cache_home() == tmp_path / "chosen"
    assert RunSettings().cache_folder() == tmp_path / "chosen"  # a run's default
    assert RunSettings(cache_dir="mine").cache_folder() == tmp_path / "home" / "mine"


def test_never_the_working_folder_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv("FOLDFLOW_CACHE", raising=False)
    monkeypatch.delenv("FOLDFLOW_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tmp_path not in RunSettings().cache_folder().parents


def test_sizes_are_told_by_kind(tmp_path):
    fill(tmp_path)
    sizes = sizes_by_kind(tmp_path)
    assert sizes["downloads"] == 1010 and sizes["converted data"] == 300
    assert sizes["fits"] == 200 and sizes["compiled programs"] == 5000 and sizes["other"] == 0


def test_clear_is_refused_while_a_run_holds_the_cache_and_empties_it_after(tmp_path):
    fill(tmp_path)
    with cache_in_use(tmp_path), pytest.raises(ConfigError, match="a run is using the cache"):
        clear_cache(tmp_path)
    assert sum(sizes_by_kind(tmp_path).values()) == 6510
    assert clear_cache(tmp_path) == (5, 6510)
    assert sorted(path.name for path in tmp_path.iterdir()) == [".lock"]


def test_clear_older_than_keeps_recent_files(tmp_path):
    fill(tmp_path)
    old = time.time() - 10 * 86400
    os.utime(tmp_path / "fits" / "ab" / "ab12.json", (old, old))
    assert clear_cache(tmp_path, older_than_days=7) == (1, 200)
    assert not (tmp_path / "fits").exists() and (tmp_path / "sources" / "ab.csv").exists()


def test_an_old_data_cache_is_moved_into_the_home_once_and_user_files_stay(tmp_path):
    old, new = tmp_path / "work" / "data" / "cache", tmp_path / "home"
    fill(old)
    (old.parent / "mine.yaml").write_text("a spec of the user's\n")
    (new / "fits" / "ab").mkdir(parents=True)
    (new / "fits" / "ab" / "ab12.json").write_text("kept")  # the home's own entry wins
    line = migrate_old_cache(old, new)
    assert (
        line == f"foldflow: moved the cache from {old} to {new} (once; foldflow keeps it there now)"
    )  # noqa: E501
    assert not old.exists() and (old.parent / "mine.yaml").exists()
    assert (new / "sources" / "ab.csv").stat().st_size == 1000
    assert (new / "xla" / "tf-1" / "program").exists() and (new / "pima-0123.parquet").exists()
    assert (new / "fits" / "ab" / "ab12.json").read_text() == "kept"
    assert migrate_old_cache(old, new) is None  # once


def test_foldflow_cache_info_and_clear_from_the_command_line(monkeypatch, tmp_path):
    monkeypatch.setenv("FOLDFLOW_CACHE", str(tmp_path))
    fill(tmp_path)
    out = io.StringIO()
    assert run(["cache", "info"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == f"cache: {tmp_path}"
    assert lines[1].split() == ["downloads", "1.0", "kB"]
    assert lines[5].split() == ["compiled", "programs", "5.0", "kB"]
    assert lines[-1].split() == ["total", "6.5", "kB"]

    errors = io.StringIO()
    with cache_in_use(tmp_path):
        assert run(["cache", "clear"], out=out, err=errors) == 2
    assert errors.getvalue().startswith("foldflow: error: a run is using the cache ")
    out = io.StringIO()
    assert run(["cache", "clear", "--older-than", "0"], out=out) == 0
    assert out.getvalue() == f"removed 5 file(s) not modified for 0 days, 6.5 kB, from {tmp_path}\n"


def test_with_foldflow_home_its_data_cache_moves_to_its_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("FOLDFLOW_NO_CACHE_MIGRATION")  # tests/conftest.py's guard of the checkout
    monkeypatch.delenv("FOLDFLOW_CACHE", raising=False)
    monkeypatch.setenv("FOLDFLOW_HOME", str(tmp_path))
    fill(tmp_path / "data" / "cache")
    assert migrate_old_cache().startswith("foldflow: moved the cache from ")
    assert (tmp_path / "cache" / "fits" / "ab" / "ab12.json").exists()
    assert not (tmp_path / "data" / "cache").exists()


def test_compiled_programs_follow_foldflow_home_into_its_cache(monkeypatch, tmp_path):
    from tasks.train import xla_cache

    monkeypatch.delenv(xla_cache.VARIABLE, raising=False)
    monkeypatch.delenv("FOLDFLOW_CACHE", raising=False)
    monkeypatch.setenv("FOLDFLOW_HOME", str(tmp_path))
    assert xla_cache.default_root() == tmp_path / "cache" / "xla"  # was ~/.cache/foldflow/xla
