"""Hyperparameter axes: how the ``hp_<name>`` columns of a trials table become numbers, one axis each.

Shared by the importance (``importance.py``) and the parallel-coordinates view (``trial_views.py``), so
both read a hyperparameter the same way:

* float and int ranges are numbers; log ranges (``log: true``) are taken on log10, as they were sampled;
* choices and booleans are codes 0 .. K-1 in the declared order (numbers by value), one per value;
* a conditional hyperparameter (``boundary.conditional_parent``: momentum for sgd, weight_decay for adamw,
  dense_units and dropout with n_dense >= 1) is *inactive* in a trial whose parent value switches it
  off, and so is a value that is missing. The axis marks those trials; what is done with them is the
  caller's choice (the importance treats them as noise, the parallel coordinates draw them apart).

The search space comes from the frozen ``study.yaml`` (``config.search_space``); without one, the kind
is read from the values (numbers or names) and a positive range spanning a factor of 50 or more is
taken on log10, as in the report's scatter plots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hpstudy.boundary import active_mask, conditional_parent

__all__ = ["HpAxis", "hp_axes", "space_specs"]

_LOG_RATIO = 50.0  # without a search space: a positive range this wide is shown and modelled on log10


@dataclass(frozen=True)
class HpAxis:
    """One hyperparameter as a number line.

    ``low``/``high`` is the searched range in axis units (log10 for log ranges, codes for choices);
    ``pad`` is half a grid step (0.5 for codes and integers, ``step / 2`` for stepped floats, 0 for a
    continuous range), so that ``[low - pad, high + pad]`` gives every possible value an equal share.
    """

    name: str
    kind: str  # "numeric" | "choice"
    low: float
    high: float
    pad: float = 0.0
    log: bool = False
    categories: tuple[Any, ...] = ()
    parent: str | None = None

    @property
    def column(self) -> str:
        return f"hp_{self.name}"

    @property
    def bounds(self) -> tuple[float, float]:
        """The interval the values are spread over (each grid value owning an equal share)."""
        return self.low - self.pad, self.high + self.pad

    @property
    def varied(self) -> bool:
        return self.high > self.low

    def encode(self, values: pd.Series) -> np.ndarray:
        """Axis coordinates of ``values``; NaN for a missing value (or one that cannot be read)."""
        if self.kind == "choice":
            keys = [_key(c) for c in self.categories]
            return np.array([keys.index(k) if (k := _key(v)) in keys else math.nan for v in values], dtype=float)
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                numbers = np.where(numbers > 0, np.log10(numbers), math.nan)
        return numbers

    def label(self, position: float) -> str:
        """How the axis value ``position`` reads as a hyperparameter value."""
        if self.kind == "choice":
            index = int(round(position))
            return _text(self.categories[index]) if 0 <= index < len(self.categories) else ""
        return f"{10 ** position:.3g}" if self.log else f"{position:.3g}"

    def inactive(self, trials: pd.DataFrame) -> np.ndarray:
        """True for the trials in which this hyperparameter did not act, or has no value."""
        if self.column not in trials.columns:
            return np.ones(len(trials), dtype=bool)
        switched_off = ~active_mask(trials, self.name).to_numpy(dtype=bool)
        return switched_off | np.isnan(self.encode(trials[self.column]))


def _key(value: Any) -> Any:
    """A comparable key: 32 and 32.0 match, True matches "True" (a CSV reads booleans back as either)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.number)):
        return float(value)
    text = str(value)
    try:
        return float(text)
    except ValueError:
        return text


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def space_specs(space: Any) -> dict[str, Mapping[str, Any]]:
    """The short-form spec of every hyperparameter, from a ``SearchSpace``, its ``to_dict()``, the
    ``hyperparameters`` mapping itself, or None (then: empty)."""
    if space is None:
        return {}
    if hasattr(space, "to_dict"):
        space = space.to_dict()
    if isinstance(space, Mapping) and isinstance(space.get("hyperparameters"), Mapping):
        space = space["hyperparameters"]
    return {str(k): v for k, v in dict(space).items() if isinstance(v, Mapping)}


