"""Values beyond float32's range are refused by the CLI in one line naming the line, the
column and the value, before any flow run (issue 27 point 7: they used to pass validation,
then training failed with `Input contains NaN.` and four tracebacks)."""

import pytest

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
