"""Operating points and calibration of a binary classifier: pure functions of ``(y_true, y_prob)``.

**Thresholds.** A sample is predicted positive when ``y_prob >= threshold`` (as in ``hpstudy.metrics``).
On a finite set, every threshold in ``(s_{k-1}, s_k]`` between two neighbouring distinct scores gives the
same predictions: a plateau. ``choose_threshold`` reports each plateau by its upper end ``s_k``, an
observed score (the largest threshold that keeps that operating point; ``sklearn.metrics.roc_curve``
reports the same values). The policies:

* ``fixed``: the given value (0.5 by default); nothing is computed.
* ``youden``: the largest sensitivity + specificity - 1 over the observed scores; among tied
  operating points, the largest threshold (the most specific of them).
* ``sensitivity`` (target t): the largest threshold whose sensitivity is >= t, i.e. the best specificity
  at that sensitivity. It always exists: the lowest score predicts every sample positive.
* ``specificity`` (target t): the best sensitivity among thresholds whose specificity is >= t; among
  equal sensitivities, the largest threshold. When only "no sample positive" reaches t, the threshold
  is the next float above the highest score.

Rates are compared with a tolerance of 1e-12, so a target met exactly (19 of 20 = 0.95) counts as met.

**Calibration.** The Brier score is the mean of ``(y_prob - y_true)**2``. The expected calibration error
(ECE) uses ``BINS`` = 15 equal-width bins of the predicted probability on [0, 1] (bin ``i`` holds
``i/15 <= p < (i+1)/15``, the last one includes 1.0) and is the average over bins of
``|observed positive rate - mean predicted probability|`` weighted by the share of samples in the bin
(empty bins weigh nothing), as in Guo et al. 2017. ``reliability`` gives the per-bin data of the
reliability diagram. Their 95 % intervals use the stratified bootstrap of ``metrics.bootstrap_ci``
(``metrics.stratified_resamples``: the same resamples for the same seed). The ECE is biased upward on
small sets (sampling noise inside a bin adds to the gap), and so are its resamples: its interval sits
mostly above the estimate.

**Temperature scaling** (Guo et al. 2017) fits one ``T > 0`` on validation predictions by minimising the
log loss of ``sigmoid(logit(p) / T)`` and applies ``p' = sigmoid(logit(p) / T)``. Probabilities are
clipped to ``[1e-7, 1 - 1e-7]`` before the logit (a float32 sigmoid saturates near there). ``T > 1``
softens an over-confident model; the ranking, hence the ROC curve and its AUC, does not change, and
``p = 0.5`` stays 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from hpstudy.config import THRESHOLD_POLICIES
from hpstudy.metrics import binary_metrics, bootstrap_ci, check_scores, percentile_interval, stratified_resamples

__all__ = ["BINS", "BINNING", "TEMPERATURE_BOUNDS", "OperatingPoint", "choose_threshold", "brier_score",
           "expected_calibration_error", "reliability", "calibration_intervals", "calibration_summary",
           "evaluation_summary", "fit_temperature", "apply_temperature"]

BINS = 15
BINNING = (f"{BINS} equal-width bins of the predicted probability on [0, 1]; the ECE weighs each bin's "
           "|observed positive rate - mean predicted probability| by its share of the images")
_EPS = 1e-7
_TOLERANCE = 1e-12
TEMPERATURE_BOUNDS = (1e-2, 1e2)


@dataclass(frozen=True)
class OperatingPoint:
    """A chosen threshold and the sensitivity and specificity it gives on the data it was chosen on."""

    policy: str
    target: float | None
    threshold: float
    sensitivity: float
    specificity: float


def _both_classes(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_prob = check_scores(y_true, y_prob)
    if not 0 < y_true.sum() < len(y_true):
        raise ValueError("choosing a threshold needs both classes in y_true")
    return y_true, y_prob


def _rates(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, sensitivity, specificity)`` at every distinct score, thresholds descending."""
    thresholds = np.unique(y_prob)[::-1]
    pos, neg = np.sort(y_prob[y_true == 1]), np.sort(y_prob[y_true == 0])
    tp = len(pos) - np.searchsorted(pos, thresholds, side="left")  # positives with p >= threshold
    fp = len(neg) - np.searchsorted(neg, thresholds, side="left")
    return thresholds, tp / len(pos), 1.0 - fp / len(neg)


