"""The fast engine's compiled programs kept between runs (tasks.train.xla_cache): each process loads
from a private folder of complete entries and adds what it compiled to the shared one at exit."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.config import PROJECT_ROOT
from tasks.train import xla_cache


def entry(folder: Path, name: str, size: int) -> Path:
    path = folder / f"{name}__XLA_CPU_JIT.pb"
    path.write_bytes(b"x" * size)
    return path


def recorded(path: Path) -> Path:
    """The entry's record (size and checksum) as publishing writes it."""
    record = path.with_name(path.name + xla_cache.CHECKSUM)
    record.write_text(xla_cache._record(path.read_bytes()))
    return record


def test_publishing_renames_new_entries_into_place_with_their_checksum_and_removes_the_folder(
    tmp_path,
):
    private, shared = tmp_path / "proc-1", tmp_path / "shared"
    private.mkdir(), shared.mkdir()
    old = entry(shared, "old", 10)
    recorded(old)
    os.link(old, private / old.name)  # linked from the shared folder: not published again
    new = entry(private, "new", 25)
    assert xla_cache.publish(private, shared) == [new.name]
    assert (shared / new.name).read_bytes() == b"x" * 25
    digest = hashlib.sha256(b"x" * 25).hexdigest()
    assert (shared / (new.name + xla_cache.CHECKSUM)).read_text() == f"25 {digest}"
    assert not private.exists()
    assert sorted(p.name for p in shared.iterdir()) == sorted(
        [old.name, old.name + ".sha256", new.name, new.name + ".sha256"]
    )


@pytest.fixture
def cache_warnings():
    """The messages of foldflow's cache warnings (tasks.train.verified) outside a flow run."""
    import logging

    class Kept(logging.Handler):
        messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    handler, logger = Kept(), logging.getLogger("foldflow.caches")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_filling_links_intact_entries_and_drops_altered_ones_warning_once(tmp_path, cache_warnings):
    """Before, only sizes were recorded: one changed byte (same size) changed scores silently,
    and a same-size random entry failed every run that needed the program."""
    shared, private = tmp_path / "shared", tmp_path / "proc-2"
    shared.mkdir(), private.mkdir()
    whole = entry(shared, "whole", 40)
    recorded(whole)
    cut = entry(shared, "cut", 7)
    cut.with_name(cut.name + ".sha256").write_text(f"40 {'0' * 64}")
    flipped = entry(shared, "flipped", 40)
    recorded(flipped)
    flipped.write_bytes(b"x" * 39 + b"y")  # one byte, same size
    garbage = entry(shared, "garbage", 40)
    recorded(garbage)
    garbage.write_bytes(os.urandom(40))
    unrecorded = entry(shared, "unrecorded", 5)
    assert xla_cache.fill(private, shared) == 1
    assert [p.name for p in private.iterdir()] == [whole.name]
    assert os.stat(private / whole.name).st_ino == whole.stat().st_ino  # a link, not a copy
    assert not any(path.exists() for path in (cut, flipped, garbage, unrecorded))
    assert sorted(p.name for p in shared.iterdir()) == [whole.name, whole.name + ".sha256"]
    assert len(cache_warnings) == 1
    assert cache_warnings[0].startswith(f"compiled-program cache {shared}: an entry does not")


def test_any_tensorflow_error_after_loading_entries_drops_them_and_others_do_not(
    tmp_path, monkeypatch, cache_warnings
):
    """Random bytes that pass the checksum make TensorFlow fail with messages beyond the ones
    known (CI met one: the entry stayed, so every later run would fail). When in doubt,
    recompile: a TensorFlow error in a process that loaded entries drops them; an error of
    the model's own code (not TensorFlow's) leaves the cache alone."""
    import tensorflow as tf

    shared = tmp_path / xla_cache.machine_fingerprint()
    private = tmp_path / "proc-9"
    shared.mkdir(), private.mkdir()
    loaded = entry(shared, "loaded", 40)
    recorded(loaded)
    assert xla_cache.fill(private, shared) == 1
    monkeypatch.setitem(xla_cache._state, "private", private)

    assert xla_cache.drop_after_failure(ValueError("the model's own bug")) is False
    assert loaded.exists()
    unknown = tf.errors.InternalError(None, None, "Unexpected end of serialized executable")
    assert xla_cache.drop_after_failure(unknown) is True
    assert not loaded.exists() and not list(private.glob("*.pb"))
    assert len(cache_warnings) == 1


def test_the_shared_folder_keeps_the_most_recent_entries_within_its_bound(tmp_path):
    for age, name in enumerate(["newest", "middle", "oldest"]):
        path = entry(tmp_path, name, 100)
        recorded(path)
        stamp = time.time() - 60 * age
        os.utime(path, (stamp, stamp))
    xla_cache.prune(tmp_path, max_bytes=250)
    assert sorted(p.name.split("__")[0] for p in tmp_path.glob("*.pb")) == ["middle", "newest"]
    assert not (tmp_path / "oldest__XLA_CPU_JIT.pb.sha256").exists()


@pytest.mark.parametrize("value", ["off", "OFF", "0"])
def test_the_cache_can_be_turned_off(monkeypatch, value):
    monkeypatch.setenv(xla_cache.VARIABLE, value)
    assert xla_cache.default_root() is None


def test_the_shared_folder_is_named_for_tensorflow_the_cpu_and_the_xla_flags(monkeypatch):
    import tensorflow as tf

    first = xla_cache.machine_fingerprint()
    assert first.startswith(f"tf{tf.__version__}-")
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=1")
    assert xla_cache.machine_fingerprint() != first
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("TF_XLA_FLAGS", f"{xla_cache.FLAG}=/somewhere")  # the cache's own flag
    assert xla_cache.machine_fingerprint() == first


