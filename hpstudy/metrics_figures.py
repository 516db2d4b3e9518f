"""Figures of a test evaluation: confusion matrix, ROC curve with operating points, reliability diagram, and a
sample of predictions.

They only draw what ``hpstudy.metrics`` computes; each is written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hpstudy._io import atomic_path
from hpstudy.metrics import binary_metrics, check_scores, ratio, roc_points

__all__ = ["plot_confusion_matrix", "plot_roc", "plot_reliability", "plot_prediction_samples"]


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return Path(path)


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike[str], *,
                          title: str) -> Path:
    """Draw a 2x2 confusion matrix with counts and the percentage of each true class per cell.

    Args:
        cm: ``[[tn, fp], [fn, tp]]`` as returned by ``confusion``.
        class_names: ``(negative, positive)`` names.
        path: the image to write (atomically).
        title: the figure title.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: ``cm`` is not 2x2 or there are not two class names.
    """
    cm = np.asarray(cm)
    if cm.shape != (2, 2) or len(class_names) != 2:
        raise ValueError(f"need a 2x2 matrix and 2 class names, got {cm.shape} and {len(class_names)}")
    share = ratio(cm, cm.sum(axis=1, keepdims=True), 0.0)
    fig = Figure(figsize=(5.2, 4.4), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, f"{count}\n({100 * share[i, j]:.1f} %)", ha="center", va="center", fontsize=12,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks([0, 1], labels=list(class_names))
    ax.set_yticks([0, 1], labels=list(class_names))
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="share of the true class")
    return _save(fig, path)


def plot_roc(y_true: np.ndarray, y_prob: np.ndarray, path: str | os.PathLike[str], *, title: str,
             auc_ci: tuple[float, float] | None = None,
             operating_points: Sequence[tuple[str, float]] = ()) -> Path:
    """Draw the ROC curve with the chance diagonal and the AUC (and its confidence interval) in the legend.

    ``operating_points`` are ``(label, threshold)`` pairs marked on the curve with their sensitivity and
    specificity (e.g. the chosen threshold and 0.5).

    Raises:
        ValueError: invalid inputs or a single class (see ``roc_points``).
    """
    fpr, tpr, _ = roc_points(y_true, y_prob)
    label = f"ROC (AUC = {binary_metrics(y_true, y_prob)['roc_auc']:.3f}"
    if auc_ci is not None:
        label += f", 95 % CI {auc_ci[0]:.3f}-{auc_ci[1]:.3f}"
    fig = Figure(figsize=(5.0, 5.0), layout="constrained")
    ax = fig.subplots()
    ax.plot(fpr, tpr, drawstyle="steps-post", linewidth=2, label=label + ")")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (AUC = 0.5)")
    for (name, threshold), (marker, colour) in zip(operating_points, (("o", "tab:red"), ("s", "black"), ("^", "c"))):
        point = binary_metrics(y_true, y_prob, threshold=threshold)
        ax.plot(1 - point["specificity"], point["sensitivity"], marker=marker, color=colour, markersize=9,
                linestyle="none", label=f"{name}: threshold {threshold:.4g} (sensitivity {point['sensitivity']:.2f}, "
                                        f"specificity {point['specificity']:.2f})")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal",
           xlabel="False positive rate (1 - specificity)", ylabel="True positive rate (sensitivity)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8 if operating_points else 9)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reliability(curves: Mapping[str, Mapping[str, Sequence[Any]]], path: str | os.PathLike[str], *,
                     title: str) -> Path:
    """Draw a reliability diagram above the histogram of the predicted probabilities.

    Args:
        curves: label -> the bins of ``calibration.reliability`` (e.g. ``{"model": ..., "after temperature":
            ...}``); each is drawn as observed positive rate against mean predicted probability over its
            non-empty bins, and as a histogram of its bin counts below.
        path: the image to write (atomically).
        title: the figure title.

    Returns:
        ``path`` as a ``Path``.
    """
    fig = Figure(figsize=(5.4, 6.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for (label, table), (style, colour) in zip(curves.items(), (("o-", "tab:blue"), ("s--", "tab:orange"))):
        shown = [i for i, count in enumerate(table["count"]) if count]
        top.plot([table["mean_probability"][i] for i in shown], [table["observed_rate"][i] for i in shown], style,
                 color=colour, label=label)
        lower, upper = np.asarray(table["lower"]), np.asarray(table["upper"])
        bottom.bar(lower, table["count"], width=upper - lower, align="edge", alpha=0.45, color=colour,
                   edgecolor=colour, label=label)
    top.set(xlim=(0, 1), ylim=(-0.02, 1.02), ylabel="Observed positive rate in the bin")
    top.set_title(title, fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set(xlabel="Predicted probability of the positive class (bin)", ylabel="Images")
    bottom.grid(alpha=0.3)
    return _save(fig, path)


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype="float32")
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def plot_prediction_samples(images: np.ndarray, y_true: np.ndarray, y_prob: np.ndarray,
                            class_names: Sequence[str], path: str | os.PathLike[str], *, n: int = 16,
                            threshold: float = 0.5, seed: int = 0) -> Path:
    """Draw a seeded random sample of test images with their true label and predicted probability.

    Images are shown as stored, not normalized: gray values on a fixed 0..255 scale (0..1 if the
    array's maximum is at most 1). Each title gives the true class, ``p(<positive>)`` and
    "correct" or "WRONG"; the frame is green when correct and red when wrong.

    Args:
        images: ``(N, H, W)`` or ``(N, H, W, 1|3)``.
        y_true, y_prob: labels 0/1 and positive-class probabilities.
        class_names: ``(negative, positive)`` names.
        path: the image to write (atomically).
        n: how many samples (at most ``N``).
        threshold: predicted positive when ``y_prob >= threshold``.
        seed: the sample's seed.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: lengths differ, labels not 0/1, not two class names, or ``n < 1``.
    """
    y_true, y_prob = check_scores(y_true, y_prob)
    images = np.asarray(images)
    if len(images) != len(y_true) or len(class_names) != 2 or n < 1:
        raise ValueError(f"need one image per label ({len(images)} images, {len(y_true)} labels), "
                         f"2 class names (got {len(class_names)}) and n >= 1 (got {n})")
    chosen = np.sort(np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False))
    vmax = 255.0 if float(images.max()) > 1.0 else 1.0
    cols = math.ceil(math.sqrt(len(chosen)))
    rows = math.ceil(len(chosen) / cols)
    fig = Figure(figsize=(2.6 * cols, 2.9 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    for ax, i in zip(axes, chosen):
        correct = (y_prob[i] >= threshold) == bool(y_true[i])
        colour = "tab:green" if correct else "tab:red"
        image = _gray(images[i])
        ax.imshow(image / vmax if image.ndim == 3 else image, cmap="gray", vmin=0.0,
                  vmax=1.0 if image.ndim == 3 else vmax)
        ax.set_title(f"true: {class_names[y_true[i]]}\np({class_names[1]}) = {y_prob[i]:.2f}, "
                     f"{'correct' if correct else 'WRONG'}", fontsize=8, color=colour)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(4)
    for ax in axes[len(chosen):]:
        ax.set_axis_off()
    fig.suptitle(f"Test predictions (threshold {threshold:g}): {len(chosen)} random samples", fontsize=11)
    return _save(fig, path)
