"""foldflow: scikit-learn's searches and cross-validation of Keras model functions, every fit
run as a Prefect flow (`foldflow.GridSearchCV`, `RandomizedSearchCV`, `HalvingGridSearchCV`,
`HalvingRandomSearchCV`, `cross_validate`, `cross_val_score`), a run folder's refitted model
on raw rows (`load_model`), and the `foldflow` command (`foldflow.cli`)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "GridSearchCV",
    "HalvingGridSearchCV",
    "HalvingRandomSearchCV",
    "RandomizedSearchCV",
    "cross_val_score",
    "cross_validate",
    "load_model",
]
_HOME_MODULE = {
    "GridSearchCV": "foldflow.search",
    "RandomizedSearchCV": "foldflow.search",
    "HalvingGridSearchCV": "foldflow.halving",
    "HalvingRandomSearchCV": "foldflow.halving",
    "cross_validate": "foldflow.cross_validation",
    "cross_val_score": "foldflow.cross_validation",
    "load_model": "tasks.train.saved",  # a run folder's refitted model, taking raw rows
}
_INTERNAL_PACKAGES = ("tasks", "flows")  # foldflow's own, installed beside this package


def _load_internal_packages() -> None:
    """Import foldflow's `tasks` and `flows` from beside this package, so a user's own
    `tasks.py` in the working folder (first on sys.path) cannot take their place."""
    root = Path(__file__).resolve().parent.parent
    for name in _INTERNAL_PACKAGES:
        init = root / name / "__init__.py"
        loaded = sys.modules.get(name)
        if loaded is not None:
            where = Path(getattr(loaded, "__file__", "") or "").resolve()
            if where != init.resolve():
                raise ImportError(
                    f"foldflow needs its own {name!r} package ({init.parent}), but {name!r} is "
                    f"already imported from {where}: import foldflow before your own {name}.py "
                    "or rename it"
                )
            continue
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(init.parent)]
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"foldflow's {name!r} package is missing from {root}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


_load_internal_packages()


def __getattr__(name: str) -> Any:
    """Imported on first use: `import foldflow` stays quick (no TensorFlow, no Prefect)."""
    if name in __all__:
        return getattr(importlib.import_module(_HOME_MODULE[name]), name)
    raise AttributeError(f"module 'foldflow' has no attribute {name!r}")