def choose_threshold(y_true: np.ndarray, y_prob: np.ndarray, *, policy: str = "fixed",
                     target: float | None = None) -> OperatingPoint:
    """The threshold of ``policy`` on these predictions (the rules are in the module docstring).

    Args:
        y_true, y_prob: labels 0/1 and positive-class probabilities (both classes present).
        policy: one of ``config.THRESHOLD_POLICIES``.
        target: the fixed threshold (``fixed``, default 0.5) or the rate to reach (``sensitivity``,
            ``specificity``), in (0, 1); unused by ``youden``.

    Returns:
        The ``OperatingPoint`` with the sensitivity and specificity it gives on these predictions.

    Raises:
        ValueError: invalid inputs, one class only, an unknown policy or a target outside (0, 1).
    """
    if policy not in THRESHOLD_POLICIES:
        raise ValueError(f"policy must be one of {', '.join(THRESHOLD_POLICIES)}, but got {policy!r}")
    if policy != "youden":
        target = 0.5 if target is None and policy == "fixed" else target
        if target is None or not 0.0 < float(target) < 1.0:
            raise ValueError(f"the {policy} policy needs a target in (0, 1), but got {target!r}")
    y_true, y_prob = _both_classes(y_true, y_prob)
    thresholds, sens, spec = _rates(y_true, y_prob)
    if policy == "fixed":
        threshold = float(target)
    elif policy == "youden":
        youden = sens + spec - 1.0
        threshold = float(thresholds[np.flatnonzero(youden >= youden.max() - _TOLERANCE)[0]])
    elif policy == "sensitivity":
        threshold = float(thresholds[np.flatnonzero(sens >= target - _TOLERANCE)[0]])
    else:
        threshold = _specificity_threshold(thresholds, sens, spec, float(target))
    pred = y_prob >= threshold
    return OperatingPoint(policy, None if policy == "youden" else float(target), threshold,
                          float(pred[y_true == 1].mean()), float(1.0 - pred[y_true == 0].mean()))


def _specificity_threshold(thresholds: np.ndarray, sens: np.ndarray, spec: np.ndarray, target: float) -> float:
    ok = np.flatnonzero(spec >= target - _TOLERANCE)
    if not len(ok):  # only "nothing positive" reaches the target
        return float(np.nextafter(thresholds[0], np.inf))
    best = sens[ok].max()
    return float(thresholds[ok[sens[ok] >= best - _TOLERANCE][0]])


