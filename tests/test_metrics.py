"""Evaluation: metrics against hand computation and scikit-learn, bootstrap intervals, figures."""

from __future__ import annotations

import math
import time

import matplotlib.image
import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from hpstudy import metrics as ev
from hpstudy import metrics_figures as figures

# positives 0.9, 0.6, 0.4, 0.8 -> tp 3, fn 1; negatives 0.2, 0.55, 0.1, 0.3 -> tn 3, fp 1.
Y_TRUE = np.array([1, 1, 1, 0, 0, 0, 0, 1])
Y_PROB = np.array([0.9, 0.6, 0.4, 0.2, 0.55, 0.1, 0.3, 0.8])


def _noisy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels with informative but imperfect probabilities."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return y, 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(0, 1.5, n))))


def test_metrics_match_the_hand_computation() -> None:
    m = ev.binary_metrics(Y_TRUE, Y_PROB)
    assert (m["tp"], m["tn"], m["fp"], m["fn"], m["n"]) == (3, 3, 1, 1, 8)
    assert all(isinstance(m[k], int) for k in ("tp", "tn", "fp", "fn", "n"))
    assert m["accuracy"] == 6 / 8 and m["sensitivity"] == 3 / 4 and m["specificity"] == 3 / 4
    assert m["precision"] == 3 / 4 and m["f1"] == 6 / 8
    assert m["roc_auc"] == 15 / 16  # 15 of the 16 (positive, negative) pairs are ordered right
    assert tuple(k for k in m if k in ev.METRIC_NAMES) == ev.METRIC_NAMES


def test_metrics_match_sklearn() -> None:
    y, p = _noisy(101, seed=1)
    pred = (p >= 0.3).astype(int)
    m = ev.binary_metrics(y, p, threshold=0.3)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))


def test_threshold_is_inclusive_and_degenerate_cases_are_defined() -> None:
    assert ev.binary_metrics(np.array([1, 0]), np.array([0.5, 0.49]))["tp"] == 1
    nothing_positive = ev.binary_metrics(np.array([1, 0, 1]), np.array([0.1, 0.2, 0.3]))
    assert nothing_positive["precision"] == 0.0 and nothing_positive["f1"] == 0.0
    one_class = ev.binary_metrics(np.array([1, 1]), np.array([0.9, 0.2]))
    assert math.isnan(one_class["roc_auc"]) and math.isnan(one_class["specificity"])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        ev.binary_metrics(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="same length"):
        ev.binary_metrics(np.array([0, 1]), np.array([0.1]))
    with pytest.raises(ValueError, match="NaN"):
        ev.binary_metrics(np.array([0, 1]), np.array([0.1, np.nan]))


def test_confusion_layout_is_rows_true_columns_predicted() -> None:
    cm = ev.confusion(np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.7, 0.1, 0.9]))
    assert cm.tolist() == [[2, 1], [1, 1]]  # [[tn, fp], [fn, tp]]
    y, p = _noisy(60, seed=2)
    np.testing.assert_array_equal(ev.confusion(y, p), confusion_matrix(y, (p >= 0.5).astype(int), labels=[0, 1]))


def test_roc_points_are_sklearns() -> None:
    y, p = _noisy(50, seed=3)
    for ours, theirs in zip(ev.roc_points(y, p), roc_curve(y, p)):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ValueError, match="both classes"):
        ev.roc_points(np.array([1, 1]), np.array([0.2, 0.3]))


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_samples() -> None:
    widths = {}
    for n in (60, 960):
        y, p = _noisy(n, seed=4)
        point = ev.binary_metrics(y, p)
        ci = ev.bootstrap_ci(y, p, n_boot=500, seed=0)
        assert set(ci) == set(ev.METRIC_NAMES)
        for name in ev.METRIC_NAMES:
            low, high = ci[name]
            assert 0.0 <= low <= point[name] <= high <= 1.0, (n, name, ci[name], point[name])
        widths[n] = {name: ci[name][1] - ci[name][0] for name in ev.METRIC_NAMES}
    for name in ev.METRIC_NAMES:
        assert widths[960][name] < 0.6 * widths[60][name], name  # about 1/sqrt(16) = 0.25 expected


def test_bootstrap_ci_is_seeded_and_fast() -> None:
    y, p = _noisy(200, seed=5)
    start = time.perf_counter()
    first = ev.bootstrap_ci(y, p, n_boot=1000, seed=3)
    assert time.perf_counter() - start < 2.0
    assert first == ev.bootstrap_ci(y, p, n_boot=1000, seed=3)
    assert first != ev.bootstrap_ci(y, p, n_boot=1000, seed=4)
    wider = ev.bootstrap_ci(y, p, n_boot=1000, seed=3, confidence=0.99)
    assert wider["roc_auc"][0] <= first["roc_auc"][0] and wider["roc_auc"][1] >= first["roc_auc"][1]


def test_bootstrap_of_a_single_class_and_bad_arguments() -> None:
    ci = ev.bootstrap_ci(np.array([1, 1, 1, 1]), np.array([0.9, 0.8, 0.3, 0.6]), n_boot=200)
    assert all(math.isnan(v) for v in ci["roc_auc"]) and all(math.isnan(v) for v in ci["specificity"])
    assert 0.0 <= ci["sensitivity"][0] <= 0.75 <= ci["sensitivity"][1] <= 1.0
    with pytest.raises(ValueError, match="confidence must be in"):
        ev.bootstrap_ci(Y_TRUE, Y_PROB, confidence=95)
    with pytest.raises(ValueError, match="n_boot must be"):
        ev.bootstrap_ci(Y_TRUE, Y_PROB, n_boot=0)


