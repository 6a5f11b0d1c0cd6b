"""One rounding of sampled values everywhere, one width of scores in tables."""

import math

from tasks.numbers import param_text, param_value, round_significant, score_text


def test_sampled_floats_are_rounded_to_four_significant_digits():
    assert round_significant(0.0017567312128322) == 0.001757
    assert param_text(0.0017567312128322) == "0.001757"
    assert param_value([0.123456, 8]) == [0.1235, 8]
    assert param_text((12, 8)) == "12x8" and param_text(True) == "True"
    assert round_significant(0.0) == 0.0 and math.isnan(round_significant(math.nan))


def test_scores_have_three_significant_digits_whatever_their_size():
    assert [score_text(v) for v in (0.695312, 0.0115, 0.03867, 0.7, 12.345)] == [
        "0.695",
        "0.0115",
        "0.0387",
        "0.700",
        "12.3",
    ]
    assert score_text(1234.5) == "1234" and score_text(math.nan) == "" and score_text(0) == "0"
