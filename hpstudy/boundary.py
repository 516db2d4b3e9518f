"""Boundary-optimum flags: hyperparameters whose best values sit at the edge of the searched range.

A course rule: an optimum at the edge of the searched range means the range was too narrow; extend it
until you are confident that it contains the best value. For each numeric hyperparameter (and each
ordered numeric choice) the best trials' values are placed in the range by the range itself
(``HyperParam.range``, see ``hpstudy.config.ranges``: a value is at an edge when it *is* the edge, or on a
range of at least 5 steps lies within one step of it), and an extension is suggested that respects the
family's hard limits (``config.HARD_LIMITS``; the course's baseline CNN keeps a dense layer).

A hyperparameter that only acts in some trials (momentum with sgd) is judged on those trials only, and
every message names the population it counted ("3 of the 3 best trials where momentum is active").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from hpstudy.trials import completed_trials

__all__ = ["boundary_flags", "boundary_lines", "is_active", "settled_sentence", "extend_space", "conditional_parent",
           "active_mask"]

# Hyperparameters that only act when another one allows it (momentum for sgd only; the dense layers'
# width and dropout only when there is a dense layer): a boundary flag on them is meaningless for trials
# where they were inactive. Each entry: (the other hyperparameter, the test its value must pass).
_ACTIVE_WHEN: dict[str, tuple[str, Any]] = {
    "momentum": ("optimizer", lambda v: v == "sgd"),
    "weight_decay": ("optimizer", lambda v: v == "adamw"),
    "dense_units": ("n_dense", lambda v: v >= 1),
    "dropout": ("n_dense", lambda v: v >= 1),
}
_CONDITION_TEXT = {"momentum": "optimizer sgd", "weight_decay": "optimizer adamw", "dense_units": "n_dense >= 1",
                   "dropout": "n_dense >= 1"}
SETTLED = "ranges settled: no best value at a range edge"


def _top_trials(trials: pd.DataFrame, direction: str, top_k: int) -> pd.DataFrame:
    done = completed_trials(trials)
    return done.sort_values("score", ascending=direction == "min", kind="stable").head(top_k)


def _active(trials: pd.DataFrame, name: str) -> pd.Series:
    """Rows of the trials in which ``name`` had an effect."""
    parent, test = _ACTIVE_WHEN.get(name, (None, None))
    if parent is None or f"hp_{parent}" not in trials.columns:
        return pd.Series(True, index=trials.index)
    return trials[f"hp_{parent}"].map(lambda value: bool(pd.notna(value) and test(value)))


def is_active(name: str, values: Mapping[str, Any]) -> bool:
    """Whether ``name`` has an effect in a configuration ``values`` (momentum only with sgd, ...)."""
    parent, test = _ACTIVE_WHEN.get(name, (None, None))
    return parent is None or parent not in values or bool(test(values[parent]))


def _population(name: str, counted: int, at_edge: int, conditional: bool) -> str:
    """Who was counted: "3 of the 3 best trials where momentum is active (optimizer sgd) have"."""
    where = f" where {name} is active ({_CONDITION_TEXT.get(name, 'its condition holds')})" if conditional else ""
    if counted == 1:
        return f"the best trial{where} has"
    return f"{at_edge} of the {counted} best trials{where} {'has' if at_edge == 1 else 'have'}"


def _suggestion(param: Any, side: str, new_param: Any, family: str) -> tuple[Any, str]:
    """The new limit and a sentence saying it (``None`` and why not when the end cannot move)."""
    end = param.range.ends[0 if side == "low" else 1]
    verb = "lower" if side == "low" else "raise"
    if new_param is None:
        return None, f"cannot {verb} it past {end:g}, the hard limit of {param.name} for family {family}"
    new = new_param.range.ends[0 if side == "low" else 1]
    return new, f"{verb} the {side} end from {end:g} to {new:g}"


def _flag(param: Any, top: pd.DataFrame, conditional: bool, space: Any,
          image_size: Sequence[int] | None = None) -> dict[str, Any] | None:
    column = f"hp_{param.name}"
    best_value = top.iloc[0][column]
    side = param.range.edge(best_value)
    if side is None:
        return None
    at_edge = sum(param.range.edge(v) == side for v in top[column].dropna())
    new_param = space.extended(param.name, side, image_size=image_size)
    new, suggestion = _suggestion(param, side, new_param, space.family)
    population = _population(param.name, len(top), at_edge, conditional)
    message = (f"{population} {param.name} at the {side} end of its range {param.describe()} "
               f"(best {float(best_value):g})")
    return {
        "hyperparameter": param.name, "side": side, "limit": param.range.ends[0 if side == "low" else 1],
        "best_value": float(best_value), "trials_at_limit": f"{at_edge}/{len(top)}", "at_edge": int(at_edge),
        "counted": len(top), "conditional": conditional, "range": param.describe(), "extendable": new is not None,
        "suggested_limit": new, "suggested_range": None if new_param is None else new_param.describe(),
        "suggestion": suggestion, "message": f"{message}: {suggestion}",
    }


def boundary_flags(trials: pd.DataFrame, space: Any, *, direction: str = "max", top_k: int = 3,
                   image_size: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Flag hyperparameters whose best value sits at the edge of its range.

    For each hyperparameter with a numeric range, the ``top_k`` best completed trials in which it was
    active are counted; it is flagged when the best of them has its value at an edge (see the module
    docstring for what "at an edge" means).

    Args:
        trials: the trials table.
        space: the study's ``SearchSpace``.
        direction: "max" or "min" for the score.
        top_k: how many of the best trials are counted.
        image_size: the study's image size; it caps how far ``n_blocks`` may be extended.

    Returns:
        One dict per flagged hyperparameter: hyperparameter, side, limit, best_value, trials_at_limit
        ("k/n"), at_edge, counted, conditional, range, extendable, suggested_limit, suggested_range,
        suggestion and message (the whole sentence, naming the population counted).
    """
    if _top_trials(trials, direction, top_k).empty:
        return []
    flags = []
    for param in space.params:
        column = f"hp_{param.name}"
        if param.range is None or column not in trials.columns:
            continue
        active = _active(trials, param.name)
        top = _top_trials(trials[active], direction, top_k)
        if top.empty or pd.isna(top.iloc[0][column]):
            continue
        parent = _ACTIVE_WHEN.get(param.name, (None, None))[0]
        flag = _flag(param, top, conditional=f"hp_{parent}" in trials.columns, space=space, image_size=image_size)
        if flag is not None:
            flags.append(flag)
    return flags


