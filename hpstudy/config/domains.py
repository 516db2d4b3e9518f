"""What each hyperparameter name may take (its domain) and how far ``hpstudy extend`` may widen its range.

Both are properties of the name (and, for the hard limits, of the model family), not of one search
space: a space is checked against ``_DOMAINS`` when it is loaded, and an extended range never passes
``HARD_LIMITS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hpstudy.config._values import OPTIMIZER_NAMES, POOLINGS, is_number
from hpstudy.config.ranges import Limits

__all__ = ["HARD_LIMITS", "hard_limits", "domain_problem"]


def _numeric_values(values: Sequence[Any]) -> bool:
    return bool(values) and all(is_number(v) for v in values)


@dataclass(frozen=True)
class _Domain:
    kind: str  # "number" | "integer" | "bool" | "name"
    test: Callable[[Any], bool] = lambda value: True
    text: str = ""


_KINDS = {"number": "numbers (type float, int or a choice of numbers)",
          "integer": "whole numbers (type int or a choice of integers)",
          "bool": "true/false (type bool or a choice of booleans)",
          "name": "names (a choice of strings)"}
_POSITIVE, _NON_NEGATIVE = _Domain("number", lambda v: v > 0, "> 0"), _Domain("number", lambda v: v >= 0, ">= 0")
_FRACTION = _Domain("number", lambda v: 0 <= v < 1, "in [0, 1)")
_DOMAINS: dict[str, _Domain] = {
    "learning_rate": _POSITIVE, "momentum": _FRACTION, "weight_decay": _NON_NEGATIVE, "l2": _NON_NEGATIVE,
    "batch_size": _Domain("integer", lambda v: v >= 1, ">= 1"),
    "optimizer": _Domain("name", lambda v: v in OPTIMIZER_NAMES, f"one of {', '.join(OPTIMIZER_NAMES)}"),
    "n_blocks": _Domain("integer", lambda v: v >= 1, ">= 1"),
    "base_filters": _Domain("integer", lambda v: v >= 1, ">= 1"),
    "filters_growth": _POSITIVE,
    "kernel_size": _Domain("integer", lambda v: v >= 1, ">= 1"),
    "conv_dropout": _FRACTION, "dropout": _FRACTION, "use_batchnorm": _Domain("bool"),
    "n_dense": _Domain("integer", lambda v: v >= 0, ">= 0"),
    "dense_units": _Domain("integer", lambda v: v >= 1, ">= 1"),
    "pooling": _Domain("name", lambda v: v in POOLINGS, f"one of {', '.join(POOLINGS)}"),
}


# How far ``hpstudy extend`` may widen a range: physical limits, and what the course forbids. One table;
# a family's own row wins over "*". The course's baseline CNN keeps at least one dense layer (with its
# dropout), so its n_dense never goes below 1, and a convolution that sees a neighbourhood (a 1x1 kernel
# would make it a per-pixel classifier), so its kernel_size never goes below 3. weight_decay stops at 1e-6:
# Keras applies it as w -= w * weight_decay * learning_rate per step, so below 1e-6 even a learning rate of 1
# shrinks the weights by < 2 % over 20,000 steps: no decay at all, which `optimizer: adam` already covers.
HARD_LIMITS: dict[str, dict[str, Limits]] = {
    "*": {"learning_rate": Limits(0.0, 1.0, open_low=True), "momentum": Limits(0.0, 0.999),
          "weight_decay": Limits(1e-6, None), "l2": Limits(0.0, None), "batch_size": Limits(1, None),
          "n_blocks": Limits(1, None), "base_filters": Limits(1, None), "filters_growth": Limits(0.0, None, True),
          "kernel_size": Limits(1, None), "conv_dropout": Limits(0.0, 0.95), "dropout": Limits(0.0, 0.95),
          "n_dense": Limits(0, None), "dense_units": Limits(1, None)},
    "baseline_cnn": {"n_dense": Limits(1, None), "kernel_size": Limits(3, None)},
}


def hard_limits(family: str, name: str, *, image_size: Sequence[int] | None = None) -> Limits:
    """The limits a range of ``name`` may be extended to in ``family`` (unbounded when none is known).

    With ``image_size``, ``n_blocks`` stops at log2 of the shorter side: every block halves the maps, and
    blocks past a 1-pixel map add parameters but no receptive field (7 at 128 px, 6 at 64 px).
    """
    limits = HARD_LIMITS.get(family, {}).get(name) or HARD_LIMITS["*"].get(name) or Limits()
    if name == "n_blocks" and image_size:
        deepest = max(1, int(math.floor(math.log2(min(int(side) for side in image_size)))))
        limits = Limits(limits.low, deepest if limits.high is None else min(limits.high, deepest), limits.open_low)
    return limits


def _fits_kind(p: Any, kind: str) -> bool:
    values = p.values or ()
    return {
        "number": p.type in ("float", "int") or (p.type == "choice" and _numeric_values(values)),
        "integer": p.type == "int" or (p.type == "choice" and all(type(v) is int for v in values)),
        "bool": p.type == "bool" or (p.type == "choice" and all(isinstance(v, bool) for v in values)),
        "name": p.type == "choice" and all(isinstance(v, str) for v in values),
    }[kind]


def domain_problem(p: Any) -> str | None:
    """Why ``p`` cannot be used by the models (e.g. dropout >= 1, an unknown optimizer), or None."""
    domain = _DOMAINS.get(p.name)
    if domain is None:
        return None
    if not _fits_kind(p, domain.kind):
        shown = f"choice of {list(p.values or ())!r}" if p.type == "choice" else p.type
        return f"hyperparameters.{p.name}: {p.name} takes {_KINDS[domain.kind]}, but got type {shown}"
    checked = [("values", v) for v in p.values or ()] if p.type == "choice" else \
        [("low", p.low), ("high", p.high)] if p.type in ("float", "int") else []
    for key, value in checked:
        if not domain.test(value):
            return f"hyperparameters.{p.name}.{key}: {p.name} must be {domain.text}, but got {value!r}"
    return None
