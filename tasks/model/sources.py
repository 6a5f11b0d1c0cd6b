"""Model references: `PATH.py:FUNCTION`, `package.module:FUNCTION` or `mlp` (foldflow's MLP).

A reference is resolved once, when a run starts, into a `ModelSource`: for a file, its bytes
and those of the user's modules it imports (tasks.model.local_modules) travel with every job
(threads, processes and Dask workers on other machines load the same code without a shared
filesystem) and their checksum is part of every fit's cache key.

The model's code runs guarded: `sys.exit()` or `os._exit()` in it is a `ModelFunctionExit`
(a failed fit, or one line before training), never the end of foldflow's process with the
status the user's code chose and no results.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tasks.config import BUILTIN_MODEL
from tasks.errors import ConfigError
from tasks.model.local_modules import (
    LocalModule,
    find_local_modules,
    imported,
    shipped_importer,
)

BUILTIN_FUNCTION = "tasks.model.factory:build_mlp"
MAX_SOURCE_BYTES = 1 << 20


class ModelSource(BaseModel):
    """A resolved model reference: enough to load the function anywhere, and its identity."""

    model_config = ConfigDict(frozen=True)

    reference: str  # as the user wrote it
    function: str
    module: str | None = None  # importable module (package.module form and the built-in)
    path: str | None = None  # the file, for messages (file form)
    source: str | None = None  # the file's text (file form): shipped with the job
    # The user's modules the file imports (file form): shipped with the job too.
    local_modules: tuple[LocalModule, ...] = ()
    # Of the file's bytes (and of its local modules, if any), or of the module's whole
    # top-level package and the user's modules outside it that it imports.
    sha256: str

    @property
    def label(self) -> str:
        """`create_model (models/tutorial.py)`: how messages name the function."""
        where = self.path or self.module
        return f"{self.function} ({where})"


def resolve_model_reference(reference: str, base_dir: Path) -> ModelSource:
    """Read the reference's code once; a relative file path is taken from `base_dir`."""
    reference = reference.strip()
    if reference == BUILTIN_MODEL:
        return _module_source(BUILTIN_FUNCTION, reference)
    location, colon, function = reference.rpartition(":")
    if not colon or not location or not function.isidentifier():
        raise ConfigError(
            f"model reference {reference!r}: expected PATH.py:FUNCTION, "
            f"package.module:FUNCTION or {BUILTIN_MODEL!r}"
        )
    if location.endswith(".py") or "/" in location or "\\" in location:
        return _file_source(reference, location, function, base_dir)
    return _module_source(reference, reference)


def _file_source(reference: str, location: str, function: str, base_dir: Path) -> ModelSource:
    path = Path(location).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        size = path.stat().st_size
        if size > MAX_SOURCE_BYTES:
            raise ConfigError(f"model file {path} is {size} bytes: a model function's file")
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(
            f"model reference {reference!r}: cannot read {path}: {error.strerror or error}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"model file {path} is not UTF-8 text (byte {error.start}): is it a Python file?"
        ) from None
    # The file's own folder first, as `python model.py` would look up its sibling modules.
    local = find_local_modules(path, [str(path.parent), *sys.path])
    source = ModelSource(
        reference=reference,
        function=function,
        path=str(path),
        source=text,
        local_modules=local,
        sha256=code_checksum(hashlib.sha256(data).hexdigest(), local),
    )
    load_model_function(source)  # fails here, before any training, if it cannot load
    return source


def _module_source(reference: str, shown_as: str) -> ModelSource:
    module_name, _, function = reference.rpartition(":")
    module = _import(module_name, shown_as)
    source = ModelSource(
        reference=shown_as,
        function=function,
        module=module_name,
        sha256=_package_checksum(module_name, module),
    )
    load_model_function(source)
    return source


MAX_PACKAGE_FILES = 2000


def code_checksum(file_sha256: str, modules: tuple[LocalModule, ...]) -> str:
    """The file's checksum alone when it imports no module of the user's (so the keys of such
    files stay what they were), else one over the file and every module's name and text."""
    if not modules:
        return file_sha256
    digest = hashlib.sha256(file_sha256.encode())
    for module in modules:
        digest.update(f"\0{module.name}\0{module.package}\0".encode())
        digest.update(module.source.encode())
    return digest.hexdigest()


