"""Metrics of a binary classifier and their bootstrap confidence intervals: pure functions, no drawing.

``binary_metrics``, ``bootstrap_ci``, ``confusion`` and ``roc_points`` are pure functions of
``(y_true, y_prob)``; ``hpstudy.metrics_figures`` draws them.
Label 1 is the positive class (e.g. COVID); a sample is predicted positive when
``y_prob >= threshold`` (the rule of ``sklearn.metrics.roc_curve``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["METRIC_NAMES", "binary_metrics", "bootstrap_ci", "confusion", "roc_points", "check_scores", "ratio",
           "stratified_resamples", "percentile_interval", "paired_auc_bootstrap"]

METRIC_NAMES = ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1")


def check_scores(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated 1-D ``(labels as int, probabilities as float64)``."""
    y_true, y_prob = np.asarray(y_true).reshape(-1), np.asarray(y_prob, dtype="float64").reshape(-1)
    if y_true.shape != y_prob.shape:
        raise ValueError(f"y_true and y_prob must have the same length, got {len(y_true)} and {len(y_prob)}")
    if len(y_true) == 0:
        raise ValueError("y_true is empty")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(np.unique(y_true).tolist()))}")
    if not np.isfinite(y_prob).all():
        raise ValueError("y_prob contains NaN or infinite values")
    return y_true.astype("int64"), y_prob


def ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """``num / den`` elementwise, ``empty`` where ``den == 0``."""
    num, den = np.asarray(num, dtype="float64"), np.asarray(den, dtype="float64")
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, empty), where=den > 0)


