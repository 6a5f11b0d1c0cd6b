"""The code fingerprint in every fit's cache key.

It hashes every source file of the packages that can shape a result (not a hand-kept list, which
went stale as modules moved): change any of them and cached fits are recomputed, never served.
The model function's own code is keyed separately (ModelSource.sha256).
"""

import functools
import hashlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tasks.config import PROJECT_ROOT

# Every package whose code runs between the user's inputs and a fit's scores. The CLI and the
# Python API build the configs; tasks/ does the work; flows/ wires it.
FINGERPRINTED_PACKAGES = ("tasks", "flows", "foldflow")
# Libraries whose releases can change a fit's numbers.
FINGERPRINTED_LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn")
# Where the fingerprinted packages live: this checkout, or site-packages for a wheel.
SOURCE_ROOT = PROJECT_ROOT


def source_files(root: Path = PROJECT_ROOT) -> list[Path]:
    """Every Python source of the fingerprinted packages, in a fixed order."""
    files = [
        path
        for package in FINGERPRINTED_PACKAGES
        for path in (root / package).rglob("*.py")
        if "__pycache__" not in path.parts
    ]
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def library_versions() -> str:
    """Installed versions of the libraries that compute fits ("-" where one is absent)."""
    found = []
    for name in FINGERPRINTED_LIBRARIES:
        try:
            found.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            found.append(f"{name}=-")
    return "|".join(found)


def fingerprint_of(root: Path, libraries: str) -> str:
    """Hash of each source file's path and bytes under `root`, and the library versions."""
    digest = hashlib.sha256(libraries.encode())
    for path in source_files(root):
        name = path.relative_to(root).as_posix().encode()
        content = path.read_bytes()
        digest.update(b"%d:%s%d:" % (len(name), name, len(content)))
        digest.update(content)
    return digest.hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """This checkout's fingerprint, computed once per process (~60 small files)."""
    return fingerprint_of(SOURCE_ROOT, library_versions())
