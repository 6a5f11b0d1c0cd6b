"""Which candidates cannot be told apart from the best: the corrected resampled t-test of
Nadeau and Bengio (2003) over the fold scores.

k-fold scores are not independent (the training parts overlap), so a plain paired t-test over
them finds differences that are not there. The correction widens the variance of the mean
difference from s²/J to (1/J + n_test/n_train)·s², with J the number of fold scores; for k-fold
CV n_test/n_train = 1/(k-1). A candidate whose two-sided p-value against the best is above
`alpha` is "within the noise": this split of the data cannot say which of the two is better.

Repeated k-fold (r repeats of k folds, `--repeats`) gives r*k scores per candidate: the same
test over all r*k differences, J = r*k and the ratio still n_test/n_train = 1/(k-1), is
Bouckaert and Frank's (2004) corrected repeated k-fold test, t with r*k - 1 degrees of freedom.
More repeats narrow the 1/J term only; the ratio term stays, so repeats never make two
candidates look different just by being many. Pure functions: numpy and scipy only.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

ALPHA = 0.05  # a candidate is within the noise of the best when p > ALPHA


def corrected_t_test(
    scores_a: np.ndarray, scores_b: np.ndarray, test_train_ratio: float
) -> tuple[float, float]:
    """(t, two-sided p) of the paired fold differences a - b, variance corrected for the
    overlap of the training parts (Nadeau and Bengio). Equal scores on every fold: (0, 1);
    a constant non-zero difference: (±inf, 0)."""
    differences = np.asarray(scores_a, dtype=float) - np.asarray(scores_b, dtype=float)
    count = len(differences)
    if count < 2 or np.isnan(differences).any():
        return math.nan, math.nan
    mean = float(differences.mean())
    # The same gap on every fold (to rounding: 0.8 - 0.7 is not 0.7 - 0.6 in floats): no spread.
    same = np.allclose(differences, differences[0], rtol=0, atol=1e-12)
    variance = 0.0 if same else float(differences.var(ddof=1))
    corrected = (1 / count + test_train_ratio) * variance
    if corrected == 0:
        return (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / math.sqrt(corrected)
    return t, float(2 * stats.t.sf(abs(t), df=count - 1))


def kfold_ratio(n_splits: int) -> float:
    """n_test / n_train of k-fold CV: one fold against the k - 1 others."""
    return 1 / (n_splits - 1)


def p_values_against_best(
    fold_scores: np.ndarray, best: int, test_train_ratio: float, rows: np.ndarray | None = None
) -> np.ndarray:
    """Each row's two-sided p-value against row `best` (rows x folds matrix); 1.0 for the best
    itself, NaN for a row with a failed fold or outside `rows` (a boolean mask: halving
    compares the last rung's candidates only)."""
    p_values = np.full(len(fold_scores), math.nan)
    for row, scores in enumerate(fold_scores):
        if rows is not None and not rows[row]:
            continue
        if row == best:
            p_values[row] = 1.0
        else:
            p_values[row] = corrected_t_test(fold_scores[best], scores, test_train_ratio)[1]
    return p_values


def rung_p_values(
    fold_scores: np.ndarray, rungs: np.ndarray, ranks: np.ndarray, test_train_ratio: float
) -> np.ndarray:
    """Halving: each row's p-value against the best of its own rung (the lowest rank there,
    first row on a tie), so every rung's cut can be judged, not only the last rung's. Rows of
    one rung trained the same epochs on the same folds: a fair pairing, unlike a row of an
    early rung against the last rung's winner."""
    p_values = np.full(len(fold_scores), math.nan)
    rungs, ranks = np.asarray(rungs), np.asarray(ranks)
    for rung in np.unique(rungs):
        members = rungs == rung
        best = int(np.flatnonzero(members & (ranks == ranks[members].min()))[0])
        chosen = p_values_against_best(fold_scores, best, test_train_ratio, members)
        p_values[members] = chosen[members]
    return p_values


def within_noise(p_values: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """True where the best cannot be told apart from the row (p > alpha); NaN p: False."""
    return np.nan_to_num(np.asarray(p_values, dtype=float), nan=0.0) > alpha


def noise_mark(is_best: bool, p_value: float, alpha: float = ALPHA) -> str:
    """The table's mark: `best`, `≈ best` (within the noise), `worse` or '' (not compared)."""
    if is_best:
        return "best"
    if math.isnan(p_value):
        return ""
    return "≈ best" if p_value > alpha else "worse"


def rung_mark(p_value: float, alpha: float = ALPHA) -> str:
    """The mark of a halving row outside the best's rung, against the best of its own rung:
    `rung best`, `≈ rung best` (its cut or survival was inside the noise), `below rung best`
    or '' (not compared)."""
    if math.isnan(p_value):
        return ""
    if p_value == 1.0:
        return "rung best"
    return "≈ rung best" if p_value > alpha else "below rung best"
