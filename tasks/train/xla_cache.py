"""The fast engine's compiled programs kept between runs on this machine: a grid run again (or
another grid with the same shapes) loads each XLA program instead of compiling it (~0.5 s a
program here, four in the tutorial's grid with its refit).

It is TensorFlow's own persistent cache (`--tf_xla_persistent_cache_directory`), which loads a
program only after checking that the whole stored program (HLO) equals the one asked for; a
program is code, not results: data, parameters and seeds are its inputs. Two of its habits
decide the design here:
- It writes each program it compiles in place into its folder and loads from the same folder,
  and a failed write or an unreadable file fails the training call. So every process gets a
  private folder of its own, filled with hard links to the complete entries of the shared
  folder, and its new entries join the shared folder at exit, renamed into place once copied;
  nothing is enabled on a disk short of space.
- It trusts the bytes it loads: one changed byte in an entry changed scores silently, or failed
  every run that needed the program (`Failed to parse serialized CpuAotCompilationResult`). So
  each entry's size and SHA-256 are recorded beside it when it is published and checked before
  it is linked (tasks.train.verified): one that fails is dropped and compiled again. One that
  passes but that TensorFlow still cannot load (`drop_after_failure`, called where programs
  run) is dropped from the shared folder, so only the run that met it fails.
- A program is compiled for this CPU's features (one compiled elsewhere may crash with SIGILL),
  this TensorFlow and these XLA flags: the shared folder is named after all three.

`FOLDFLOW_XLA_CACHE` chooses the folder (default: `xla/` in the cache home, tasks.cache_home)
or turns the cache off (`off`). The shared folder is kept under MAX_BYTES, the
least recently published entries going first.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import platform
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from tasks.cache_home import cache_home
from tasks.train.verified import sha256_hex, warn_once

VARIABLE = "FOLDFLOW_XLA_CACHE"
# "PID:FOLDER": the flag this process added to TF_XLA_FLAGS; a child inheriting it makes its own.
OWNER = "FOLDFLOW_XLA_CACHE_OWNER"
FLAG = "--tf_xla_persistent_cache_directory"
MAX_BYTES = 128 * 2**20
MIN_FREE_BYTES = 2**30
STALE_SECONDS = 24 * 3600
CHECKSUM = ".sha256"  # beside each entry: "<size> <sha256>"
KIND = "compiled-program cache"
# What TensorFlow says when a cache entry it loaded cannot be used.
UNREADABLE_ENTRY_MESSAGES = (
    "CpuAotCompilationResult",
    "as binary proto",
    "xla_compile_cache",
    "Failed to add object file to dylib",
)
PRIVATE_PREFIX = "proc-"

_state: dict[str, Path | None] = {}
_lock = threading.Lock()


def default_root() -> Path | None:
    """Where the cache lives: FOLDFLOW_XLA_CACHE, else the user's cache folder; None: off."""
    chosen = os.environ.get(VARIABLE, "").strip()
    if chosen.lower() in {"off", "0", "false", "no"}:
        return None
    if chosen:
        return Path(chosen).expanduser()
    return cache_home() / "xla"  # with foldflow's other caches (tasks.cache_home)


def machine_fingerprint() -> str:
    """What a compiled program is only valid for: CPU model and features, architecture,
    TensorFlow's version and the XLA flags of this process (other than the cache's own)."""
    import tensorflow as tf

    cpu = ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = "\n".join(
            sorted({line for line in lines if line.startswith(("model name", "flags"))})
        )
    except OSError:
        cpu = platform.processor()
    tf_flags = " ".join(
        part for part in os.environ.get("TF_XLA_FLAGS", "").split() if not part.startswith(FLAG)
    )
    text = "\n".join(
        [cpu, platform.machine(), tf.__version__, os.environ.get("XLA_FLAGS", ""), tf_flags]
    )
    return f"tf{tf.__version__}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def enable(root: Path | None = None) -> Path | None:
    """Point this process's XLA cache at a private folder filled from the shared one, once per
    process and before its first TensorFlow op (TensorFlow reads its XLA flags then). Returns
    the private folder; None if the cache is off, the disk short of space, or the user set
    TensorFlow's cache folder themselves."""
    with _lock:
        if "private" in _state:
            return _state["private"]
        _state["private"] = None
        root = default_root() if root is None else root
        flags = _without_inherited_flag(os.environ.get("TF_XLA_FLAGS", ""))
        if root is None or FLAG in flags:
            return None
        try:
            shared = root / machine_fingerprint()
            shared.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(shared).free < MIN_FREE_BYTES:
                return None
            private = Path(
                tempfile.mkdtemp(
                    prefix=f"{PRIVATE_PREFIX}{socket.gethostname()}-{os.getpid()}-", dir=root
                )
            )
            _remove_stale_private_folders(root, keep=private)
            fill(private, shared)
        except OSError:
            return None
        os.environ["TF_XLA_FLAGS"] = f"{flags} {FLAG}={private}".strip()
        os.environ[OWNER] = f"{os.getpid()}:{private}"
        atexit.register(publish, private, shared)
        _state["private"] = private
        return private


