"""Operating points and calibration: threshold policies, Brier, ECE and temperature scaling on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm

from hpstudy import calibration as cal
from hpstudy import metrics

# negatives 0.1 0.2 0.3 0.4, positives 0.35 0.5 0.6 0.7 (see test_youden_tie_takes_the_largest_threshold)
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.6, 0.7])


def _gaussians(n: int, mu: float, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic quantiles of two logit Gaussians, N(-mu, sigma) for negatives and N(+mu, sigma) for positives."""
    q = norm.ppf((np.arange(n) + 0.5) / n) * sigma
    return np.r_[np.zeros(n), np.ones(n)], expit(np.r_[q - mu, q + mu])


def test_youden_tie_takes_the_largest_threshold() -> None:
    # J at 0.7 .25, 0.6 .5, 0.5 .75, 0.4 .5, 0.35 .75, 0.3 .5, ...: 0.5 and 0.35 tie, 0.5 is larger
    point = cal.choose_threshold(Y, P, policy="youden")
    assert point.threshold == 0.5 and (point.sensitivity, point.specificity) == (0.75, 1.0)
    assert point.target is None


def test_sensitivity_policy_is_the_largest_threshold_reaching_the_target() -> None:
    point = cal.choose_threshold(Y, P, policy="sensitivity", target=0.75)
    assert point.threshold == 0.5 and point.sensitivity == 0.75 and point.specificity == 1.0
    full = cal.choose_threshold(Y, P, policy="sensitivity", target=0.95)  # needs all 4 positives: down to 0.35
    assert full.threshold == 0.35 and full.sensitivity == 1.0 and full.specificity == 0.75


def test_specificity_policy_takes_the_best_sensitivity_then_the_largest_threshold() -> None:
    point = cal.choose_threshold(Y, P, policy="specificity", target=0.75)
    # specificity >= 0.75 allows one false positive (0.4): sensitivity 1.0 is reached at 0.35
    assert point.threshold == 0.35 and point.sensitivity == 1.0 and point.specificity == 0.75
    strict = cal.choose_threshold(Y, P, policy="specificity", target=0.9)
    assert strict.threshold == 0.5 and strict.specificity == 1.0 and strict.sensitivity == 0.75
    # plateau: thresholds 0.45 and 0.5 give the same predictions; the observed score 0.5 is reported
    assert metrics.binary_metrics(Y, P, threshold=0.45)["sensitivity"] == strict.sensitivity


def test_specificity_unreachable_except_by_nothing_positive() -> None:
    y, p = np.array([0, 1, 0, 1]), np.array([0.9, 0.5, 0.2, 0.1])  # the top score is a negative
    point = cal.choose_threshold(y, p, policy="specificity", target=0.9)
    assert point.threshold > 0.9 and point.specificity == 1.0 and point.sensitivity == 0.0


def test_exact_target_counts_as_met() -> None:
    y = np.r_[np.zeros(20), np.ones(20)]
    p = np.r_[np.linspace(0.01, 0.4, 20), np.linspace(0.3, 0.99, 20)]
    point = cal.choose_threshold(y, p, policy="sensitivity", target=0.95)  # 19 of 20 = 0.95 exactly
    assert point.sensitivity == pytest.approx(0.95) and point.threshold == pytest.approx(p[21])


@pytest.mark.parametrize("mu", [0.5, 1.0])
def test_policies_match_the_analytic_threshold_of_two_gaussians(mu: float) -> None:
    y, p = _gaussians(4000, mu)
    # equal variances: the densities cross at logit 0, where sensitivity + specificity - 1 is largest
    assert cal.choose_threshold(y, p, policy="youden").threshold == pytest.approx(0.5, abs=0.02)
    # sensitivity 0.95 at the 5 % quantile of the positives' logit: mu - 1.645
    expected = expit(mu + norm.ppf(0.05))
    assert cal.choose_threshold(y, p, policy="sensitivity", target=0.95).threshold == pytest.approx(expected, abs=2e-3)
    # specificity 0.9 at the 90 % quantile of the negatives' logit: -mu + 1.2816
    expected = expit(-mu + norm.ppf(0.9))
    point = cal.choose_threshold(y, p, policy="specificity", target=0.9)
    assert point.threshold == pytest.approx(expected, abs=2e-3) and point.specificity >= 0.9


