"""Every module of the user's own that the model's code imports is in the model's identity
(so in every fit's cache key) and travels with it to workers without the files."""

import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tasks.config import PROJECT_ROOT
from tasks.model.local_modules import find_local_modules
from tasks.model.sources import ModelSource, load_model_function, resolve_model_reference


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def model_with_helpers(tmp_path, width=4):
    """m.py imports a sibling module at the top, another inside the function, and a package;
    the sibling imports a module of its own."""
    write(
        tmp_path, "helper.py", f"import json\nfrom deeper import SCALE\nWIDTH = {width} * SCALE\n"
    )
    write(tmp_path, "deeper.py", "SCALE = 1\n")
    write(tmp_path, "mylib/__init__.py", "")
    write(tmp_path, "mylib/layers.py", "from . import units\nKIND = 'dense'\n")
    write(tmp_path, "mylib/units.py", "N = 2\n")
    write(tmp_path, "late.py", "OFFSET = 100\n")
    return write(
        tmp_path,
        "m.py",
        """\
        import os
        import numpy
        import helper
        from mylib.layers import KIND

        def f():
            import late
            return helper.WIDTH + late.OFFSET
        """,
    )


def test_a_model_files_own_imports_are_found_not_the_libraries(tmp_path):
    path = model_with_helpers(tmp_path)
    found = find_local_modules(path, [str(tmp_path), *sys.path])
    assert [module.name for module in found] == [
        "deeper", "helper", "late", "mylib", "mylib.layers", "mylib.units",
    ]  # fmt: skip
    assert found[1].source == (tmp_path / "helper.py").read_text()


def test_editing_a_module_the_model_file_imports_changes_its_identity(tmp_path):
    """Before, only m.py's bytes were keyed: a changed width in helper.py served stale fits."""
    path = model_with_helpers(tmp_path)
    first = resolve_model_reference(f"{path}:f", tmp_path)
    write(tmp_path, "deeper.py", "SCALE = 3\n")  # two imports away from m.py
    second = resolve_model_reference(f"{path}:f", tmp_path)
    write(tmp_path, "late.py", "OFFSET = 200\n")  # imported inside the function only
    third = resolve_model_reference(f"{path}:f", tmp_path)
    assert len({first.sha256, second.sha256, third.sha256}) == 3
    # Each version runs its own helpers, in one process (a long-lived worker sees many runs).
    assert [load_model_function(s)() for s in (first, second, third)] == [104, 112, 212]


def test_imports_after_more_than_256_constants_are_found(tmp_path):
    """A code object with more than 256 constants loads the later ones with an EXTENDED_ARG
    first: imports there were missed, and editing those helpers served stale fits."""
    for name in ("top_helper", "from_helper", "inner_helper"):
        write(tmp_path, f"{name}.py", "VALUE = 1\n")
    many = "".join(f"c{index} = {index}.5\n" for index in range(300))
    inner = "".join(f"    x{index} = {index}.25\n" for index in range(300))
    path = write(
        tmp_path,
        "big.py",
        f"{many}import top_helper\nfrom from_helper import VALUE\n\n"
        f"def f():\n{inner}    import inner_helper\n    return inner_helper.VALUE\n",
    )
    found = find_local_modules(path, [str(tmp_path), *sys.path])
    assert [module.name for module in found] == ["from_helper", "inner_helper", "top_helper"]


def test_a_file_without_modules_of_its_own_keeps_its_checksum(tmp_path):
    """Its fits' cache keys stay what they were."""
    import hashlib

    path = write(tmp_path, "plain.py", "import keras\n\ndef f():\n    return 1\n")
    source = resolve_model_reference(f"{path}:f", tmp_path)
    assert source.local_modules == ()
    assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


WORKER = """
import json, sys
from tasks.model.sources import ModelSource, load_model_function
source = ModelSource.model_validate_json(sys.stdin.read())
print(json.dumps(load_model_function(source)()))
"""


