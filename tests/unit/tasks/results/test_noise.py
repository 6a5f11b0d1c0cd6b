"""The within-the-noise mark: the corrected resampled t-test of Nadeau and Bengio, checked
against examples worked by hand (closed forms of Student's t for 2 and 4 degrees of freedom:
p = 1 - t/sqrt(t² + 2) and p = 1 - t(t² + 6)/(t² + 4)^(3/2))."""

import math

import numpy as np
import pytest

from tasks.results.noise import (
    corrected_t_test,
    kfold_ratio,
    noise_mark,
    p_values_against_best,
    rung_mark,
    rung_p_values,
    within_noise,
)


def test_three_folds_worked_by_hand():
    # d = (0.1, 0, 0.2): mean 0.1, s² = 0.01; 3-fold: n_test/n_train = 1/2
    # corrected variance (1/3 + 1/2) x 0.01 = 0.008333, t = 0.1 / 0.091287 = sqrt(1.2)
    t, p = corrected_t_test([0.8, 0.7, 0.9], [0.7, 0.7, 0.7], kfold_ratio(3))
    assert t == pytest.approx(math.sqrt(1.2))
    assert p == pytest.approx(1 - math.sqrt(1.2) / math.sqrt(3.2))  # 0.3876
    assert p == pytest.approx(0.387628, abs=1e-6)


def test_the_correction_turns_a_plain_t_tests_difference_into_noise():
    # d = (0.05, 0.01, 0.03, 0.05, 0.01): mean 0.03, s² = 4e-4, 5 folds (ratio 1/4).
    best = np.array([0.80, 0.76, 0.78, 0.80, 0.76])
    other = best - [0.05, 0.01, 0.03, 0.05, 0.01]
    # plain paired t: 0.03 / sqrt(4e-4 / 5) = sqrt(11.25) = 3.354, p = 0.0285: "different"
    plain_t, plain_p = corrected_t_test(best, other, test_train_ratio=0.0)
    assert plain_t == pytest.approx(math.sqrt(11.25))
    assert plain_p == pytest.approx(1 - 3.3541020 * 17.25 / 15.25**1.5, abs=1e-6)  # 0.02846
    # corrected: (1/5 + 1/4) x 4e-4 = 1.8e-4, t = 0.03 / 0.013416 = sqrt(5), p = 0.0890
    t, p = corrected_t_test(best, other, kfold_ratio(5))
    assert t == pytest.approx(math.sqrt(5))
    assert p == pytest.approx(1 - math.sqrt(5) * 11 / 27, abs=1e-6)  # 0.08901
    assert plain_p < 0.05 < p


def test_equal_scores_are_the_same_and_a_constant_gap_is_not_noise():
    assert corrected_t_test([0.7, 0.8], [0.7, 0.8], 1.0) == (0.0, 1.0)
    assert corrected_t_test([0.7, 0.8], [0.6, 0.7], 1.0) == (math.inf, 0.0)
    t, p = corrected_t_test([0.7, 0.8], [0.7, math.nan], 1.0)  # a failed fold: no answer
    assert math.isnan(t) and math.isnan(p)


def test_marks_against_the_best_compare_only_the_rows_asked_for():
    folds = np.array([[0.8, 0.7, 0.9], [0.7, 0.7, 0.7], [0.3, 0.2, 0.4], [0.9, 0.9, 0.9]])
    p = p_values_against_best(folds, best=0, test_train_ratio=0.5, rows=np.array([1, 1, 1, 0]))
    assert p[0] == 1.0 and p[1] == pytest.approx(0.387628, abs=1e-6) and math.isnan(p[3])
    assert within_noise(p).tolist() == [True, True, False, False]
    assert [noise_mark(row == 0, value) for row, value in enumerate(p)] == [
        "best",
        "≈ best",
        "worse",
        "",
    ]


def test_repeated_kfold_uses_every_repeats_scores_with_the_kfold_ratio():
    # Bouckaert and Frank's corrected repeated k-fold test: 2 repeats of 3 folds, J = 6 scores.
    # d = (0.1, 0, 0.2, 0.1, 0, 0.2): mean 0.1, s² = 0.04 / 5 = 0.008; n_test/n_train = 1/2
    # corrected variance (1/6 + 1/2) x 0.008 = 0.005333, t = 0.1 / 0.073030 = sqrt(1.875)
    # 5 degrees of freedom, theta = atan(t / sqrt 5):
    # p = 1 - (2/pi)(theta + sin(theta) cos(theta) (1 + 2/3 cos²(theta))) = 0.229205
    t, p = corrected_t_test([0.8, 0.7, 0.9] * 2, [0.7] * 6, kfold_ratio(3))
    assert t == pytest.approx(math.sqrt(1.875))
    theta = math.atan(math.sqrt(1.875 / 5))
    closed = 1 - (2 / math.pi) * (
        theta + math.sin(theta) * math.cos(theta) * (1 + 2 / 3 * math.cos(theta) ** 2)
    )
    assert p == pytest.approx(closed) and p == pytest.approx(0.229205, abs=1e-6)
    # Taken as six folds of one 6-fold split (ratio 1/5) it would look surer than it is.
    assert corrected_t_test([0.8, 0.7, 0.9] * 2, [0.7] * 6, kfold_ratio(6))[1] < 0.13


def test_each_halving_rung_is_judged_against_its_own_best():
    folds = np.array(
        [
            [0.80, 0.70, 0.90],  # rung 0, its best (rank 1 there)
            [0.70, 0.70, 0.70],  # rung 0: p 0.387628 against the row above (worked above)
            [0.30, 0.20, 0.40],  # rung 0: far below
            [0.90, 0.90, 0.90],  # rung 1, the winner
            [0.80, 0.80, 0.80],  # rung 1: a constant gap of 0.1: not noise
        ]
    )
    rungs = np.array([0, 0, 0, 1, 1])
    ranks = np.array([2, 3, 5, 1, 2])  # ranks over the whole table
    p = rung_p_values(folds, rungs, ranks, kfold_ratio(3))
    assert p[0] == 1.0 and p[1] == pytest.approx(0.387628, abs=1e-6) and p[2] < 0.05
    assert p[3] == 1.0 and p[4] == 0.0
    assert [rung_mark(value) for value in p[:3]] == [
        "rung best",
        "≈ rung best",
        "below rung best",
    ]
    assert rung_mark(math.nan) == ""