def _from_counts(tp: np.ndarray, tn: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """The threshold metrics from (arrays of) confusion counts."""
    return {"accuracy": ratio(tp + tn, tp + tn + fp + fn, math.nan),
            "sensitivity": ratio(tp, tp + fn, math.nan),
            "specificity": ratio(tn, tn + fp, math.nan),
            "precision": ratio(tp, tp + fp, 0.0),
            "f1": ratio(2 * tp, 2 * tp + fp + fn, 0.0)}


def _auc_by_ranks(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """ROC AUC of each row (Mann-Whitney U with mid-ranks for ties); ``neg``/``pos`` are ``(B, n)``."""
    n_neg, n_pos = neg.shape[1], pos.shape[1]
    if n_neg == 0 or n_pos == 0:
        return np.full(len(neg), math.nan)
    ranks = rankdata(np.concatenate([neg, pos], axis=1), axis=1)
    return (ranks[:, n_neg:].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _resample(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, len(values))`` draws with replacement from ``values`` (empty rows if none)."""
    if len(values) == 0:
        return np.empty((n_boot, 0))
    return values[rng.integers(0, len(values), size=(n_boot, len(values)))]


def binary_metrics(y_true: np.ndarray, y_prob: np.ndarray, *, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, ROC AUC, sensitivity, specificity, precision, F1 and the confusion counts.

    ``sensitivity = tp/(tp+fn)``, ``specificity = tn/(tn+fp)``, ``precision = tp/(tp+fp)``,
    ``f1 = 2tp/(2tp+fp+fn)``. Precision (and F1) is 0.0 when nothing is predicted positive,
    as ``sklearn``'s ``zero_division=0``; sensitivity/specificity are NaN without positive/negative
    samples, and ROC AUC is NaN when only one class is present.

    Returns:
        ``METRIC_NAMES`` as floats plus ``tp``, ``tn``, ``fp``, ``fn`` and ``n`` as ints.

    Raises:
        ValueError: lengths differ, empty input, labels not 0/1, or non-finite probabilities.
    """
    y_true, y_prob = check_scores(y_true, y_prob)
    (tn, fp), (fn, tp) = confusion(y_true, y_prob, threshold=threshold)
    metrics = {k: float(v) for k, v in _from_counts(tp, tn, fp, fn).items()}
    both = 0 < y_true.sum() < len(y_true)
    metrics["roc_auc"] = float(roc_auc_score(y_true, y_prob)) if both else math.nan
    counts = {"tp": int(tp), "tn": int(tn), "fp": int(fp), "fn": int(fn), "n": int(len(y_true))}
    return {**{k: metrics[k] for k in METRIC_NAMES}, **counts}


def bootstrap_ci(y_true: np.ndarray, y_prob: np.ndarray, *, threshold: float = 0.5, n_boot: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals of ``METRIC_NAMES`` over the test samples.

    Resampling is stratified: each resample draws, with replacement, as many negatives from the
    negatives and as many positives from the positives as the test set has, so every resample
    has both classes and the prevalence is fixed. The interval is the ``(1 - confidence)/2`` and
    ``(1 + confidence)/2`` percentiles of the resampled metric (NaN resamples ignored).
    All resamples are computed at once with arrays (AUC by mid-ranks).

    Returns:
        metric name -> ``(low, high)``; ``(nan, nan)`` where the metric is undefined throughout.

    Raises:
        ValueError: invalid inputs, ``n_boot < 1`` or ``confidence`` outside ``(0, 1)``.
    """
    neg, pos = stratified_resamples(y_true, y_prob, n_boot=n_boot, seed=seed)
    tp, fn = (pos >= threshold).sum(axis=1), (pos < threshold).sum(axis=1)
    fp, tn = (neg >= threshold).sum(axis=1), (neg < threshold).sum(axis=1)
    samples = {**_from_counts(tp, tn, fp, fn), "roc_auc": _auc_by_ranks(neg, pos)}
    return {name: percentile_interval(samples[name], confidence) for name in METRIC_NAMES}


def stratified_resamples(y_true: np.ndarray, y_prob: np.ndarray, *, n_boot: int = 1000,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The stratified bootstrap of ``bootstrap_ci``: ``(negatives, positives)``, each ``(n_boot, n_class)``.

    Row ``b`` of both is resample ``b``: as many negatives drawn with replacement from the negatives,
    and positives from the positives, as the input has. The same seed gives the same resamples, so
    other statistics (e.g. calibration) are resampled exactly like the metrics.

    Raises:
        ValueError: invalid inputs or ``n_boot < 1``.
    """
    y_true, y_prob = check_scores(y_true, y_prob)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    neg, pos = (_resample(y_prob[y_true == label], n_boot, rng) for label in (0, 1))
    return neg, pos


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The ``(1 - confidence)/2`` and ``(1 + confidence)/2`` percentiles of ``samples``, NaNs ignored.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when every sample is NaN.

    Raises:
        ValueError: ``confidence`` outside ``(0, 1)``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values = np.asarray(samples, dtype="float64")
    values = values[~np.isnan(values)]
    if not len(values):
        return (math.nan, math.nan)
    low, high = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)])
    return (float(low), float(high))


def confusion(y_true: np.ndarray, y_prob: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """The 2x2 confusion matrix ``[[tn, fp], [fn, tp]]``: rows are the true class (negative, positive),
    columns the predicted class, as ``sklearn.metrics.confusion_matrix(labels=[0, 1])``."""
    y_true, y_prob = check_scores(y_true, y_prob)
    pred = (y_prob >= threshold).astype("int64")
    return np.bincount(2 * y_true + pred, minlength=4).reshape(2, 2)


def roc_points(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` of the ROC curve (``sklearn.metrics.roc_curve``).

    Raises:
        ValueError: invalid inputs, or only one class present (the curve is undefined).
    """
    y_true, y_prob = check_scores(y_true, y_prob)
    if not 0 < y_true.sum() < len(y_true):
        raise ValueError("the ROC curve needs both classes in y_true")
    fpr, tpr, thresholds = roc_curve(y_true, y_prob)
    return fpr, tpr, thresholds


def paired_auc_bootstrap(y_true: np.ndarray, scores: dict[str, np.ndarray], *, n_boot: int = 1000,
                         seed: int = 0) -> dict[str, np.ndarray]:
    """ROC AUC of several scores of the same samples on the same stratified resamples.

    Paired: every resample draws one set of sample indices (as many negatives from the negatives and
    positives from the positives as there are) and computes each score's AUC on it, so a difference
    between two scores' AUCs (e.g. with and without part of the image hidden) gets its own interval
    from the percentiles of the per-resample differences.

    Returns:
        name -> ``(n_boot,)`` AUCs, in the order of ``scores``.

    Raises:
        ValueError: invalid inputs, one class only, or ``n_boot < 1``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    checked = {name: check_scores(y_true, values) for name, values in scores.items()}
    labels = next(iter(checked.values()))[0] if checked else np.zeros(0, "int64")
    if not 0 < labels.sum() < len(labels):
        raise ValueError("the ROC AUC needs both classes in y_true")
    rng = np.random.default_rng(seed)
    neg, pos = (_resample(np.flatnonzero(labels == value), n_boot, rng) for value in (0, 1))
    return {name: _auc_by_ranks(values[neg], values[pos]) for name, (_, values) in checked.items()}
