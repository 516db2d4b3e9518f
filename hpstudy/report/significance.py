"""Two-sample tests for a repeated oracle comparison (pure; numbers in, numbers out).

The final best score of R repeats per oracle is a small sample, often with ties, from an unknown
distribution: a rank test fits. ``mann_whitney`` runs SciPy's two-sided Mann-Whitney U test (exact when
there are no ties, the normal approximation with continuity correction otherwise) and adds two effect
sizes that read without a table: the common-language effect size, P(A beats B) + P(tie)/2 = U_A / (n_A n_B),
and the rank-biserial correlation 2 U_A / (n_A n_B) - 1 (Kerby 2014), in [-1, 1], positive when A is better.
``holm`` adjusts the p-values of all pairs together (Holm 1979). ``smallest_p`` is the smallest p-value the
exact test can give at all, 2 / C(n_A + n_B, n_A): with 3 repeats each it is 0.1, so "not significant" with
3 repeats says nothing about the oracles. ``bootstrap_mean_difference`` is a seeded percentile interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["RankTest", "mann_whitney", "holm", "smallest_p", "repeats_needed", "bootstrap_mean_difference"]


@dataclass(frozen=True)
class RankTest:
    """A two-sided Mann-Whitney U test of sample A against sample B, oriented so that "better" is positive.

    ``u`` is U of A (pairs where A is better, ties counting one half); ``p`` is None when a sample is empty.
    """

    n_a: int
    n_b: int
    u: float | None
    p: float | None
    method: str
    common_language: float | None  # P(A better than B) + P(tie) / 2
    rank_biserial: float | None  # 2 * common_language - 1

    @property
    def smallest_p(self) -> float | None:
        """The smallest p the exact two-sided test can give with these sample sizes (no ties)."""
        return smallest_p(self.n_a, self.n_b) if self.n_a and self.n_b else None


def _oriented(values: Sequence[float], direction: str) -> np.ndarray:
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be 'max' or 'min', but got {direction!r}")
    array = np.asarray([float(v) for v in values], dtype=float)
    if np.isnan(array).any():
        raise ValueError("scores must not be NaN (leave out repeats without a completed trial)")
    return array if direction == "max" else -array


def mann_whitney(a: Sequence[float], b: Sequence[float], *, direction: str = "max") -> RankTest:
    """Two-sided Mann-Whitney U test of scores ``a`` against ``b``, with effect sizes.

    Args:
        a, b: one score per repeat (e.g. the best validation AUC each repeat found within its budget).
        direction: "max" when higher scores are better, "min" when lower are.

    Returns:
        A ``RankTest``; the effect sizes are positive when ``a`` is better. ``method`` is "exact" (no
        ties), "normal approximation (ties)", "all values equal" (p = 1) or "empty sample" (no test).

    Raises:
        ValueError: a bad direction or a NaN score.
    """
    x, y = _oriented(a, direction), _oriented(b, direction)
    if not len(x) or not len(y):
        return RankTest(len(x), len(y), None, None, "empty sample", None, None)
    pairs = len(x) * len(y)
    combined = np.concatenate([x, y])
    if np.all(combined == combined[0]):
        return RankTest(len(x), len(y), pairs / 2, 1.0, "all values equal", 0.5, 0.0)
    ties = len(np.unique(combined)) < len(combined)
    method = "asymptotic" if ties else "exact"
    result = stats.mannwhitneyu(x, y, alternative="two-sided", method=method, use_continuity=True)
    u = float(result.statistic)
    share = u / pairs
    return RankTest(len(x), len(y), u, min(1.0, float(result.pvalue)),
                    "normal approximation (ties)" if ties else "exact", share, 2 * share - 1)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of several p-values (None entries are left out and stay None).

    The i-th smallest of m p-values is multiplied by (m - i + 1); the results are made non-decreasing
    in that order and capped at 1.
    """
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (len(present) - rank) * float(p)))
        adjusted[index] = running
    return adjusted


def smallest_p(n_a: int, n_b: int) -> float:
    """Smallest two-sided p-value of the exact Mann-Whitney U test with samples of ``n_a`` and ``n_b``.

    It is reached when the two samples do not overlap at all: 2 / C(n_a + n_b, n_a), capped at 1.
    """
    if n_a < 1 or n_b < 1:
        raise ValueError(f"both samples need at least one value, but got n_a={n_a}, n_b={n_b}")
    return min(1.0, 2 / math.comb(n_a + n_b, n_a))


def repeats_needed(pairs: int, *, alpha: float = 0.05, limit: int = 1000) -> int | None:
    """Fewest repeats per oracle with which the best possible outcome passes ``alpha`` after Holm over ``pairs``.

    The smallest Holm-adjusted p is ``pairs * smallest_p(R, R)``; returns the smallest such R (None above
    ``limit``).
    """
    if pairs < 1 or not 0 < alpha < 1:
        raise ValueError(f"need pairs >= 1 and 0 < alpha < 1, but got pairs={pairs}, alpha={alpha}")
    for repeats in range(1, limit + 1):
        if pairs * smallest_p(repeats, repeats) < alpha:
            return repeats
    return None


def bootstrap_mean_difference(a: Sequence[float], b: Sequence[float], *, level: float = 0.95,
                              resamples: int = 4000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of mean(a) - mean(b), resampling each sample on its own (seeded).

    Returns None when a sample has fewer than 2 values (a resample of one value has no spread).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return None
    rng = np.random.default_rng(seed)
    means_a = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    means_b = y[rng.integers(0, len(y), size=(resamples, len(y)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means_a - means_b, [tail, 100 - tail])
    return float(low), float(high)
