"""Refusals the CLI makes in one line before any flow run (issue 27): values beyond float32's
range name the line, the column and the value (point 7: they used to pass validation, then
training failed with `Input contains NaN.` and four tracebacks); a model file that is missing
or lacks its function is refused before a flow run is created (point 10: it used to come as a
Failed run and its log)."""

import io

import pytest

from flows.cli import run
from tests.conftest import PIMA_CSV
from tests.flows.test_preflight import refusal_of


@pytest.mark.parametrize("value", ["1e39", "-1e308"])
def test_a_value_beyond_float32_exits_2_in_one_line_naming_line_column_and_value(tmp_path, value):
    lines = ["a,b,y", *[f"{k % 7},{k % 3},{k % 2}" for k in range(12)]]
    lines[3] = f"{value},1,0"
    spec = "name: mine\nurl: x.csv\nheader: true\ntarget: y\n"
    status, error = refusal_of(tmp_path, spec, lines)
    assert status == 2
    # one refusal line, no traceback (a one-time note about the cache's move may come first)
    [line] = [line for line in error.splitlines() if line.startswith("foldflow: error: ")]
    assert line == error.splitlines()[-1] and "Traceback" not in error
    shown = f"{float(value):g}"
    assert f"bad.csv, line 4, column 'a': value {shown} is beyond float32's range" in line


def flow_run_must_not_start(*arguments, **keywords):
    raise AssertionError("a flow run was started before the model was checked")


@pytest.mark.parametrize(
    ("model_file", "reference", "expected"),
    [
        (None, "nothere.py:build", "nothere.py: No such file or directory"),
        ("def other():\n    pass\n", "model.py:build", "build"),
    ],
    ids=["missing file", "missing function"],
)
def test_a_bad_model_is_refused_in_one_line_before_any_flow_run(
    tmp_path, monkeypatch, model_file, reference, expected
):
    if model_file is not None:
        (tmp_path / "model.py").write_text(model_file)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("flows.cli._run_flow", flow_run_must_not_start)
    errors = io.StringIO()
    arguments = ["cv", "--model", reference, "--data", str(PIMA_CSV), "--folds", "2"]
    status = run([*arguments, "--output-dir", str(tmp_path / "runs")], err=errors)
    assert status == 2
    [line] = [
        line for line in errors.getvalue().splitlines() if line.startswith("foldflow: error:")
    ]
    assert line.startswith("foldflow: error: model ") and expected in line, line
    assert "Traceback" not in errors.getvalue()