def _package_checksum(module_name: str, module: types.ModuleType) -> str:
    """Checksum of the code a module's function may use: every .py file of its top-level
    package (a function often builds layers in a sibling module), else the module's file.
    Too large a package to read is refused rather than keyed by one file."""
    digest = hashlib.sha256(module_name.encode())
    module_file = getattr(module, "__file__", None)
    if not module_file:
        return digest.hexdigest()
    top = importlib.import_module(module_name.partition(".")[0])
    package_dirs = [Path(path) for path in getattr(top, "__path__", [])]
    files = sorted({p for d in package_dirs for p in d.rglob("*.py")}) or [Path(module_file)]
    if len(files) > MAX_PACKAGE_FILES:
        raise ConfigError(
            f"model reference {module_name}: its package holds {len(files)} Python files "
            f"(more than {MAX_PACKAGE_FILES}); put the model function in a file of its own "
            "and pass PATH.py:FUNCTION"
        )
    for path in files:
        # Named from the package's parent, so an install elsewhere keys the same code alike.
        root = next((d.parent for d in package_dirs if d in path.parents), path.parent)
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    # The user's modules outside the package that it imports (a sibling top-level module).
    package = module_name if hasattr(module, "__path__") else module_name.rpartition(".")[0]
    outside = tuple(
        local
        for local in find_local_modules(Path(module_file), list(sys.path), package or None)
        if not any(d == Path(local.path) or d in Path(local.path).parents for d in package_dirs)
    )
    return code_checksum(digest.hexdigest(), outside)


def _import(module_name: str, reference: str) -> types.ModuleType:
    try:
        with running_model_code(f"module {module_name}", set()):
            return importlib.import_module(module_name)
    except ModelFunctionExit:
        raise
    except Exception as error:  # noqa: BLE001 (any import failure is the user's to see)
        raise ConfigError(
            f"model reference {reference!r}: cannot import {module_name}: {last_line(error)}"
        ) from None


_LOADED: dict[tuple[str, str], Callable] = {}
_LOAD_LOCK = threading.Lock()
# The user's modules each loaded file version imported: put back in sys.modules before each
# call, so an import inside the function gets that version too.
_LOCAL_MODULES: dict[str, dict[str, types.ModuleType]] = {}


def load_model_function(source: ModelSource) -> Callable:
    """The function, loaded once per process per (code, name), wrapped so that its code runs
    guarded (`running_model_code`); the function itself is the wrapper's `__wrapped__`.

    A file's text is executed as a fresh module named after its checksum, so two versions of
    one file never mix and nothing depends on the file existing where this runs; so are the
    user's modules it imports, from their shipped text.
    """
    key = (source.sha256, source.function)
    with _LOAD_LOCK:
        if key not in _LOADED:
            module = _load_module(source)
            function = getattr(module, source.function, None)
            if function is None:
                defined = sorted(
                    name
                    for name, value in vars(module).items()
                    if callable(value) and getattr(value, "__module__", None) == module.__name__
                )
                raise ConfigError(
                    f"model reference {source.reference!r}: no function {source.function!r} "
                    f"in {source.path or source.module} "
                    f"(it defines: {', '.join(defined) or 'nothing callable'})"
                )
            if not callable(function):
                raise ConfigError(
                    f"model reference {source.reference!r}: {source.function!r} is a "
                    f"{type(function).__name__}, not a function"
                )
            _LOADED[key] = _guarded(function, source, _LOCAL_MODULES.get(source.sha256, {}))
        return _LOADED[key]


def _guarded(
    function: Callable, source: ModelSource, modules: dict[str, types.ModuleType]
) -> Callable:
    files = model_files(source) | {getattr(getattr(function, "__code__", None), "co_filename", "")}

    @functools.wraps(function)
    def call_model_function(*args, **kwargs):  # noqa: ANN202
        sys.modules.update(modules)  # this version's helpers, for imports inside the function
        with running_model_code(f"model function {source.label}", files):
            return function(*args, **kwargs)

    return call_model_function


