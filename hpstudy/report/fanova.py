"""Functional ANOVA of one regression tree: the share of its variance each feature explains on its own.

A fitted tree cuts the box of the search space (``bounds``, one interval per feature) into leaf boxes,
each predicting a constant ``v_l``. With every point of the box equally likely (Hutter, Hoos and
Leyton-Brown 2014, "An efficient approach for assessing hyperparameter importance", ICML; the method of
Optuna's ``FanovaImportanceEvaluator``), let ``w_l`` be the share of the box's volume leaf ``l`` covers:

* the tree's mean is ``f0 = sum_l w_l v_l`` and its variance ``V = sum_l w_l (v_l - f0)^2``;
* the main effect of feature ``j`` is the prediction averaged over all other features,
  ``f_j(x) = sum_{l: x in leaf l along j} v_l * prod_{k != j} share of leaf l along k``, a step function
  of ``x`` that changes only at the tree's cut points on ``j``;
* its variance ``V_j = integral (f_j(x) - f0)^2 dx / width_j``, and the fraction ``V_j / V`` is the
  share of the tree's variance feature ``j`` explains alone. The fractions of all features sum to at
  most 1; the rest is explained by interactions.

Everything here is NumPy on the arrays of a fitted ``sklearn.tree`` (``children_left``,
``children_right``, ``feature``, ``threshold``, ``value``); any object with those arrays works.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["leaf_boxes", "main_effect_fractions", "tree_main_effects"]


def leaf_boxes(tree: Any, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box and the prediction of every leaf of ``tree``.

    Args:
        tree: a fitted tree structure (``estimator.tree_`` of scikit-learn).
        bounds: ``(n_features, 2)`` low and high of every feature.

    Returns:
        ``(boxes, values)``: boxes ``(n_leaves, n_features, 2)``, values ``(n_leaves,)``. A cut outside a
        box's interval leaves an empty box (zero width) on one side.
    """
    bounds = np.asarray(bounds, dtype=float)
    boxes, values = [], []
    stack = [(0, bounds.copy())]
    while stack:
        node, box = stack.pop()
        left, right = int(tree.children_left[node]), int(tree.children_right[node])
        if left < 0:
            boxes.append(box)
            values.append(float(np.ravel(tree.value[node])[0]))
            continue
        feature = int(tree.feature[node])
        cut = float(np.clip(tree.threshold[node], box[feature, 0], box[feature, 1]))
        below, above = box.copy(), box.copy()
        below[feature, 1] = cut
        above[feature, 0] = cut
        stack += [(right, above), (left, below)]
    return np.array(boxes).reshape(-1, len(bounds), 2), np.array(values, dtype=float)


def main_effect_fractions(boxes: np.ndarray, values: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, float]:
    """``V_j / V`` for every feature ``j`` of a partition into leaf boxes, and ``V`` itself.

    Args:
        boxes: ``(n_leaves, n_features, 2)`` leaf boxes inside ``bounds``.
        values: ``(n_leaves,)`` the prediction of every leaf.
        bounds: ``(n_features, 2)``; every feature must have a positive width.

    Returns:
        ``(fractions, variance)``; all fractions are 0 when the partition is constant (``V == 0``).

    Raises:
        ValueError: a feature of zero width (it cannot be integrated over).
    """
    bounds = np.asarray(bounds, dtype=float)
    widths = bounds[:, 1] - bounds[:, 0]
    if np.any(widths <= 0):
        raise ValueError(f"every feature needs a positive width, but got widths {widths.tolist()}")
    shares = (boxes[:, :, 1] - boxes[:, :, 0]) / widths  # (leaves, features)
    weights = shares.prod(axis=1)
    mean = float(weights @ values)
    variance = float(weights @ (values - mean) ** 2)
    fractions = np.zeros(len(bounds))
    if variance <= 1e-12 * max(1.0, mean * mean):
        return fractions, 0.0
    for j in range(len(bounds)):
        others = np.prod(np.delete(shares, j, axis=1), axis=1)
        cuts = np.unique(boxes[:, j, :])
        middles = (cuts[1:] + cuts[:-1]) / 2
        inside = (boxes[:, j, 0][:, None] <= middles) & (middles < boxes[:, j, 1][:, None])
        marginal = (others * values) @ inside
        fractions[j] = (np.diff(cuts) / widths[j]) @ (marginal - mean) ** 2 / variance
    return np.clip(fractions, 0.0, 1.0), variance


def tree_main_effects(tree: Any, bounds: np.ndarray) -> tuple[np.ndarray, float]:
    """``main_effect_fractions`` of a fitted tree (see the module docstring)."""
    boxes, values = leaf_boxes(tree, bounds)
    return main_effect_fractions(boxes, values, bounds)
