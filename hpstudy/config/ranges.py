"""The ranges of numeric hyperparameters: where a value sits in one, whether it lies in it, how to widen it.

Optuna puts range logic on its distribution classes; hpstudy does the same: ``HyperParam.range`` is one
of three small frozen types, and the boundary check and ``hpstudy extend`` only ask it questions.

* ``LinearRange`` (float or int, optionally on a ``step`` grid), ``LogRange`` (float or int sampled on
  the log scale) and ``OrderedValues`` (an ordered choice of numbers, e.g. 16, 32, 64).
* A **step** is the grid step of a stepped or integer range (1 for a plain int), one value of an
  ordered choice, and 10 % of the width of a float range without a step (10 % of the log width, in
  decades, for a log range; so such a range always spans 10 steps).
* ``edge(v)`` is "low"/"high" when ``v`` **is** that end, or, on a range of at least ``MIN_STEPS`` steps,
  lies within one step of it; else None. ``n_blocks`` 2..5 (3 steps) flags 2 and 5 only.
* ``extended(side, limits)`` widens one end: log ranges by one decade, linear ranges by half their
  width (whole steps, at least one), ordered choices by one more value in their own progression (x2 for
  8, 16, 32; +2 for 3, 5). The new end never passes ``limits`` (the hard limits of the hyperparameter);
  it returns the changed fields, or None when the end cannot move.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MIN_STEPS", "Limits", "Range", "LinearRange", "LogRange", "OrderedValues"]

#: A value next to (not at) an end counts as "at the edge" only on a range of at least this many steps.
MIN_STEPS = 5
_FLOAT_STEPS = 10  # a float range without a step: one step is 10 % of its (log) width
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Limits:
    """How far a range may be extended: the lowest and highest allowed values (None: unbounded).

    ``open_low``: the lowest value itself is not allowed (a learning rate must stay above 0).
    """

    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def clip(self, new: float, end: float, side: str) -> float:
        """``new`` moved back inside the limits (an open low bound: halfway between ``end`` and it)."""
        if side == "low" and self.low is not None and new <= self.low:
            return (end + self.low) / 2 if self.open_low else self.low
        if side == "high" and self.high is not None and new > self.high:
            return self.high
        return new

    def allows(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low)
        return low_ok and (self.high is None or value <= self.high)


def _close(a: float, b: float, scale: float = 1.0) -> bool:
    return abs(a - b) <= _TOLERANCE * max(1.0, abs(scale), abs(a), abs(b))


def _is_whole(value: Any) -> bool:
    """An integer, or a real number without a fraction (3.0; NumPy's numbers too)."""
    return isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer())


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (booleans, text, NaN are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        return None
    return float(value)


class Range:
    """What every numeric range answers; subclasses define ``steps``, ``offset``, ``contains`` and ``widen``."""

    @property
    def steps(self) -> float:
        """How many steps the range spans (see the module docstring)."""
        raise NotImplementedError

    def offset(self, value: float) -> float:
        """Position of ``value`` in steps from the low end (0 at low, ``steps`` at high)."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """True when the oracle could propose ``value`` (in range, on the grid, of the right kind)."""
        raise NotImplementedError

    @property
    def ends(self) -> tuple[float, float]:
        raise NotImplementedError

    def edge(self, value: Any) -> str | None:
        """"low" or "high" when ``value`` is at (or, on a long range, one step from) that end; else None."""
        number = _number(value)
        if number is None or self.steps <= 0 or not self.contains(value):
            return None
        position = self.offset(number)
        if _close(position, 0.0) or (self.steps >= MIN_STEPS and position <= 1.0 + _TOLERANCE):
            return "low"
        if _close(position, self.steps) or (self.steps >= MIN_STEPS and position >= self.steps - 1.0 - _TOLERANCE):
            return "high"
        return None

    def extended(self, side: str, limits: Limits = Limits()) -> dict[str, Any] | None:
        """The fields of the hyperparameter that change when ``side`` is widened, or None (it cannot move)."""
        if side not in ("low", "high"):
            raise ValueError(f"side must be 'low' or 'high', but got {side!r}")
        return self.widen(side, limits)

    def widen(self, side: str, limits: Limits) -> dict[str, Any] | None:
        raise NotImplementedError


@dataclass(frozen=True)
class LinearRange(Range):
    """``low..high`` on a linear scale; ``step`` is the grid (ints: 1 when not given)."""

    low: float
    high: float
    step: float | None = None
    integer: bool = False

    @property
    def grid(self) -> float | None:
        return self.step if self.step is not None else (1 if self.integer else None)

    @property
    def steps(self) -> float:
        width = self.high - self.low
        return width / self.grid if self.grid else (_FLOAT_STEPS if width > 0 else 0)

    @property
    def ends(self) -> tuple[float, float]:
        return self.low, self.high

    def offset(self, value: float) -> float:
        unit = self.grid or (self.high - self.low) / _FLOAT_STEPS
        return (value - self.low) / unit

    def contains(self, value: Any) -> bool:
        number = _number(value)
        if number is None or (self.integer and not _is_whole(value)):
            return False
        scale = self.high - self.low
        if number < self.low - _TOLERANCE * max(1, scale) or number > self.high + _TOLERANCE * max(1, scale):
            return False
        if self.grid is None:
            return True
        k = (number - self.low) / self.grid
        return _close(k, round(k))

    def widen(self, side: str, limits: Limits) -> dict[str, Any] | None:
        end = self.low if side == "low" else self.high
        sign = -1 if side == "low" else 1
        width = self.high - self.low
        if self.grid is None:
            new = limits.clip(end + sign * width / 2, end, side) if width > 0 else end
        else:
            k = max(1, math.ceil(width / 2 / self.grid - _TOLERANCE))
            while k > 0 and not limits.allows(end + sign * k * self.grid):
                k -= 1
            new = end + sign * k * self.grid
        if self.integer:
            new = int(round(new))
        else:
            new = round(new, 12)
        if _close(new, end) or not limits.allows(new):
            return None
        return {side: new}


@dataclass(frozen=True)
class LogRange(Range):
    """``low..high`` sampled on the log scale (``low > 0``)."""

    low: float
    high: float
    integer: bool = False

    @property
    def steps(self) -> float:
        if self.high <= self.low:
            return 0
        return min(_FLOAT_STEPS, self.high - self.low) if self.integer else _FLOAT_STEPS

    @property
    def ends(self) -> tuple[float, float]:
        return self.low, self.high

    def offset(self, value: float) -> float:
        if value <= 0:
            return -math.inf
        width = math.log10(self.high) - math.log10(self.low)
        return (math.log10(value) - math.log10(self.low)) / width * self.steps

    def contains(self, value: Any) -> bool:
        number = _number(value)
        if number is None or (self.integer and not _is_whole(value)):
            return False
        return self.low * (1 - _TOLERANCE) <= number <= self.high * (1 + _TOLERANCE)

    def widen(self, side: str, limits: Limits) -> dict[str, Any] | None:
        end = self.low if side == "low" else self.high
        new = limits.clip(end / 10 if side == "low" else end * 10, end, side)
        if self.integer:
            new = max(1, math.floor(new)) if side == "low" else math.ceil(new)
            new = int(new)
        else:
            new = float(f"{new:.12g}")
        if new <= 0 or _close(new, end) or not limits.allows(new):
            return None
        return {side: new}


@dataclass(frozen=True)
class OrderedValues(Range):
    """An ordered choice of numbers in increasing order; one step is one value."""

    values: tuple[float, ...]

    @property
    def steps(self) -> float:
        return len(self.values) - 1

    @property
    def ends(self) -> tuple[float, float]:
        return self.values[0], self.values[-1]

    def offset(self, value: float) -> float:
        distances = [abs(v - value) for v in self.values]
        return float(distances.index(min(distances)))

    def contains(self, value: Any) -> bool:
        number = _number(value)
        if number is None:
            return False
        if all(isinstance(v, int) for v in self.values) and not _is_whole(value):
            return False
        return any(_close(number, v) for v in self.values)

    def widen(self, side: str, limits: Limits) -> dict[str, Any] | None:
        if len(self.values) < 2:
            return None
        values = list(self.values)
        end, neighbour = (values[0], values[1]) if side == "low" else (values[-1], values[-2])
        new: float = end * end / neighbour if _is_geometric(values) else 2 * end - neighbour
        if all(isinstance(v, int) for v in values):
            new = int(math.floor(new) if side == "low" else math.ceil(new))
        if not limits.allows(new) or new in values or (side == "low" and new >= end) or (side == "high" and new <= end):
            return None
        return {"values": tuple([new, *values] if side == "low" else [*values, new])}


def _is_geometric(values: Sequence[float]) -> bool:
    """Values that grow by one whole factor (8, 16, 32): extend them by that factor, not by a step."""
    if len(values) < 2 or any(v <= 0 for v in values):
        return False
    ratios = [values[i + 1] / values[i] for i in range(len(values) - 1)]
    return all(_close(r, ratios[0]) for r in ratios) and _close(ratios[0], round(ratios[0])) and ratios[0] > 1