def _without_inherited_flag(flags: str) -> str:
    """TF_XLA_FLAGS without the cache flag a parent foldflow process added for its own folder
    (a flag the user set stays)."""
    pid, _, folder = os.environ.get(OWNER, "").partition(":")
    if not folder or pid == str(os.getpid()):
        return flags
    return " ".join(part for part in flags.split() if part != f"{FLAG}={folder}")


def fill(private: Path, shared: Path) -> int:
    """Hard-link (else copy) every shared entry whose size and checksum match those recorded
    beside it into `private`; one that does not (cut short, altered) is removed, with one
    warning naming the folder; one without a record (written before checksums) is removed
    quietly. Returns the number of entries linked."""
    linked = 0
    for stale in shared.glob("*.pb.size"):  # the records written before checksums
        stale.unlink(missing_ok=True)
    for entry in sorted(shared.glob("*.pb")):
        record = entry.with_name(entry.name + CHECKSUM)
        try:
            if not record.is_file():
                entry.unlink(missing_ok=True)
                continue
            if record.read_text().strip() != _record(entry.read_bytes()):
                entry.unlink(missing_ok=True)
                record.unlink(missing_ok=True)
                warn_once(KIND, shared, "does not match its recorded size and checksum")
                continue
            try:
                os.link(entry, private / entry.name)
            except OSError:
                shutil.copyfile(entry, private / entry.name)
            linked += 1
        except OSError:
            continue  # gone meanwhile (pruned by another process)
    return linked


def publish(private: Path, shared: Path, max_bytes: int = MAX_BYTES) -> list[str]:
    """Copy the entries this process compiled into the shared folder (each renamed into place
    once complete, its size recorded first), prune the shared folder to `max_bytes`, remove
    `private`. Runs at exit, when no compile is under way. Returns the names published."""
    published = []
    try:
        for entry in sorted(private.glob("*.pb")):
            if (shared / entry.name).exists():
                continue  # linked from there, or another process published it first
            temporary = shared / f".{entry.name}.{os.getpid()}.tmp"
            shutil.copyfile(entry, temporary)
            _write_atomically(shared / (entry.name + CHECKSUM), _record(temporary.read_bytes()))
            os.replace(temporary, shared / entry.name)
            published.append(entry.name)
        prune(shared, max_bytes)
    except OSError:
        pass  # a cache: the run's results do not depend on it
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return published


def prune(shared: Path, max_bytes: int) -> None:
    """Remove the least recently published entries until the folder holds at most
    `max_bytes` (a process that linked one keeps its link)."""
    entries = sorted(shared.glob("*.pb"), key=lambda path: path.stat().st_mtime, reverse=True)
    total = 0
    for entry in entries:
        total += entry.stat().st_size
        if total > max_bytes:
            entry.unlink(missing_ok=True)
            entry.with_name(entry.name + CHECKSUM).unlink(missing_ok=True)


def _record(data: bytes) -> str:
    return f"{len(data)} {sha256_hex(data)}"


def is_unreadable_entry_error(error: BaseException, loaded_entries: bool = False) -> bool:
    """TensorFlow's error for a cache entry it loaded but cannot run: one of the known
    messages, or any TensorFlow error once this process has loaded entries (an entry that
    passes its checksum but is not TensorFlow's can fail in many ways; when in doubt the
    entries are dropped and compiled again, which costs a compile, never a wrong result)."""
    if any(message in str(error) for message in UNREADABLE_ENTRY_MESSAGES):
        return True
    return loaded_entries and type(error).__module__.startswith("tensorflow.")


def drop_after_failure(error: BaseException) -> bool:
    """After `error` from a compiled program: if it says a cache entry could not be loaded,
    drop every entry this process took from the shared folder (which one failed is not
    always named; TensorFlow keeps the failure for this process, so the next run compiles
    them afresh) and warn once. Returns whether it did."""
    private = _state.get("private")
    if private is None or not is_unreadable_entry_error(error, any(private.glob("*.pb"))):
        return False
    shared = private.parent / machine_fingerprint()
    for entry in private.glob("*.pb"):
        in_shared = shared / entry.name
        try:
            if in_shared.exists() and os.path.samefile(entry, in_shared):
                in_shared.unlink(missing_ok=True)
                in_shared.with_name(in_shared.name + CHECKSUM).unlink(missing_ok=True)
            entry.unlink(missing_ok=True)
        except OSError:
            continue
    warn_once(KIND, shared, "could not be loaded by TensorFlow")
    return True


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _remove_stale_private_folders(root: Path, keep: Path) -> None:
    """Private folders of processes that died without publishing, a day after."""
    for folder in root.iterdir():
        if folder == keep or not folder.name.startswith(PRIVATE_PREFIX):
            continue
        try:
            if time.time() - folder.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