def test_a_worker_without_the_files_imports_the_shipped_modules(tmp_path):
    """A Dask worker on another machine gets the ModelSource by value: before, `import helper`
    failed there (only m.py's text travelled)."""
    path = model_with_helpers(tmp_path / "user", width=5)
    shipped = resolve_model_reference(f"{path}:f", tmp_path).model_dump_json()
    for file in sorted((tmp_path / "user").rglob("*.py"), reverse=True):
        file.unlink()
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    child = subprocess.run(
        [sys.executable, "-c", WORKER],
        input=shipped,
        cwd=elsewhere,
        env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert json.loads(child.stdout) == 105


def test_a_module_reference_keys_the_users_modules_outside_its_package(tmp_path, monkeypatch):
    """`package.module:FUNCTION` whose module imports a top-level module of the user's."""
    write(tmp_path, "shared_widths.py", "UNITS = 4\n")
    write(tmp_path, "outpkg/__init__.py", "")
    write(
        tmp_path,
        "outpkg/models.py",
        "from shared_widths import UNITS\n\ndef create_model():\n    return UNITS\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    first = resolve_model_reference("outpkg.models:create_model", tmp_path)
    write(tmp_path, "shared_widths.py", "UNITS = 8\n")
    second = resolve_model_reference("outpkg.models:create_model", tmp_path)
    assert first.sha256 != second.sha256
    assert isinstance(first, ModelSource) and first.local_modules == ()  # installed code


def test_a_script_function_given_to_the_python_api_keys_the_helper_it_imports(
    tmp_path, monkeypatch
):
    """foldflow.GridSearchCV(model=create_model) from a script: the function's source goes to
    the cache with `from helper import build as build`; that helper is keyed and shipped."""
    import runpy

    from tasks.model.function_source import function_reference

    write(tmp_path, "helper.py", "def build():\n    return 'v1'\n")
    script_text = "from helper import build\n\ndef create_model():\n    return build()\n"
    script = write(tmp_path, "script.py", script_text)
    monkeypatch.syspath_prepend(str(tmp_path))  # the script's folder, as `python script.py`
    monkeypatch.delitem(sys.modules, "helper", raising=False)
    function = runpy.run_path(str(script), run_name="__main__")["create_model"]
    reference = function_reference(function, tmp_path / "cache")
    source = resolve_model_reference(reference, tmp_path)
    assert [module.name for module in source.local_modules] == ["helper"]
    assert load_model_function(source)() == "v1"


def test_the_walk_survives_another_thread_building_an_ast_at_the_same_time(tmp_path):
    """CPython 3.11 counts an AST's construction depth in state shared by every thread: when
    another thread (Prefect's, TensorFlow's autograph) builds one while the walk parses a
    file, ast.parse may raise SystemError('AST constructor recursion depth mismatch'), which
    failed a deployment's run in the UI tests. The walk parses again instead."""
    import ast
    import gc
    import threading
    import time

    helper = tmp_path / "helper.py"
    helper.write_text(Path(ast.__file__).read_text())  # a module big enough to be caught
    model = tmp_path / "model.py"
    model.write_text("import helper\n")
    stop = threading.Event()

    def other_thread() -> None:
        while not stop.is_set():
            with contextlib.suppress(SystemError):  # that thread's own race, not ours
                ast.parse("x = 1")

    # The GIL changes hands in the middle of a construction (as a collection's callbacks or
    # finalizers let it do), so that the two constructions interleave.
    def yield_the_gil(phase, info):
        time.sleep(0)

    gc.callbacks.append(yield_the_gil)
    competitor = threading.Thread(target=other_thread, daemon=True)
    competitor.start()
    try:
        for _ in range(20):
            found = find_local_modules(model, [str(tmp_path)])
            assert [module.name for module in found] == ["helper"]
    finally:
        stop.set()
        competitor.join()
        gc.callbacks.remove(yield_the_gil)
