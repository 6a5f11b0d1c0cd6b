"""Model references: `PATH.py:FUNCTION`, `package.module:FUNCTION` or `mlp` (foldflow's MLP).

A reference is resolved once, when a run starts, into a `ModelSource`: for a file, its bytes
travel with every job (threads, processes and Dask workers on other machines load the same
code without a shared filesystem) and their checksum is part of every fit's cache key.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
import traceback
import types
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tasks.config import BUILTIN_MODEL
from tasks.errors import ConfigError

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
    sha256: str  # of the file's bytes, or of the module's whole top-level package

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
    source = ModelSource(
        reference=reference,
        function=function,
        path=str(path),
        source=text,
        sha256=hashlib.sha256(data).hexdigest(),
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
    return digest.hexdigest()


def _import(module_name: str, reference: str) -> types.ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 (any import failure is the user's to see)
        raise ConfigError(
            f"model reference {reference!r}: cannot import {module_name}: {last_line(error)}"
        ) from None


_LOADED: dict[tuple[str, str], Callable] = {}
_LOAD_LOCK = threading.Lock()


def load_model_function(source: ModelSource) -> Callable:
    """The function itself, loaded once per process per (code, name).

    A file's text is executed as a fresh module named after its checksum, so two versions of
    one file never mix and nothing depends on the file existing where this runs.
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
            _LOADED[key] = function
        return _LOADED[key]


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
        exec(code, module.__dict__)  # noqa: S102 (the user's own model file, as `python` would)
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