def _from_spec(name: str, spec: Mapping[str, Any]) -> HpAxis | None:
    kind = spec.get("type")
    parent = conditional_parent(name)
    if kind in ("choice", "bool"):
        categories = tuple(spec.get("values") or ()) if kind == "choice" else (False, True)
        return HpAxis(name, "choice", 0.0, float(len(categories) - 1), 0.5, categories=categories, parent=parent)
    if kind not in ("float", "int") or spec.get("low") is None or spec.get("high") is None:
        return None
    low, high = float(spec["low"]), float(spec["high"])
    if spec.get("log") and low > 0:
        return HpAxis(name, "numeric", math.log10(low), math.log10(high), log=True, parent=parent)
    step = spec.get("step") or (1 if kind == "int" else None)
    return HpAxis(name, "numeric", low, high, float(step) / 2 if step else 0.0, parent=parent)


def _from_values(name: str, values: pd.Series) -> HpAxis | None:
    present = values.dropna()
    if present.empty:
        return None
    parent = conditional_parent(name)
    numbers = pd.to_numeric(present, errors="coerce")
    is_bool = present.map(lambda v: isinstance(v, (bool, np.bool_)) or str(v) in ("True", "False")).all()
    if numbers.notna().all() and not is_bool:
        low, high = float(numbers.min()), float(numbers.max())
        if low > 0 and high / low >= _LOG_RATIO:
            return HpAxis(name, "numeric", math.log10(low), math.log10(high), log=True, parent=parent)
        whole = bool(np.all(np.isclose(numbers, np.round(numbers))))
        return HpAxis(name, "numeric", low, high, 0.5 if whole else 0.0, parent=parent)
    keys = sorted({_key(v) for v in present}, key=lambda k: (isinstance(k, str), k))
    categories = tuple(k == "True" if is_bool else k for k in keys)
    return HpAxis(name, "choice", 0.0, float(len(categories) - 1), 0.5, categories=categories, parent=parent)


def _widened(axis: HpAxis, values: pd.Series) -> HpAxis:
    """The axis stretched over values found outside the declared range (a space edited by hand)."""
    if axis.kind == "choice":
        found = [v for v in values.dropna().unique() if _key(v) not in {_key(c) for c in axis.categories}]
        if not found:
            return axis
        categories = axis.categories + tuple(sorted(found, key=str))
        return HpAxis(axis.name, "choice", 0.0, float(len(categories) - 1), 0.5, categories=categories,
                      parent=axis.parent)
    coded = axis.encode(values)
    coded = coded[~np.isnan(coded)]
    if coded.size == 0 or (coded.min() >= axis.low and coded.max() <= axis.high):
        return axis
    return HpAxis(axis.name, "numeric", min(axis.low, float(coded.min())), max(axis.high, float(coded.max())),
                  axis.pad, axis.log, parent=axis.parent)


def hp_axes(trials: pd.DataFrame, space: Any = None) -> list[HpAxis]:
    """One axis per ``hp_<name>`` column of ``trials``, in column order.

    Args:
        trials: a trials table (``hpstudy.trials`` columns).
        space: the study's search space (``SearchSpace``, its ``to_dict()`` or the ``hyperparameters``
            mapping); None reads each kind from the values.

    Returns:
        The axes of the columns that hold at least one value (a choice lists its declared values first).
    """
    specs = space_specs(space)
    axes = []
    for column in (c for c in trials.columns if str(c).startswith("hp_")):
        name = str(column)[3:]
        axis = _from_spec(name, specs[name]) if name in specs else None
        axis = axis or _from_values(name, trials[column])
        if axis is not None:
            axes.append(_widened(axis, trials[column]))
    return axes
