"""Grid and spec files are read safely: no alias bombs, no duplicate keys, no binary garbage."""

import json
import subprocess
import sys
import textwrap

import pytest

from tasks.config import PROJECT_ROOT, GridSpec, load_yaml_mapping
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError

# 9 levels of 9 aliases: a few hundred bytes that expand to 9**9 strings.
LAUGHS = ["  - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"  - &{name} [{', '.join([f'*{previous}'] * 9)}]"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
]
YAML_BOMB = "epochs:\n- \n" + "\n".join(LAUGHS) + "\n"

# The peak resident memory of this process's own address space. ru_maxrss would not do: it
# keeps the peak of the parent that forked the child, and pytest with TensorFlow is large.
PEAK_MB = """
def peak_mb():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
"""

MEASURE = (
    PEAK_MB
    + """
import json, sys, time
from tasks.config import GridSpec
from tasks.errors import ConfigError
before = peak_mb()
start = time.monotonic()
try:
    GridSpec.from_yaml(sys.argv[1])
    message = None
except ConfigError as error:
    message = str(error)
seconds = time.monotonic() - start
print(json.dumps({"message": message, "seconds": seconds, "grown_mb": peak_mb() - before}))
"""
)


def test_a_yaml_bomb_under_epochs_is_refused_within_2_s_and_200_mb(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(YAML_BOMB)
    assert len(YAML_BOMB) < 700
    # A separate process, killed after 10 s: an unbounded expansion must not take this one down.
    try:
        finished = subprocess.run(
            [sys.executable, "-c", MEASURE, str(bomb)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the YAML bomb was still being expanded after 10 s")
    assert finished.returncode == 0, finished.stderr[-2000:]
    measured = json.loads(finished.stdout.splitlines()[-1])
    assert measured["message"] is not None, "the YAML bomb was accepted"
    assert str(bomb) in measured["message"] and "alias" in measured["message"]
    assert len(measured["message"]) < 2000
    assert measured["seconds"] < 2
    assert measured["grown_mb"] < 200


def test_small_aliases_still_work(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("epochs: &sizes [1, 2]\nbatch_size: *sizes\n")
    assert GridSpec.from_yaml(path).param_grid == {"epochs": [1, 2], "batch_size": [1, 2]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs: &loop [*loop]\n", "refers to itself"),
        ("epochs: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_recursive_and_deeply_nested_yaml_is_refused(tmp_path, text, message):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        GridSpec.from_yaml(path)


@pytest.mark.parametrize("value", ["9" * 5000, "2001-02-30"])
def test_a_value_python_cannot_hold_is_refused_naming_its_line(tmp_path, value):
    path = tmp_path / "grid.yaml"
    path.write_text(f"batch_size: [10]\nepochs: [{value}]\n")
    expected = f'(?s){path} is not valid YAML: cannot read this value.*{path}", line 2'
    with pytest.raises(ConfigError, match=expected):
        GridSpec.from_yaml(path)


def test_an_oversized_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("epochs: [" + "1, " * 2_000_000 + "1]\n")
    with pytest.raises(ConfigError, match=f"{path} is .* bytes, more than"):
        GridSpec.from_yaml(path)


def test_a_duplicate_key_is_refused_naming_the_key_and_both_lines(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("epochs: [1]\nbatch_size: [10]\nepochs: [2]\n")
    with pytest.raises(ConfigError, match=f"{path}: key 'epochs' appears twice.*lines? 1 and 3"):
        GridSpec.from_yaml(path)


def test_a_duplicate_key_in_a_nested_spec_mapping_is_refused(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: d
            url: https://example.invalid/d.csv
            columns: [a, y]
            target: y
            target: a
            """
        )
    )
    with pytest.raises(ConfigError, match="key 'target' appears twice.*lines? 4 and 5"):
        DatasetSpec.from_yaml(path)


def test_a_merge_key_may_be_overridden_without_counting_as_a_duplicate(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("base: &base {name: d, target: y}\nspec:\n  <<: *base\n  name: e\n")
    assert load_yaml_mapping(path)["spec"] == {"name": "e", "target": "y"}


@pytest.mark.parametrize("loader", [GridSpec.from_yaml, DatasetSpec.from_yaml])
def test_binary_garbage_is_refused_naming_the_file(tmp_path, loader):
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match=f"{path} is not UTF-8 text.*byte 0x80"):
        loader(path)


def test_messages_that_echo_a_huge_value_stay_short(tmp_path):
    """Combinations are checked against the model function when a run starts."""
    from tests.support import combinations

    path = tmp_path / "grid.yaml"
    path.write_text(f"epochs: ['{'x' * 100_000}']\nmodel__optimizer: ['{'y' * 100_000}']\n")
    with pytest.raises(ConfigError) as refused:
        combinations(GridSpec.from_yaml(path).param_grid)
    message = str(refused.value)
    assert "epochs" in message and "xxxx" in message
    assert len(message) < 1500
    path.write_text(f"model__optimizer: ['{'y' * 100_000}']\n")
    with pytest.raises(ConfigError) as refused:
        combinations(GridSpec.from_yaml(path).param_grid)
    message = str(refused.value)
    assert "unknown optimizer 'yyyy" in message and len(message) < 1500
