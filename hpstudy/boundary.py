"""Boundary-optimum flags: hyperparameters whose best values sit at the edge of the searched range.

A course rule: an optimum at the edge of the searched range means the range was too narrow. For each
numeric hyperparameter (and each ordered numeric choice) the best trials' values are compared with the
range and, when they sit at an end, an extension is suggested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from hpstudy.trials import completed_trials

__all__ = ["boundary_flags", "boundary_lines", "conditional_parent", "active_mask"]

# Hyperparameters that only act when another one allows it (momentum for sgd only; the dense layers'
# width and dropout only when there is a dense layer): a boundary flag on them is meaningless for trials
# where they were inactive. Each entry: (the other hyperparameter, the test its value must pass).
_ACTIVE_WHEN: dict[str, tuple[str, Any]] = {
    "momentum": ("optimizer", lambda v: v == "sgd"),
    "weight_decay": ("optimizer", lambda v: v == "adamw"),
    "dense_units": ("n_dense", lambda v: v >= 1),
    "dropout": ("n_dense", lambda v: v >= 1),
}
# Physical limits: a hyperparameter already at one of these cannot be extended past it.
_HARD_LIMITS = {
    "dropout": (0.0, 0.95),
    "conv_dropout": (0.0, 0.95),
    "momentum": (0.0, 0.999),
    "n_blocks": (1, None),
    "n_dense": (0, None),
    "base_filters": (1, None),
    "dense_units": (1, None),
    "kernel_size": (1, None),
    "batch_size": (1, None),
}


def _top_trials(trials: pd.DataFrame, direction: str, top_k: int) -> pd.DataFrame:
    done = completed_trials(trials)
    return done.sort_values("score", ascending=direction == "min", kind="stable").head(top_k)


def _position(param: Any, value: float) -> str | None:
    """'low' or 'high' when ``value`` lies at or next to that end of the range, else None.

    Being exactly at an end wins; otherwise "next to" is within 10 % of the range width (on the log
    scale for log ranges), or one step for integers.
    """
    if param.type == "choice":
        values = list(param.values)
        if value not in values:
            return None
        index = values.index(value)
        return "low" if index == 0 else "high" if index == len(values) - 1 else None
    low, high = float(param.low), float(param.high)
    if high <= low:
        return None
    if value <= low or value >= high:
        return "low" if value <= low else "high"
    if param.log:
        low, high, value = math.log10(low), math.log10(high), math.log10(value)
    margin = 0.1 * (high - low)
    if param.type == "int" and not param.log:
        margin = max(margin, float(param.step or 1))
    if value <= low + margin:
        return "low"
    if value >= high - margin:
        return "high"
    return None


def _suggestion(param: Any, side: str) -> tuple[float | None, str]:
    """Suggested new limit for ``side`` and a sentence saying it (None when it cannot be extended).

    Log ranges move one decade, linear ranges half their width (at least one step), ordered choices
    one more value in their own progression (x2 for 8, 16, 32; +2 for 3, 5).
    """
    sign = -1 if side == "low" else 1
    if param.type == "choice":
        values = [float(v) for v in param.values]
        end, neighbour = (values[0], values[1]) if side == "low" else (values[-1], values[-2])
        new = end * end / neighbour if _is_geometric(values) else 2 * end - neighbour
    else:
        end = float(param.low if side == "low" else param.high)
        if param.log:
            new = end * 10.0 ** sign
        else:
            width = float(param.high) - float(param.low)
            new = end + sign * max(width / 2, float(param.step or 0))
    lo_hard, hi_hard = _HARD_LIMITS.get(param.name, (0.0, None))
    if side == "low" and lo_hard is not None:
        new = max(new, lo_hard)
    if side == "high" and hi_hard is not None:
        new = min(new, hi_hard)
    if all(float(v).is_integer() for v in _numeric_values(param)) and param.type != "float":
        new = float(math.floor(new) if side == "low" else math.ceil(new))
    if new == end:
        return None, f"already at its hard limit {end:g}; cannot be extended"
    verb = "lower" if side == "low" else "raise"
    return new, f"{verb} the {side} end from {end:g} to {new:g}"


def _is_geometric(values: list[float]) -> bool:
    """Values that grow by one whole factor (8, 16, 32): extend them by that factor, not by a step."""
    if len(values) < 2 or any(v <= 0 for v in values):
        return False
    ratios = {values[i + 1] / values[i] for i in range(len(values) - 1)}
    return len(ratios) == 1 and float(next(iter(ratios))).is_integer() and next(iter(ratios)) > 1


def _numeric_values(param: Any) -> list[float]:
    if param.type == "choice":
        return [float(v) for v in param.values]
    return [float(param.low), float(param.high)]


def _active(trials: pd.DataFrame, name: str) -> pd.Series:
    """Rows of the trials in which ``name`` had an effect."""
    parent, test = _ACTIVE_WHEN.get(name, (None, None))
    if parent is None or f"hp_{parent}" not in trials.columns:
        return pd.Series(True, index=trials.index)
    return trials[f"hp_{parent}"].map(lambda value: bool(pd.notna(value) and test(value)))


def _is_boundary_candidate(param: Any) -> bool:
    if param.type in ("float", "int"):
        return True
    return param.type == "choice" and bool(param.is_numeric) and len(param.values) >= 2


def boundary_flags(trials: pd.DataFrame, space: Any, *, direction: str = "max",
                   top_k: int = 3) -> list[dict[str, Any]]:
    """Flag hyperparameters whose best values sit at or next to the end of their range.

    A course rule: an optimum at the edge of the searched range means the range was too narrow.
    For each numeric hyperparameter (and each ordered numeric choice) of the best trial, the value is
    compared with the range on the log scale for log ranges; "next to" means within 10 % of the range
    width (or one step for integers, or the first/last value of an ordered choice).

    Args:
        trials: the trials table.
        space: the study's ``SearchSpace``.
        direction: "max" or "min" for the score.
        top_k: how many of the best trials are counted in ``trials_at_limit``.

    Returns:
        One dict per flagged hyperparameter: hyperparameter, side, limit, best_value,
        trials_at_limit ("k/n" among the top trials), extendable, suggested_limit, suggestion.
    """
    top = _top_trials(trials, direction, top_k)
    if top.empty:
        return []
    flags = []
    for param in space.params:
        column = f"hp_{param.name}"
        if not _is_boundary_candidate(param) or column not in top.columns:
            continue
        top = _top_trials(trials[_active(trials, param.name)], direction, top_k)
        if top.empty or pd.isna(top.iloc[0][column]):
            continue
        best_value = float(top.iloc[0][column])
        side = _position(param, best_value)
        if side is None:
            continue
        at_limit = sum(_position(param, float(v)) == side for v in top[column].dropna())
        limit = _numeric_values(param)[0 if side == "low" else -1]
        new, sentence = _suggestion(param, side)
        flags.append({
            "hyperparameter": param.name,
            "side": side,
            "limit": limit,
            "best_value": best_value,
            "trials_at_limit": f"{at_limit}/{len(top)}",
            "extendable": new is not None,
            "suggested_limit": new,
            "suggestion": sentence,
        })
    return flags


def boundary_lines(flags: Sequence[Mapping[str, Any]]) -> list[str]:
    """Human-readable boundary warnings (only for ranges that can be extended)."""
    lines = []
    for flag in flags:
        if flag["extendable"]:
            lines.append(f"boundary: {flag['hyperparameter']}={flag['best_value']:g} is at the {flag['side']} end "
                         f"of its range ({flag['trials_at_limit']} of the best trials): {flag['suggestion']}.")
    return lines


def conditional_parent(name: str) -> str | None:
    """The hyperparameter whose value decides whether ``name`` acts (optimizer for momentum), or None."""
    return _ACTIVE_WHEN.get(name, (None, None))[0]


def active_mask(trials: pd.DataFrame, name: str) -> pd.Series:
    """True for the trials in which ``name`` had an effect (always, unless it is conditional and its
    condition failed, e.g. momentum when the optimizer is not sgd)."""
    return _active(trials, name)
