"""The data of the trial views people expect from a tuner (pure; ``view_figures.py`` draws them).

* ``parallel_coordinates``: every completed trial as a line across one axis per hyperparameter and a
  last axis for the score (Optuna's ``plot_parallel_coordinate``). Numeric axes are scaled to their
  searched range (log ranges on log10), choices are evenly spaced codes with their values as tick
  labels; a conditional hyperparameter that did nothing in a trial sits at ``INACTIVE`` below its axis.
* ``score_edf``: the empirical distribution function of the completed trials' scores of each study,
  the fraction of trials that scored at or below each value (Optuna's ``plot_edf``).
* ``trial_curves``: the objective against the epoch for every trial, from its ``history.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hpstudy.report.hp_axes import HpAxis, hp_axes

__all__ = ["ParallelAxis", "ParallelData", "EdfCurve", "TrialCurves", "parallel_coordinates", "score_edf",
           "trial_curves", "completed_sorted", "edf_table", "INACTIVE"]

INACTIVE = -0.15  # where an inactive value is drawn, below the axis's range [0, 1]
_MAX_NUMERIC_TICKS = 5
_MAX_GRID_TICKS = 8  # a stepped range with fewer values than this gets a tick per value


def completed_sorted(trials: pd.DataFrame, direction: str = "max") -> pd.DataFrame:
    """Completed trials with a score, best first (ties: table order)."""
    scores = pd.to_numeric(trials["score"], errors="coerce")
    keep = (trials["status"] == "COMPLETED") & scores.notna()
    done = trials[keep].assign(score=scores[keep])
    return done.sort_values("score", ascending=direction == "min", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class ParallelAxis:
    """One vertical axis: its title and tick marks (position in [0, 1] or ``INACTIVE``, label)."""

    name: str
    ticks: tuple[tuple[float, str], ...]


@dataclass(eq=False)
class ParallelData:
    """Positions of every completed trial on every axis (rows: trials, best first; last column: score)."""

    axes: list[ParallelAxis]
    positions: pd.DataFrame
    scores: np.ndarray
    trial_ids: list[str]
    objective: str
    direction: str

    @property
    def best(self) -> str | None:
        return self.trial_ids[0] if self.trial_ids else None


def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.full(values.shape, 0.5) if high <= low else (values - low) / (high - low)


def _numeric_ticks(axis: HpAxis) -> list[float]:
    """Tick positions in axis units: whole decades of a log axis, every value of a short grid, else 5."""
    low, high = axis.low, axis.high
    if axis.log and math.floor(high) - math.ceil(low) >= 1:
        return [float(k) for k in range(math.ceil(low), math.floor(high) + 1)]
    if axis.pad > 0 and not axis.log and (high - low) / (2 * axis.pad) < _MAX_GRID_TICKS:
        return [float(v) for v in np.arange(low, high + axis.pad, 2 * axis.pad)]
    return [float(v) for v in np.linspace(low, high, _MAX_NUMERIC_TICKS if high > low else 1)]


def _axis_column(axis: HpAxis, done: pd.DataFrame) -> tuple[np.ndarray, ParallelAxis]:
    coded = axis.encode(done[axis.column])
    inactive = axis.inactive(done)
    positions = np.where(inactive, INACTIVE, _scaled(coded, axis.low, axis.high))
    if axis.kind == "choice":
        ticks = [(float(p), axis.label(i)) for i, p in
                 enumerate(_scaled(np.arange(len(axis.categories), dtype=float), axis.low, axis.high))]
    else:
        marks = _numeric_ticks(axis)
        ticks = [(float(_scaled(np.array([m]), axis.low, axis.high)[0]), axis.label(m)) for m in marks]
    if inactive.any():
        ticks.append((INACTIVE, "inactive"))
    return positions, ParallelAxis(axis.name, tuple(ticks))


def parallel_coordinates(trials: pd.DataFrame, *, space: Any = None, objective: str = "score",
                         direction: str = "max") -> ParallelData:
    """Axis positions of every completed trial (see the module docstring).

    Args:
        trials: the trials table.
        space: the search space (as for ``hp_axes``); None reads the kinds from the values.
        objective: the score's name, the last axis's title.
        direction: "max" or "min"; rows are ordered best first.

    Returns:
        A ``ParallelData``; with no completed trial its table is empty.
    """
    done = completed_sorted(trials, direction)
    columns, axes = {}, []
    for axis in hp_axes(done, space):
        columns[axis.name], parallel_axis = _axis_column(axis, done)
        axes.append(parallel_axis)
    scores = done["score"].to_numpy(dtype=float)
    low, high = (float(scores.min()), float(scores.max())) if scores.size else (0.0, 1.0)
    columns[objective] = _scaled(scores, low, high)
    score_ticks = np.linspace(low, high, 5) if high > low else np.array([low])
    axes.append(ParallelAxis(objective, tuple((float(_scaled(np.array([v]), low, high)[0]), f"{v:.3g}")
                                              for v in score_ticks)))
    return ParallelData(axes, pd.DataFrame(columns, index=done["trial_id"].astype(str).tolist()), scores,
                        done["trial_id"].astype(str).tolist(), objective, direction)


@dataclass(eq=False)
class EdfCurve:
    """The EDF of one study's scores: at each distinct score, the fraction of trials at or below it."""

    name: str
    values: np.ndarray
    fraction: np.ndarray
    n: int

    def at(self, score: float) -> float:
        """The fraction of the trials that scored at or below ``score``."""
        index = np.searchsorted(self.values, score, side="right")
        return 0.0 if index == 0 else float(self.fraction[index - 1])

    def quantile(self, q: float) -> float:
        """The smallest score with at least a fraction ``q`` of the trials at or below it."""
        index = int(np.searchsorted(self.fraction, q - 1e-12, side="left"))
        return float(self.values[min(index, len(self.values) - 1)])