def model_files(source: ModelSource) -> set[str]:
    """The files of the model's own code: a traceback's line in one of them is the user's."""
    return {path for path in [source.path, *(m.path for m in source.local_modules)] if path}


class ModelFunctionExit(ConfigError):
    """The model's code asked to end the process (`sys.exit`, `os._exit`) while foldflow ran
    it: a failed fit (or a refusal before any training), naming the function and its line."""


class _ExitCalled(BaseException):
    """`os._exit(status)` called by model code in the thread that runs it (see guard)."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


_RUNNING = threading.local()  # .state: (what runs, its files, pid) while model code runs
_PROCESS_EXIT = os._exit


def _exit_unless_model_code(status: int) -> None:
    """`os._exit` while guarded: in a thread running model code (this process, not a fork of
    it) it raises, so the code's caller records a failure; anywhere else it exits at once."""
    state = getattr(_RUNNING, "state", None)
    if state is None or state[2] != os.getpid():
        _PROCESS_EXIT(status)
    raise _ExitCalled(status)


def guard_process_exit() -> None:
    """Put `_exit_unless_model_code` in place of `os._exit` in this process, before any model
    code loads (so `from os import _exit` in it gets the guarded one too). os._exit cannot be
    caught; without this, `os._exit(0)` in a model function ended `foldflow` with status 0 and
    no results. Only `posix._exit` called directly still escapes."""
    if os._exit is not _exit_unless_model_code:
        os._exit = _exit_unless_model_code


@contextmanager
def running_model_code(what: str, files: set[str]) -> Iterator[None]:
    """Within: `sys.exit()` and `os._exit()` (see guard_process_exit) from the user's code are
    a `ModelFunctionExit` naming `what` and the line of `files` that called it."""
    guard_process_exit()
    previous = getattr(_RUNNING, "state", None)
    _RUNNING.state = (what, files, os.getpid())
    try:
        yield
    except SystemExit as error:
        code = "" if error.code is None else repr(error.code)
        raise ModelFunctionExit(_exit_message(what, f"sys.exit({code})", error, files)) from None
    except _ExitCalled as error:
        called = f"os._exit({error.status!r})"
        raise ModelFunctionExit(_exit_message(what, called, error, files)) from None
    finally:
        _RUNNING.state = previous


def _exit_message(what: str, called: str, error: BaseException, files: set[str]) -> str:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename in files]
    where = ""
    if frames:
        frame = frames[-1]
        shown = "" if frame.filename in what else f" of {frame.filename}"
        where = f" at line {frame.lineno}{shown}"
    return (
        f"{what} called {called}{where}: a model function must return a compiled Keras "
        "model, not end the process"
    )


def _load_module(source: ModelSource) -> types.ModuleType:
    if source.source is None:
        return _import(source.module or "", source.reference)
    name = f"foldflow_model_{source.sha256[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    module = types.ModuleType(name)
    module.__file__ = source.path
    sys.modules[name] = module
    try:
        code = compile(source.source, source.path or name, "exec")
        with (
            shipped_importer(source.local_modules),
            running_model_code(f"model file {source.path}", model_files(source)),
        ):
            exec(code, module.__dict__)  # noqa: S102 (the user's own model file, as `python` would)
            _LOCAL_MODULES[source.sha256] = imported(source.local_modules)
    except ModelFunctionExit:
        del sys.modules[name]
        raise
    except Exception as error:  # noqa: BLE001
        del sys.modules[name]
        raise ConfigError(
            f"model reference {source.reference!r}: {source.path} fails to load"
            f"{where_in_file(error, source.path)}: {last_line(error)}"
        ) from None
    return module


def last_line(error: BaseException) -> str:
    """The exception's last line, as Python prints it (`NameError: name 'x' is not defined`)."""
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg}"
    lines = traceback.format_exception_only(type(error), error)
    text = lines[-1].strip() if lines else repr(error)
    return text if len(text) <= 500 else text[:500] + "..."


def where_in_file(error: BaseException, path: str | None) -> str:
    """` at line N` of the user's file where the error arose, when it arose there."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f" at line {error.lineno}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
    return f" at line {frames[-1].lineno}" if frames else ""