def boundary_lines(flags: Sequence[Mapping[str, Any]]) -> list[str]:
    """Human-readable boundary warnings (only for ranges that can be extended)."""
    lines = []
    for flag in flags:
        if not flag["extendable"]:
            continue
        if "message" in flag:
            lines.append(f"boundary: {flag['message']}.")
        else:  # a flag recorded by an older hpstudy
            lines.append(f"boundary: {flag['hyperparameter']}={flag['best_value']:g} is at the {flag['side']} end "
                         f"of its range ({flag['trials_at_limit']} of the best trials): {flag['suggestion']}.")
    return lines


def settled_sentence(flags: Sequence[Mapping[str, Any]]) -> str | None:
    """"ranges settled: ..." when no flag can be extended any more; None while one can."""
    if any(flag.get("extendable", True) for flag in flags):
        return None
    if not flags:
        return SETTLED
    stuck = "; ".join(f"{f['hyperparameter']} is at its hard limit {f['limit']:g}" for f in flags)
    return f"ranges settled: no best value at an extendable range edge ({stuck})"


def extend_space(space: Any, flags: Sequence[Mapping[str, Any]], *,
                 image_size: Sequence[int] | None = None) -> tuple[Any, list[tuple[Any, Any]]]:
    """The space with every extendable flagged range widened as suggested.

    Returns:
        ``(new space, [(old HyperParam, new HyperParam), ...])`` in the space's order (empty: nothing to do).
    """
    changes = []
    for flag in flags:
        if flag.get("extendable") and flag["hyperparameter"] in space:
            new = space.extended(flag["hyperparameter"], flag["side"], image_size=image_size)
            if new is not None:
                changes.append((space[flag["hyperparameter"]], new))
                space = space.with_param(new)
    order = {name: i for i, name in enumerate(space.names)}
    return space, sorted(changes, key=lambda pair: order[pair[0].name])


def conditional_parent(name: str) -> str | None:
    """The hyperparameter whose value decides whether ``name`` acts (optimizer for momentum), or None."""
    return _ACTIVE_WHEN.get(name, (None, None))[0]


def active_mask(trials: pd.DataFrame, name: str) -> pd.Series:
    """True for the trials in which ``name`` had an effect (always, unless it is conditional and its
    condition failed, e.g. momentum when the optimizer is not sgd)."""
    return _active(trials, name)