def test_fixed_policy_computes_nothing_but_the_rates() -> None:
    point = cal.choose_threshold(Y, P)
    assert (point.policy, point.threshold, point.sensitivity, point.specificity) == ("fixed", 0.5, 0.75, 1.0)
    assert cal.choose_threshold(Y, P, policy="fixed", target=0.3).threshold == 0.3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"policy": "median"}, "policy must be one of fixed, youden, sensitivity, specificity"),
    ({"policy": "sensitivity"}, "needs a target in \\(0, 1\\), but got None"),
    ({"policy": "specificity", "target": 1.0}, "needs a target in \\(0, 1\\), but got 1.0"),
])
def test_bad_policies_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cal.choose_threshold(Y, P, **kwargs)


def test_one_class_is_refused() -> None:
    with pytest.raises(ValueError, match="needs both classes"):
        cal.choose_threshold(np.ones(4), np.linspace(0.1, 0.9, 4), policy="youden")
    with pytest.raises(ValueError, match="needs both classes"):
        cal.fit_temperature(np.zeros(4), np.linspace(0.1, 0.9, 4))


def test_brier_and_ece_match_the_hand_computation() -> None:
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.95, 0.60, 0.62, 1.0])
    assert cal.brier_score(y, p) == pytest.approx((0.05**2 + 0.05**2 + 0.4**2 + 0.62**2 + 0) / 5)
    # bins of width 1/15: 0.05 -> bin 0; 0.60 -> bin 9 (0.600..0.667); 0.62 -> bin 9; 0.95 and 1.0 -> bin 14
    # bin 0: |0 - 0.05| * 1/5; bin 9: |1/2 - 0.61| * 2/5; bin 14: |1 - 0.975| * 2/5
    expected = 0.05 / 5 + 0.11 * 2 / 5 + 0.025 * 2 / 5
    assert cal.expected_calibration_error(y, p) == pytest.approx(expected)
    table = cal.reliability(y, p)
    assert table["count"][0] == 1 and table["count"][9] == 2 and table["count"][14] == 2 and sum(table["count"]) == 5
    assert table["mean_probability"][9] == pytest.approx(0.61) and table["observed_rate"][9] == 0.5
    assert table["observed_rate"][3] is None and table["upper"][-1] == 1.0


def test_a_calibrated_model_has_a_small_ece_and_an_overconfident_one_a_large_one() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < expit(z)).astype(int)
    assert cal.expected_calibration_error(y, expit(z)) < 0.02
    assert cal.expected_calibration_error(y, expit(3 * z)) > 0.08


def test_intervals_contain_the_estimate_and_use_the_metric_resamples() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 300)
    y = (rng.random(300) < expit(z)).astype(int)
    p = expit(1.5 * z)
    ci = cal.calibration_intervals(y, p, n_boot=400, seed=5)
    for name, value in (("brier", cal.brier_score(y, p)), ("ece", cal.expected_calibration_error(y, p))):
        low, high = ci[name]
        assert low <= value <= high and high - low > 0
    neg, pos = metrics.stratified_resamples(y, p, n_boot=1, seed=5)  # the one resample, by hand
    first = np.r_[neg[0], pos[0]]
    labels = np.r_[np.zeros(neg.shape[1]), np.ones(pos.shape[1])]
    one = cal.calibration_intervals(y, p, n_boot=1, seed=5)
    assert one["brier"][0] == pytest.approx(cal.brier_score(labels, first))
    assert one["ece"][0] == pytest.approx(cal.expected_calibration_error(labels, first))
    summary = cal.calibration_summary(y, p, n_boot=400, seed=5)
    assert summary["brier_ci95"] == list(ci["brier"]) and summary["bins"] == cal.BINS


@pytest.mark.parametrize("planted", [0.5, 2.5])
def test_temperature_scaling_recovers_a_planted_temperature(planted: float) -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < expit(z / planted)).astype(int)  # the true probability is sigmoid(z / T0)
    fitted = cal.fit_temperature(y, expit(z))
    assert fitted == pytest.approx(planted, rel=0.06)
    calibrated = cal.apply_temperature(expit(z), fitted)
    assert cal.expected_calibration_error(y, calibrated) < 0.5 * cal.expected_calibration_error(y, expit(z))


def test_apply_temperature_keeps_the_ranking_and_one_half() -> None:
    p = np.array([0.1, 0.3, 0.5, 0.8, 0.99])
    scaled = cal.apply_temperature(p, 2.0)
    assert np.all(np.diff(scaled) > 0) and scaled[2] == pytest.approx(0.5)
    assert scaled[0] == pytest.approx(expit(math.log(0.1 / 0.9) / 2))
    assert np.allclose(cal.apply_temperature(p, 1.0), p)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, but got 0"):
        cal.apply_temperature(p, 0)