def score_edf(tables: Mapping[str, pd.DataFrame]) -> dict[str, EdfCurve]:
    """The EDF of the completed trials' scores of every study (studies without one are left out).

    Args:
        tables: trials table of each study, by name.

    Returns:
        Name -> ``EdfCurve`` with sorted distinct scores and the fraction of trials at or below each.
    """
    curves = {}
    for name, table in tables.items():
        scores = completed_sorted(table)["score"].to_numpy(dtype=float)
        if scores.size == 0:
            continue
        values, counts = np.unique(scores, return_counts=True)
        curves[name] = EdfCurve(name, values, np.cumsum(counts) / scores.size, int(scores.size))
    return curves


def edf_table(curves: Mapping[str, EdfCurve], direction: str = "max") -> pd.DataFrame:
    """One row per study: trials, worst, quartiles, median and best score (read off the EDF)."""
    rows = []
    for curve in curves.values():
        low, high = float(curve.values[0]), float(curve.values[-1])
        rows.append({"study": curve.name, "completed trials": curve.n,
                     "worst": low if direction == "max" else high, "25 %": curve.quantile(0.25),
                     "median": curve.quantile(0.5), "75 %": curve.quantile(0.75),
                     "best": high if direction == "max" else low})
    return pd.DataFrame(rows, columns=["study", "completed trials", "worst", "25 %", "median", "75 %", "best"])


@dataclass(eq=False)
class TrialCurves:
    """Objective against epoch per trial (best first), and the trials without a usable history."""

    objective: str
    lines: dict[str, pd.DataFrame]
    best: str | None
    missing: list[str] = field(default_factory=list)


def trial_curves(histories: Mapping[str, pd.DataFrame | None], *, objective: str,
                 best: str | None = None) -> TrialCurves:
    """One ``epoch, value`` line per trial from its history table.

    Args:
        histories: trial id -> its ``history.csv`` table (None when the file is missing).
        objective: the history column to draw (e.g. ``val_auc``).
        best: the best trial's id, drawn highlighted.

    Returns:
        A ``TrialCurves``; trials whose history is missing or lacks ``objective`` are listed in ``missing``.
    """
    lines, missing = {}, []
    for trial_id, history in histories.items():
        if history is None or history.empty or objective not in history.columns:
            missing.append(trial_id)
            continue
        epochs = history["epoch"] if "epoch" in history.columns else pd.Series(range(1, len(history) + 1))
        line = pd.DataFrame({"epoch": pd.to_numeric(epochs, errors="coerce").to_numpy(),
                             "value": pd.to_numeric(history[objective], errors="coerce").to_numpy()}).dropna()
        if line.empty:
            missing.append(trial_id)
        else:
            lines[trial_id] = line
    return TrialCurves(objective, lines, best if best in lines else None, missing)
