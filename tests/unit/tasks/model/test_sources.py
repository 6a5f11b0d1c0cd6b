"""Model references: loaded once, from a file's bytes or an importable module; clear errors."""

import hashlib
import textwrap

import pytest

from tasks.config import PROJECT_ROOT
from tasks.errors import ConfigError
from tasks.model.factory import build_mlp
from tasks.model.sources import ModelFunctionExit, load_model_function, resolve_model_reference


def write_model(tmp_path, body, name="my_model.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_a_file_reference_carries_the_file_bytes_and_their_checksum(tmp_path):
    path = write_model(tmp_path, "def create_model(optimizer='adam'):\n    return optimizer\n")
    source = resolve_model_reference(f"{path}:create_model", tmp_path)
    assert source.source == path.read_text()
    assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_model_function(source)() == "adam"


def test_a_relative_file_is_taken_from_the_base_folder(tmp_path):
    write_model(tmp_path, "def f():\n    return 1\n")
    assert resolve_model_reference("my_model.py:f", tmp_path).path == str(tmp_path / "my_model.py")


def test_the_loaded_function_does_not_need_the_file_any_more(tmp_path):
    """Workers on other machines get the text, not the path."""
    path = write_model(tmp_path, "def g():\n    return 'shipped'\n", name="gone.py")
    source = resolve_model_reference(f"{path}:g", tmp_path)
    path.unlink()
    clone = source.model_copy(update={"sha256": "0" * 64})  # not cached in this process
    assert load_model_function(clone)() == "shipped"


def test_an_edited_file_is_a_different_source(tmp_path):
    path = write_model(tmp_path, "def f():\n    return 1\n")
    first = resolve_model_reference(f"{path}:f", tmp_path)
    path.write_text("def f():\n    return 2\n")
    second = resolve_model_reference(f"{path}:f", tmp_path)
    assert first.sha256 != second.sha256
    assert (load_model_function(first)(), load_model_function(second)()) == (1, 2)


def test_module_references_and_the_builtin():
    # The function, guarded (sys.exit and os._exit in model code are failures).
    assert (
        load_model_function(resolve_model_reference("mlp", PROJECT_ROOT)).__wrapped__ is build_mlp
    )
    source = resolve_model_reference("tasks.model.factory:build_mlp", PROJECT_ROOT)
    assert load_model_function(source).__wrapped__ is build_mlp and source.source is None


@pytest.mark.parametrize(
    "reference, message",
    [
        ("nope.py:f", r"cannot read .*nope\.py"),
        ("create_model", r"expected PATH\.py:FUNCTION"),
        ("no_such_package.models:f", r"cannot import no_such_package\.models: ModuleNotFoundError"),
        (
            "tasks.model.factory:nothing_here",
            r"no function 'nothing_here' in tasks\.model\.factory",
        ),
    ],
)
def test_references_that_do_not_load_say_why(tmp_path, reference, message):
    with pytest.raises(ConfigError, match=message):
        resolve_model_reference(reference, tmp_path)


def test_a_missing_function_lists_what_the_file_defines(tmp_path):
    path = write_model(tmp_path, "def build():\n    pass\n\ndef other():\n    pass\n")
    with pytest.raises(ConfigError, match=r"no function 'create_model'.*defines: build, other"):
        resolve_model_reference(f"{path}:create_model", tmp_path)


def test_a_file_that_fails_to_load_names_its_line(tmp_path):
    path = write_model(tmp_path, "import keras\n\nx = undefined_name\n")
    with pytest.raises(ConfigError, match=r"fails to load at line 3: NameError: .*undefined_name"):
        resolve_model_reference(f"{path}:f", tmp_path)
    broken = write_model(tmp_path, "def f(:\n", name="broken.py")
    with pytest.raises(ConfigError, match=r"fails to load at line 1: SyntaxError"):
        resolve_model_reference(f"{broken}:f", tmp_path)


def test_a_name_that_is_not_callable_is_refused(tmp_path):
    path = write_model(tmp_path, "create_model = 3\n")
    with pytest.raises(ConfigError, match="'create_model' is a int, not a function"):
        resolve_model_reference(f"{path}:create_model", tmp_path)


def test_a_module_reference_changes_identity_when_its_package_changes(tmp_path, monkeypatch):
    """A package's model function may build its layers in a sibling module: editing that
    module must retrain (the checksum is every cache key's model code)."""
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text("UNITS = 4\n")
    (package / "models.py").write_text(
        "from userpkg.layers import UNITS\n\ndef create_model():\n    return UNITS\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    first = resolve_model_reference("userpkg.models:create_model", tmp_path)
    (package / "layers.py").write_text("UNITS = 8\n")
    second = resolve_model_reference("userpkg.models:create_model", tmp_path)
    assert first.sha256 != second.sha256


@pytest.mark.parametrize(
    "call, shown", [("sys.exit(0)", "sys.exit(0)"), ("sys.exit()", "sys.exit()")]
)
def test_sys_exit_in_a_model_function_is_an_error_naming_it_and_its_line(tmp_path, call, shown):
    """SystemExit passed every `except Exception`: foldflow ended with the code's status."""
    path = write_model(tmp_path, f"import sys\n\ndef create_model():\n    {call}\n")
    function = load_model_function(resolve_model_reference(f"{path}:create_model", tmp_path))
    with pytest.raises(ModelFunctionExit) as raised:
        function()
    assert str(raised.value) == (
        f"model function create_model ({path}) called {shown} at line 4: a model function "
        "must return a compiled Keras model, not end the process"
    )


def test_sys_exit_while_a_model_file_loads_is_refused_naming_its_line(tmp_path):
    path = write_model(tmp_path, "import sys\nsys.exit(3)\n")
    with pytest.raises(
        ModelFunctionExit, match=rf"model file {path} called sys.exit\(3\) at line 2"
    ):
        resolve_model_reference(f"{path}:f", tmp_path)


OS_EXIT_CHILD = """
import sys
from pathlib import Path
from tasks.model.sources import ModelFunctionExit, load_model_function, resolve_model_reference
source = resolve_model_reference(sys.argv[1], Path("."))
try:
    load_model_function(source)()
except ModelFunctionExit as error:
    print(error)
    sys.exit(5)
"""


def test_os_exit_in_a_model_function_is_an_error_not_the_end_of_the_process(tmp_path):
    """os._exit cannot be caught: the guard in its place raises in the thread running model
    code. In a child process: without the guard, the test process itself would end."""
    import subprocess
    import sys

    path = write_model(tmp_path, "from os import _exit\n\ndef f():\n    _exit(0)\n")
    child = subprocess.run(
        [sys.executable, "-c", OS_EXIT_CHILD, f"{path}:f"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert child.returncode == 5, child.stderr[-2000:]
    assert child.stdout.strip() == (
        f"model function f ({path}) called os._exit(0) at line 4: a model function must "
        "return a compiled Keras model, not end the process"
    )
