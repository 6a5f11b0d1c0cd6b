"""Every refusal is one line in the words the user typed (issue 27): option names, not
pydantic's field names or dumps; an exact reason for a refused run name; no control
character from a file or a library's message reaches the terminal."""

import io

import numpy as np
import pytest

from flows.cli import run
from flows.refusals import error_line
from foldflow.runs import run_settings
from tasks.errors import DataError
from tasks.messages import escape_controls


def refusal(arguments: list[str]) -> tuple[int, str]:
    errors = io.StringIO()
    status = run(arguments, err=errors)
    return status, errors.getvalue()


def test_folds_1_names_the_option_in_one_line():
    status, error = refusal(["cv", "--folds", "1"])
    assert status == 2
    assert error == "foldflow: error: --folds must be at least 2 (got 1)\n"


def test_every_bad_option_is_named_as_typed_in_one_line():
    status, error = refusal(["cv", "--seed", "-1", "--workers", "0"])
    assert status == 2
    assert error == (
        "foldflow: error: --seed must be at least 0 (got -1); "
        "--workers must be at least 1 (got 0)\n"
    )
    status, error = refusal(["search", "--n-candidates", "0"])
    assert error == "foldflow: error: --n-candidates must be at least 1 (got 0)\n"


def test_a_run_name_with_a_non_ascii_letter_is_refused_with_the_exact_reason():
    status, error = refusal(["cv", "--run-name", "rün"])
    assert status == 2
    assert len(error.splitlines()) == 1
    assert error.startswith(
        "foldflow: error: run name 'rün' is not a safe name: 'ü' (U+00FC) is not an ASCII "
        "letter, digit, '.', '_' or '-'; use ASCII letters (A-Z, a-z)"
    )


def test_python_cv_1_names_cv(tmp_path):
    X = np.zeros((20, 2), dtype=np.float32)
    y = np.arange(20) % 2
    with pytest.raises(ValueError, match=r"^cv must be at least 2 \(got 1\)$"):
        run_settings(X, y, "binary", 1, 7, 1, "auto", "accuracy", home=tmp_path)


def test_control_characters_in_any_message_are_escaped():
    # as pyarrow quotes a row: an escape sequence, a bell, a right-to-left override, a newline
    pyarrow_text = "CSV parse error: row '\x1b[2J\x1b]0;owned\x07\u202egnp.exe\nnext' \x9b31m"
    line = error_line(DataError(f"data.csv could not be read as CSV: {pyarrow_text}"))
    assert line == (
        "foldflow: error: data.csv could not be read as CSV: CSV parse error: row "
        "'\\x1b[2J\\x1b]0;owned\\x07\\u202egnp.exe\\nnext' \\x9b31m"
    )
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line)
    assert escape_controls("rün, naïve, 日本\t") == "rün, naïve, 日本\\t"


def test_an_os_error_names_the_file_and_its_folder():
    error = OSError(28, "No space left on device", "/data/runs/cv-1/cv_results.csv")
    assert error_line(error) == (
        "foldflow: error: /data/runs/cv-1/cv_results.csv: No space left on device "
        "(in the folder /data/runs/cv-1)"
    )


def test_a_bad_max_memory_or_fit_timeout_names_the_option():
    status, error = refusal(["grid", "--max-memory", "lots"])
    assert status == 2
    assert error == (
        "foldflow: error: --max-memory: not a memory size above zero: write e.g. 300MB, 2GB "
        "or 2GiB (got 'lots')\n"
    )
    status, error = refusal(["cv", "--fit-timeout", "0"])
    assert error == "foldflow: error: --fit-timeout must be more than 0.0 (got 0.0)\n"


def test_a_flow_command_starts_its_embedded_api_once_its_options_are_checked(monkeypatch):
    """The API takes seconds to come up: it starts as soon as the options and files are read
    and checked (a refused option starts none), before the progress display, the data check
    and the flow's imports, which then overlap its start."""
    import flows.runtime.embedded_api
    from flows import cli
    from tasks.errors import FoldflowError

    events: list[str] = []
    monkeypatch.setattr(
        flows.runtime.embedded_api, "start_embedded_api", lambda: events.append("api")
    )

    def progress(*args, **kwargs):
        events.append("progress")
        raise FoldflowError("stop here")

    monkeypatch.setattr(cli, "_progress_shown", progress)
    assert refusal(["grid", "--folds", "1"])[0] == 2
    assert events == []
    status, error = refusal(["grid", "--no-refit"])
    assert (status, error) == (2, "foldflow: error: stop here\n")
    assert events == ["api", "progress"]