PROGRAM = """
import json, os, sys
import tasks.train.fast.programs  # enables the cache at import, as in every foldflow process
from tasks.train import xla_cache
import keras, numpy as np, tensorflow as tf
keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])  # TensorFlow ops first
private = xla_cache.enable()
@tf.function(jit_compile=True)
def program(x):
    return tf.reduce_sum(tf.sin(x) * tf.range(1.0, 65.0))
try:
    value = float(program(tf.ones([64])).numpy())
except Exception as error:  # what tasks.train.dispatch does when a program fails
    dropped = xla_cache.drop_after_failure(error)
    print(json.dumps({"failed": type(error).__name__, "dropped": dropped}))
    sys.exit(0)
linked = private and sorted(p.name for p in private.iterdir() if os.stat(p).st_nlink > 1)
print(json.dumps({"value": value, "private": private and str(private), "linked": linked}))
"""


def run_program(root: Path, inherited: dict | None = None) -> dict:
    environment = {**os.environ, xla_cache.VARIABLE: str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("TF_XLA_FLAGS", None)
    environment.pop(xla_cache.OWNER, None)  # this process's own (tasks.train.dispatch enabled it)
    environment.update(inherited or {})
    completed = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_program_the_first_compiled_and_computes_the_same(tmp_path):
    first = run_program(tmp_path)
    [shared] = [folder for folder in tmp_path.iterdir() if folder.name.startswith("tf")]
    published = sorted(p.name for p in shared.glob("*.pb"))
    assert len(published) == 1 and first["linked"] == []
    assert not Path(first["private"]).exists()  # removed at exit
    second = run_program(tmp_path)
    assert second["linked"] == published  # loaded from the first process's entry
    assert second["value"] == first["value"]
    assert sorted(p.name for p in shared.glob("*.pb")) == published  # nothing new to add

    # One byte changed, same size: not used; compiled again, to the same value.
    [stored] = shared.glob("*.pb")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    altered = run_program(tmp_path)
    assert altered["linked"] == [] and altered["value"] == first["value"]
    # An entry that passes its check but TensorFlow cannot load (here: random bytes with a
    # matching record): that run's program fails and the entry is dropped, not met again.
    stored.write_bytes(os.urandom(stored.stat().st_size))
    recorded(stored)
    assert run_program(tmp_path)["dropped"] is True
    assert not stored.exists()  # the next run compiles it afresh, as the run above did


def test_a_child_process_makes_its_own_folder_instead_of_its_parents(tmp_path):
    parents = tmp_path / "proc-parent"
    inherited = {"TF_XLA_FLAGS": f"{xla_cache.FLAG}={parents}", xla_cache.OWNER: f"1:{parents}"}
    child = run_program(tmp_path / "cache", inherited)
    assert Path(child["private"]).parent == tmp_path / "cache"
    assert not parents.exists()
    [shared] = [f for f in (tmp_path / "cache").iterdir() if f.name.startswith("tf")]
    assert len(list(shared.glob("*.pb"))) == 1


@pytest.mark.parametrize("parent", [None, "1:/a/parents/folder"])
def test_a_cache_folder_the_user_set_is_left_alone(tmp_path, parent):
    own = tmp_path / "own"
    inherited = {"TF_XLA_FLAGS": f"{xla_cache.FLAG}={own}"}
    if parent:  # started by a foldflow process that enabled its own cache
        inherited[xla_cache.OWNER] = parent
    child = run_program(tmp_path / "cache", inherited)
    assert child["private"] is None and len(list(own.glob("*.pb"))) == 1


GROUPS_IN_THREADS = """
import sys, threading
import numpy as np, tensorflow as tf
from tasks.train.fast import planning, programs, trainer  # programs enables the cache
from tasks.data.preprocess import FoldFeatures
from tasks.data.folds import plan_folds
from tasks.train.weights_cache import InitialWeights
from tests.conftest import PIMA_CSV
from tests.support import BUILTIN, PIMA_META, combinations, jobs
for _ in range(int(sys.argv[1])):  # other TensorFlow work first, more or less of it
    tf.constant(1.0)
data = np.loadtxt(PIMA_CSV, delimiter=",", dtype=np.float32)
features, labels = data[:, :8], data[:, 8].astype(np.int64)
folds = {fold.index: fold for fold in plan_folds(labels, 3, 7)}
grid = {"model__optimizer": ["adam"], "epochs": [1], "batch_size": [32, 64, 128]}
groups = planning.plan_groups(jobs(combinations(grid), list(folds)), workers=3)
programs.trace_programs(folds, groups, 7, labels, FoldFeatures(features))
initial = InitialWeights(BUILTIN, PIMA_META)
threads = [
    threading.Thread(target=trainer.train_stacked, args=(features, labels, folds, g, 7, initial))
    for g in groups
]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def test_a_repeated_run_compiles_nothing_new_whatever_ran_before_and_in_threads(tmp_path):
    """TensorFlow names traced functions after a process-wide counter and the cache keys on
    the names: programs traced ahead, in order, from a block boundary, keep their names."""
    environment = {**os.environ, xla_cache.VARIABLE: str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("TF_XLA_FLAGS", None)
    environment.pop(xla_cache.OWNER, None)
    stored = []
    for other_work in (0, 7):
        subprocess.run(
            [sys.executable, "-c", GROUPS_IN_THREADS, str(other_work)],
            cwd=PROJECT_ROOT,
            env=environment,
            check=True,
            timeout=300,
        )
        [shared] = [folder for folder in tmp_path.iterdir() if folder.name.startswith("tf")]
        stored.append(sorted(p.name for p in shared.glob("*.pb")))
    assert len(stored[0]) == 3  # one program per batch size
    assert stored[1] == stored[0]
