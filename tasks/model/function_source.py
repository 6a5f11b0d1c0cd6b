"""A model function held in memory as a model reference (`PATH.py:FUNCTION` or
`package.module:FUNCTION`), so it travels to workers like any other.

A function defined in a script run as `__main__` (or in a notebook) cannot be loaded by
running its file again: the script would start its own search once more. Its source is
written to the cache instead, alone, with an import for every global it uses.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import inspect
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError
from tasks.files import write_text_atomically

_CONSTANT_TYPES = (int, float, str, bool, type(None), bytes)


def function_reference(function: Callable, cache_dir: Path) -> str:
    """`package.module:FUNCTION` for an importable module's function, else
    `<cache>/model-functions/<sha256>.py:FUNCTION` holding the function's own source."""
    _refuse_unsupported(function)
    module_name = function.__module__
    if module_name not in (None, "__main__") and _importable(module_name, function):
        return f"{module_name}:{function.__name__}"
    text = standalone_source(function)
    digest = hashlib.sha256(text.encode()).hexdigest()
    path = Path(cache_dir) / "model-functions" / f"{digest}.py"
    if not path.is_file():
        write_text_atomically(path, text)
    return f"{path}:{function.__name__}"


def _refuse_unsupported(function: Callable) -> None:
    if not inspect.isfunction(function):
        raise ConfigError(
            f"the model must be a function that builds and compiles a Keras model, "
            f"got {type(function).__name__}"
        )
    if function.__name__ == "<lambda>" or "<locals>" in function.__qualname__:
        raise ConfigError(
            f"model function {function.__qualname__!r} must be defined at the top level of a "
            "module, script or notebook cell (not a lambda or a nested function)"
        )


def _importable(module_name: str, function: Callable) -> bool:
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 (then the source is shipped instead)
        return False
    return getattr(module, function.__name__, None) is function


def standalone_source(function: Callable, _seen: set[str] | None = None) -> str:
    """The function's source preceded by what its globals are: imports for modules, classes
    and functions of importable modules, literals for constants, the source of other
    top-level functions of the same script."""
    seen = _seen if _seen is not None else {function.__name__}
    header: list[str] = []
    helpers: list[str] = []
    for name in sorted(_global_names(function.__code__)):
        if name not in function.__globals__ or name in seen:
            continue
        seen.add(name)
        value = function.__globals__[name]
        line = _import_line(name, value)
        if line is not None:
            header.append(line)
        elif inspect.isfunction(value) and value.__module__ == function.__module__:
            helpers.append(standalone_source(value, seen))
        else:
            raise ConfigError(
                f"model function {function.__name__!r} uses the global {name!r} "
                f"({type(value).__name__}), which cannot be shipped to the workers: "
                "import it inside the function or define the function in a module"
            )
    try:
        own = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as error:
        raise ConfigError(
            f"cannot read the source of model function {function.__name__!r}: {error}"
        ) from None
    return "\n".join([*header, "", *helpers, own])


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names - set(dir(builtins))


def _import_line(name: str, value: Any) -> str | None:
    if isinstance(value, types.ModuleType):
        return f"import {value.__name__} as {name}"
    if isinstance(value, _CONSTANT_TYPES):
        return f"{name} = {value!r}"
    module_name = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if module_name and module_name != "__main__" and qualname and "." not in qualname:
        try:
            found = getattr(importlib.import_module(module_name), qualname, None)
        except Exception:  # noqa: BLE001
            found = None
        if found is value:
            return f"from {module_name} import {qualname} as {name}"
    return None