def test_auc_by_ranks_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(6)
    neg = rng.integers(0, 5, size=(20, 7)) / 4  # many ties
    pos = rng.integers(1, 6, size=(20, 5)) / 5
    ours = ev._auc_by_ranks(neg, pos)
    labels = np.r_[np.zeros(7), np.ones(5)]
    theirs = [roc_auc_score(labels, np.r_[n, p]) for n, p in zip(neg, pos)]
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_paired_auc_bootstrap_resamples_every_score_on_the_same_indices() -> None:
    y, p = _noisy(60, seed=7)
    shuffled = np.random.default_rng(8).permutation(p)
    samples = ev.paired_auc_bootstrap(y, {"a": p, "same": p.copy(), "noise": shuffled, "flipped": 1 - p},
                                      n_boot=300, seed=1)
    assert list(samples) == ["a", "same", "noise", "flipped"] and samples["a"].shape == (300,)
    np.testing.assert_array_equal(samples["a"], samples["same"])  # paired: identical scores, identical AUCs
    np.testing.assert_allclose(samples["a"] + samples["flipped"], 1.0, atol=1e-12)
    assert np.percentile(samples["a"] - samples["noise"], 2.5) > 0  # the informative score wins every time
    np.testing.assert_allclose(np.median(samples["a"]), roc_auc_score(y, p), atol=0.03)
    with pytest.raises(ValueError, match="both classes"):
        ev.paired_auc_bootstrap(np.ones(4), {"a": np.ones(4)})


def _read_png(path) -> np.ndarray:
    assert path.stat().st_size > 0
    return matplotlib.image.imread(path)


def test_plots_write_readable_pngs(tmp_path) -> None:
    y, p = _noisy(40, seed=7)
    cm_png = figures.plot_confusion_matrix(ev.confusion(y, p), ["normal", "COVID"], tmp_path / "cm.png", title="cm")
    roc_png = figures.plot_roc(y, p, tmp_path / "roc.png", title="roc", auc_ci=(0.7, 0.9))
    images = np.random.default_rng(8).integers(0, 256, size=(40, 24, 24, 1)).astype("float32")
    samples_png = figures.plot_prediction_samples(images, y, p, ["normal", "COVID"], tmp_path / "s.png", n=9)
    for path, min_h in ((cm_png, 300), (roc_png, 400), (samples_png, 500)):
        pixels = _read_png(path)
        assert pixels.ndim == 3 and pixels.shape[2] in (3, 4) and pixels.shape[0] >= min_h, path
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cm.png", "roc.png", "s.png"]
    with pytest.raises(ValueError, match="2x2 matrix"):
        figures.plot_confusion_matrix(np.eye(3), ["a", "b"], tmp_path / "x.png", title="x")
    with pytest.raises(ValueError, match="one image per label"):
        figures.plot_prediction_samples(images[:3], y, p, ["normal", "COVID"], tmp_path / "x.png")


def test_prediction_samples_frame_colours_follow_correctness(tmp_path) -> None:
    # One image, predicted wrong: the frame must be red somewhere in the figure, never green.
    images = np.full((1, 16, 16), 128.0)
    pixels = _read_png(figures.plot_prediction_samples(images, np.array([1]), np.array([0.1]), ["neg", "pos"],
                                                  tmp_path / "wrong.png"))[..., :3]
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    green = (pixels[..., 1] > 0.4) & (pixels[..., 0] < 0.3) & (pixels[..., 2] < 0.3)
    assert red.sum() > 50 and green.sum() == 0


def _red(path) -> int:
    pixels = _read_png(path)[..., :3]
    return int(((pixels[..., 0] > 0.75) & (pixels[..., 1] < 0.25) & (pixels[..., 2] < 0.25)).sum())


def test_roc_marks_the_operating_points(tmp_path) -> None:
    y, p = _noisy(40, seed=3)
    plain = figures.plot_roc(y, p, tmp_path / "plain.png", title="roc")
    marked = figures.plot_roc(y, p, tmp_path / "marked.png", title="roc", operating_points=[("chosen", 0.3),
                                                                                            ("0.5", 0.5)])
    assert _red(plain) == 0 and _red(marked) > 40, "the chosen operating point is a red marker"


def test_reliability_diagram_draws_both_curves_and_the_histogram(tmp_path) -> None:
    from hpstudy import calibration

    y, p = _noisy(200, seed=4)
    curves = {"model": calibration.reliability(y, p),
              "after temperature scaling": calibration.reliability(y, calibration.apply_temperature(p, 2.0))}
    pixels = _read_png(figures.plot_reliability(curves, tmp_path / "rel.png", title="reliability"))[..., :3]
    blue = (pixels[..., 2] > 0.6) & (pixels[..., 0] < 0.3)
    orange = (pixels[..., 0] > 0.9) & (pixels[..., 1] > 0.4) & (pixels[..., 1] < 0.7) & (pixels[..., 2] < 0.3)
    assert pixels.shape[0] > pixels.shape[1] and blue.sum() > 100 and orange.sum() > 100
