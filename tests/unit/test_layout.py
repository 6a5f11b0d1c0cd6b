"""The house rules a reader relies on: which folder may import which, no import cycle, no file
too long to read. Imports are read from the source (ast), lazy ones included."""

import ast
from pathlib import Path

import pytest

from tasks.config import PROJECT_ROOT

PACKAGES = ("tasks", "flows", "foldflow")
MAX_LINES = 700
# The shared vocabulary: every layer may use it; it uses no layer.
VOCABULARY = {
    "tasks.config",
    "tasks.dataset_spec",
    "tasks.features",
    "tasks.records",
    "tasks.metrics",
    "tasks.errors",
    "tasks.messages",
    "tasks.limits",
    "tasks.files",
    "tasks.yaml_input",
    "tasks.numbers",
    "tasks.cache_home",
    "tasks.memory",
    "tasks.native_stderr",
}
# What each part of tasks/ may import besides the vocabulary (and itself).
MAY_IMPORT = {
    "tasks.data": set(),
    "tasks.model": set(),
    "tasks.search": {"tasks.data", "tasks.model"},
    "tasks.train": {"tasks.data", "tasks.model"},
    "tasks.results": {"tasks.data", "tasks.model", "tasks.search"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (PROJECT_ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules `path` imports anywhere in its body (a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = project_files()
    known = {module_name(path) for path in files}
    return {module_name(path): imports_of(path, known) - {module_name(path)} for path in files}


def part_of(module: str) -> str:
    """`tasks.train.fast.programs` -> `tasks.train`; vocabulary and top packages as they are."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "tasks" and len(parts) > 2 else module


def packages_of(module: str) -> set[str]:
    """A module's enclosing packages, whose __init__ runs on import (never a dependency)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_tasks_never_import_flows_or_the_python_api(graph):
    wrong = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith("tasks")
        for target in targets
        if target.split(".")[0] in {"flows", "foldflow"}
    }
    assert not wrong


def test_the_vocabulary_imports_no_layer(graph):
    wrong = {
        (module, target)
        for module in VOCABULARY
        for target in graph[module]
        if target not in VOCABULARY and target != "tasks"
    }
    assert not wrong


def test_each_part_of_tasks_imports_only_what_lies_below_it(graph):
    wrong = set()
    for module, targets in graph.items():
        part = part_of(module)
        if part not in MAY_IMPORT:
            continue
        allowed = VOCABULARY | MAY_IMPORT[part] | {part, "tasks"}
        for target in targets - packages_of(module):
            if part_of(target) not in allowed:
                wrong.add((module, target))
    assert not wrong, sorted(wrong)


def test_there_is_no_import_cycle(graph):
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target in packages_of(module):
                continue
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_source_file_is_too_long_to_read():
    long = {
        str(path.relative_to(PROJECT_ROOT)): n
        for path in project_files()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long


def test_the_rules_see_the_whole_tree(graph):
    """The checks above are only as good as the graph: it must hold every part, with edges."""
    assert {part_of(m) for m in graph} >= set(MAY_IMPORT) | VOCABULARY
    assert sum(len(targets) for targets in graph.values()) > 100


def test_the_wheel_ships_every_package_of_the_source_tree():
    """pyproject.toml lists the packages a non-editable install gets: a new folder of flows/,
    tasks/ or foldflow/ left out of it installs and then fails on import (it happened:
    tasks.train.vectorized, caught only by the end-to-end wheel test)."""
    import tomllib

    listed = set(
        tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    found = {
        ".".join(init.parent.relative_to(PROJECT_ROOT).parts)
        for top in ("flows", "tasks", "foldflow")
        for init in (PROJECT_ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set()
