"""Where a deployment run may load its model from: checked before anything is imported.

`foldflow server` hands its worker the folders its owner allows (FOLDFLOW_ALLOWED_MODELS,
`--allow-models DIR`, default the project folder), and the flow runs that worker starts load a
model file, or a package, only from inside one of them: a run whose parameters name a model
elsewhere (another user's `/tmp/evil.py:f`) fails with one line and that file is never read
as code. Without the variable (`foldflow cv|grid|search`, the Python API) the user runs their
own code and nothing is restricted. foldflow's `mlp` is always allowed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

from tasks.errors import ConfigError

ALLOWED_MODELS_VARIABLE = "FOLDFLOW_ALLOWED_MODELS"
BUILTIN_MODEL = "mlp"


def allowed_model_folders(environment: Mapping[str, str] | None = None) -> list[Path] | None:
    """The folders models may come from, or None when nothing is restricted."""
    environment = os.environ if environment is None else environment
    value = environment.get(ALLOWED_MODELS_VARIABLE)
    if value is None:
        return None
    return [Path(folder).resolve() for folder in value.split(os.pathsep) if folder]


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


def _module_location(module_name: str) -> Path | None:
    """Where the top-level package or module of `module_name` lives, found without running
    any of its code (find_spec of a top-level name only asks the path finders)."""
    top = module_name.partition(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path(spec.origin).resolve() if spec.origin and spec.has_location else None


def allowed_model_reference(reference: str, base_dir: Path, folders: list[Path] | None) -> str:
    """`reference` as it may be loaded (a model file by its real path, so a link swapped
    later cannot lead elsewhere), or a ConfigError naming the folders it must come from."""
    reference = reference.strip()
    if folders is None or reference == BUILTIN_MODEL:
        return reference
    location, colon, function = reference.rpartition(":")
    shown = ", ".join(str(folder) for folder in folders) or "(none)"
    if location.endswith(".py") or "/" in location or "\\" in location:
        path = Path(location).expanduser()
        real = (path if path.is_absolute() else base_dir / path).resolve()
        if _inside(real, folders):
            return f"{real}:{function}" if colon else reference
        raise ConfigError(
            f"model {reference!r}: {real} is outside the folders this server allows models "
            f"from ({shown}); its owner allows more with `foldflow server --allow-models DIR`"
        )
    where = _module_location(location) if colon else None
    if where is not None and _inside(where, folders):
        return reference
    found = f"found at {where}" if where else "not found"
    raise ConfigError(
        f"model {reference!r}: package {location.partition('.')[0]!r} ({found}) is outside "
        f"the folders this server allows models from ({shown}); its owner allows more with "
        "`foldflow server --allow-models DIR`"
    )