# --------------------------------------------------------------------------- calibration
def _bin_of(y_prob: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((np.clip(y_prob, 0.0, 1.0) * bins).astype("int64"), bins - 1)


def brier_score(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean squared difference between the predicted probability and the label (0 is perfect)."""
    y_true, y_prob = check_scores(y_true, y_prob)
    return float(np.mean((y_prob - y_true) ** 2))


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, *, bins: int = BINS) -> float:
    """ECE over ``bins`` equal-width bins, weighted by bin count (see the module docstring)."""
    y_true, y_prob = check_scores(y_true, y_prob)
    index = _bin_of(y_prob, bins)
    gap = np.bincount(index, weights=y_true - y_prob, minlength=bins)  # per bin: sum(y) - sum(p)
    return float(np.abs(gap).sum() / len(y_true))


def reliability(y_true: np.ndarray, y_prob: np.ndarray, *, bins: int = BINS) -> dict[str, list[Any]]:
    """The reliability diagram's data: per bin its edges, count, mean probability and observed rate.

    Returns:
        ``{"lower", "upper", "count", "mean_probability", "observed_rate"}``, one entry per bin;
        the last two are None for an empty bin.
    """
    y_true, y_prob = check_scores(y_true, y_prob)
    index = _bin_of(y_prob, bins)
    count = np.bincount(index, minlength=bins)
    sums = (np.bincount(index, weights=w, minlength=bins) for w in (y_prob, y_true.astype("float64")))
    mean_p, rate = ([float(s / c) if c else None for s, c in zip(total, count)] for total in sums)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "count": count.tolist(),
            "mean_probability": mean_p, "observed_rate": rate}


def calibration_intervals(y_true: np.ndarray, y_prob: np.ndarray, *, n_boot: int = 1000, confidence: float = 0.95,
                          seed: int = 0, bins: int = BINS) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the Brier score and the ECE (stratified, as ``metrics.bootstrap_ci``).

    Returns:
        ``{"brier": (low, high), "ece": (low, high)}``.

    Raises:
        ValueError: invalid inputs, ``n_boot < 1`` or ``confidence`` outside (0, 1).
    """
    neg, pos = stratified_resamples(y_true, y_prob, n_boot=n_boot, seed=seed)
    probs = np.concatenate([neg, pos], axis=1)
    labels = np.concatenate([np.zeros(neg.shape[1]), np.ones(pos.shape[1])])
    n = probs.shape[1]
    brier = ((probs - labels) ** 2).mean(axis=1)
    rows = np.repeat(np.arange(len(probs)), n)  # one ECE per resample: per-row bins, one bincount
    flat = rows * bins + _bin_of(probs, bins).reshape(-1)
    gap = np.bincount(flat, weights=(labels - probs).reshape(-1), minlength=len(probs) * bins)
    ece = np.abs(gap.reshape(len(probs), bins)).sum(axis=1) / n
    return {"brier": percentile_interval(brier, confidence), "ece": percentile_interval(ece, confidence)}


def calibration_summary(y_true: np.ndarray, y_prob: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                        bins: int = BINS) -> dict[str, Any]:
    """Brier score and ECE with their 95 % intervals, and the reliability data, ready for ``metrics.json``."""
    intervals = calibration_intervals(y_true, y_prob, n_boot=n_boot, seed=seed, bins=bins)
    return {"brier": brier_score(y_true, y_prob), "brier_ci95": list(intervals["brier"]),
            "ece": expected_calibration_error(y_true, y_prob, bins=bins), "ece_ci95": list(intervals["ece"]),
            "bins": bins, "reliability": reliability(y_true, y_prob, bins=bins)}


def evaluation_summary(y_true: np.ndarray, y_prob: np.ndarray, *, threshold: float = 0.5,
                       uncalibrated: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics at ``threshold`` and at 0.5, and calibration, each with 95 % bootstrap intervals.

    Args:
        y_true: labels 0/1.
        y_prob: the probabilities evaluated (after the temperature, when one was fitted).
        threshold: the chosen operating point.
        uncalibrated: the model's own probabilities when a temperature was applied (calibration "before").
        n_boot, seed: the stratified bootstrap (the same resamples for every statistic).

    Returns:
        ``threshold``, ``metrics``, ``ci95``, ``metrics_at_0_5``, ``ci95_at_0_5`` and ``calibration``
        (``calibration_summary`` plus ``binning``, and ``before`` with ``uncalibrated``).
    """
    def at(value: float) -> tuple[dict[str, Any], dict[str, list[float]]]:
        intervals = bootstrap_ci(y_true, y_prob, threshold=value, n_boot=n_boot, seed=seed)
        return binary_metrics(y_true, y_prob, threshold=value), {k: list(v) for k, v in intervals.items()}

    metrics, ci95 = at(threshold)
    at_half = (metrics, ci95) if threshold == 0.5 else at(0.5)
    calibration = {**calibration_summary(y_true, y_prob, n_boot=n_boot, seed=seed), "binning": BINNING}
    if uncalibrated is not None:
        calibration["before"] = calibration_summary(y_true, uncalibrated, n_boot=n_boot, seed=seed)
    return {"threshold": float(threshold), "metrics": metrics, "ci95": ci95, "metrics_at_0_5": at_half[0],
            "ci95_at_0_5": at_half[1], "calibration": calibration}


# --------------------------------------------------------------------------- temperature scaling
def _logit(y_prob: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(y_prob, dtype="float64"), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def fit_temperature(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """The temperature ``T > 0`` that minimises the log loss of ``sigmoid(logit(y_prob) / T)``.

    Bounded one-dimensional search over ``log T`` (``scipy.optimize.minimize_scalar``) with T in
    [0.01, 100]; a result at a bound means the predictions carry (almost) no signal or are perfectly
    separated.

    Raises:
        ValueError: invalid inputs or one class only.
    """
    y_true, y_prob = _both_classes(y_true, y_prob)
    z = _logit(y_prob)

    def log_loss(log_t: float) -> float:
        s = z / math.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y_true * s))  # -[y log σ(s) + (1 - y) log(1 - σ(s))]

    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(log_loss, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(result.x))


def apply_temperature(y_prob: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(y_prob) / temperature)``: probabilities rescaled by a fitted temperature.

    Raises:
        ValueError: a temperature that is not a finite number > 0.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, but got {temperature!r}")
    return 1.0 / (1.0 + np.exp(-_logit(y_prob) / float(temperature)))
