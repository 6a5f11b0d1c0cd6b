"""The modules a model's code imports from outside the standard library and site-packages (a
sibling `helper.py`, the user's own package): found once, when the run starts, read into the
model's `ModelSource`, part of its checksum (so of every fit's cache key) and shipped with it,
so a worker without the files (Dask on another machine) imports the very code that was keyed.

Found by walking the import statements (ast), not by recording the modules loaded while the
model's module is imported, because:
- a module this process imported before (a second run in one Python session, a notebook, a
  long-lived Dask worker) loads nothing new, and would be missed;
- an import inside the model function runs only when it builds a model;
- the walk executes nothing, and sees the same files however often a process has run.
Its limits, as modulefinder's: a module imported by a name computed at run time
(`importlib.import_module(name)`) and data files the code opens are not found.
"""

from __future__ import annotations

import dis
import importlib.abc
import importlib.machinery
import importlib.util
import site
import sys
import sysconfig
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tasks.errors import ConfigError

MAX_LOCAL_MODULES = 200
MAX_LOCAL_BYTES = 4 << 20
# foldflow's own packages: keyed by the code fingerprint, installed on every worker.
_OWN_PACKAGES = tuple(
    Path(__file__).resolve().parents[2] / name for name in ("tasks", "flows", "foldflow")
)


class LocalModule(BaseModel):
    """One module of the user's own code, as it was read when the run started."""

    model_config = ConfigDict(frozen=True)

    name: str  # as imported: `helper`, `mylib.layers`
    path: str  # where it was read (tracebacks and messages name it)
    source: str  # its text ("" for a namespace package: a folder without __init__.py)
    package: bool = False


def find_local_modules(
    start: Path, search_path: list[str], package: str | None = None
) -> tuple[LocalModule, ...]:
    """Every user module `start` imports, directly or through another user module, sorted by
    name. `search_path`: where top-level names are looked up (a model file's own folder
    first, as `python model.py` would); `package`: the package `start` belongs to, for its
    relative imports (None: a file run on its own)."""
    found: dict[str, LocalModule] = {}
    specs: dict[str, importlib.machinery.ModuleSpec | None] = {}
    pending = [(start, package)]
    while pending:
        path, its_package = pending.pop()
        for name in sorted(_imported_names(path, its_package)):
            if name in found or name.partition(".")[0] in sys.stdlib_module_names:
                continue
            spec = _spec(name, search_path, specs)
            if spec is None:
                continue
            module = _local_module(name, spec)
            if module is None:
                continue
            found[name] = module
            _check_size(start, found)
            if module.source:
                is_package = module.package
                pending.append((Path(module.path), name if is_package else name.rpartition(".")[0]))
    return tuple(found[name] for name in sorted(found))


def _check_size(start: Path, found: dict[str, LocalModule]) -> None:
    size = sum(len(module.source) for module in found.values())
    if len(found) > MAX_LOCAL_MODULES or size > MAX_LOCAL_BYTES:
        raise ConfigError(
            f"model file {start} imports more than {MAX_LOCAL_MODULES} modules or "
            f"{MAX_LOCAL_BYTES >> 20} MiB of code from outside site-packages (every one is "
            "keyed and shipped with each fit): install that code as a package"
        )


def _imported_names(path: Path, package: str | None) -> set[str]:
    """Every module name an import statement of the file may load, anywhere in the file
    (inside functions too): `import a.b` gives a and a.b; `from a import b` gives a and a.b
    (b may be a module).

    Read from the compiled code's IMPORT_NAME instructions (as modulefinder does), not from
    ast.parse: CPython 3.11 counts the depth of every Python AST it builds in state that all
    threads share, so another thread building one at the same time (Prefect's, TensorFlow's
    autograph) made ast.parse fail with SystemError('AST constructor recursion depth
    mismatch'); compiling builds no Python AST objects."""
    try:
        code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError):
        return set()  # loading it reports the error, with its line
    names: set[str] = set()
    for module, level, fromlist in _imports(code):
        base = _absolute_base(module, level, package)
        if base is None:
            continue
        names |= _with_parents(base) if base else set()
        for name in fromlist or ():
            if name != "*":
                names.add(f"{base}.{name}" if base else name)
    return names


def _imports(code: types.CodeType) -> Iterator[tuple[str, int, tuple[str, ...] | None]]:
    """(module, level, fromlist) of every import in `code` and the code nested in it: the
    compiler loads the level and the fromlist as constants just before IMPORT_NAME. An
    EXTENDED_ARG (a constant past the 256th) is skipped, as modulefinder skips it: its value is
    already in the next instruction's argument."""
    before: list[dis.Instruction] = []
    for instruction in dis.get_instructions(code):
        if instruction.opname == "EXTENDED_ARG":
            continue
        if instruction.opname == "IMPORT_NAME" and len(before) >= 2:
            level, fromlist = before[-2], before[-1]
            if level.opname == "LOAD_CONST" and fromlist.opname == "LOAD_CONST":
                yield instruction.argval, int(level.argval), fromlist.argval
        before = [*before[-1:], instruction]
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _imports(constant)


def _absolute_base(module: str, level: int, package: str | None) -> str | None:
    if not level:
        return module
    if not package:
        return None  # a relative import outside a package fails when it runs
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        return None
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


def _spec(
    name: str, search_path: list[str], specs: dict[str, importlib.machinery.ModuleSpec | None]
) -> importlib.machinery.ModuleSpec | None:
    """Where `name` would be imported from, found without importing anything; None for a
    module that is not there or lives in a library (nothing below it is the user's)."""
    if name in specs:
        return specs[name]
    parent_name, dot, _ = name.rpartition(".")
    spec = None
    if dot:
        parent = _spec(parent_name, search_path, specs)
        locations = None if parent is None else parent.submodule_search_locations
        if locations is not None:
            spec = importlib.machinery.PathFinder.find_spec(name, list(locations))
    else:
        spec = importlib.machinery.PathFinder.find_spec(name, search_path)
    if spec is not None and not _is_users(spec):
        spec = None
    specs[name] = spec
    return spec


def _is_users(spec: importlib.machinery.ModuleSpec) -> bool:
    if spec.origin in (None, "built-in", "frozen") or not spec.has_location:
        locations = list(spec.submodule_search_locations or [])
        return bool(locations) and not any(_in_library(Path(p)) for p in locations)
    return not _in_library(Path(spec.origin))


def _in_library(path: Path) -> bool:
    """In the standard library, site-packages (of any environment) or foldflow itself."""
    path = path.resolve()
    if {"site-packages", "dist-packages"} & set(path.parts):
        return True
    return any(folder == path or folder in path.parents for folder in _library_folders())


def _library_folders() -> tuple[Path, ...]:
    if not _LIBRARY_FOLDERS:
        paths = sysconfig.get_paths()
        folders = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
        folders |= set(getattr(site, "getsitepackages", lambda: [])())
        _LIBRARY_FOLDERS.extend(Path(folder).resolve() for folder in sorted(folders))
        _LIBRARY_FOLDERS.extend(_OWN_PACKAGES)
    return tuple(_LIBRARY_FOLDERS)


_LIBRARY_FOLDERS: list[Path] = []


def _local_module(name: str, spec: importlib.machinery.ModuleSpec) -> LocalModule | None:
    is_package = spec.submodule_search_locations is not None
    if spec.origin in (None, "built-in", "frozen") or not spec.has_location:
        if not is_package:
            return None
        folder = next(iter(spec.submodule_search_locations or []), "")
        return LocalModule(name=name, path=str(folder), source="", package=True)
    origin = Path(spec.origin)
    if origin.suffix != ".py":
        return None  # a compiled extension: not shippable as text (installed code, then)
    try:
        text = origin.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # importing it reports the problem
    return LocalModule(name=name, path=str(origin), source=text, package=is_package)


class ShippedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """An importer that loads `LocalModule`s from their shipped text, so `import helper` in a
    model file gets the version that was keyed, with or without the file on this machine."""

    def __init__(self, modules: tuple[LocalModule, ...]):
        self.by_name = {module.name: module for module in modules}

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201
        shipped = self.by_name.get(fullname)
        if shipped is None:
            return None
        spec = importlib.util.spec_from_loader(
            fullname, self, origin=shipped.path, is_package=shipped.package
        )
        if spec is not None and shipped.package:
            folder = shipped.path if not shipped.source else str(Path(shipped.path).parent)
            spec.submodule_search_locations = [folder]
        return spec

    def create_module(self, spec):  # noqa: ANN001, ANN201
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        shipped = self.by_name[module.__name__]
        if shipped.source:
            module.__file__ = shipped.path
            exec(compile(shipped.source, shipped.path, "exec"), module.__dict__)  # noqa: S102


@contextmanager
def shipped_importer(modules: tuple[LocalModule, ...]) -> Iterator[None]:
    """Within: `import NAME` of a shipped module loads its shipped text (another version of it
    in `sys.modules` is dropped first)."""
    importer = ShippedModules(modules)
    for module in modules:
        sys.modules.pop(module.name, None)
    sys.meta_path.insert(0, importer)
    try:
        yield
    finally:
        sys.meta_path.remove(importer)


def imported(modules: tuple[LocalModule, ...]) -> dict[str, types.ModuleType]:
    """Every shipped module, imported (within `shipped_importer`); one that fails to import on
    its own (say, under `if TYPE_CHECKING:` only) is left out: the model's import reports it."""
    loaded = {}
    for module in modules:
        try:
            loaded[module.name] = importlib.import_module(module.name)
        except Exception:  # noqa: BLE001
            continue
    return loaded
