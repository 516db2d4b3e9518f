"""Figures of the importance and trial views, drawn from the data of ``importance.py`` and ``trial_views.py``.

Built with ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend) and saved atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hpstudy._io import atomic_path
from hpstudy.report.figures import study_color
from hpstudy.report.importance import Importance
from hpstudy.report.trial_views import EdfCurve, ParallelData, TrialCurves

__all__ = ["plot_importance", "plot_parallel_coordinates", "plot_edf", "plot_trial_curves"]

_DPI = 100
_BEST = "#d62728"


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def plot_importance(importance: Importance, path: str | Path, *, title: str = "") -> Path:
    """Horizontal bars of the importance (most important on top) with ± sd over the forest seeds."""
    names = importance.ranking()[::-1]
    index = [importance.names.index(n) for n in names]
    labels = [f"{n} (active {importance.active[n]}/{importance.n_trials})" if n in importance.conditional else n
              for n in names]
    figure = Figure(figsize=(7.5, 0.45 * len(names) + 1.6))
    axis = figure.subplots()
    axis.barh(range(len(names)), importance.mean[index], xerr=importance.sd[index], color="#1f77b4",
              ecolor="black", capsize=3)
    if importance.reference is not None:
        mean, sd = importance.reference
        axis.axvspan(max(0.0, mean - sd), mean + sd, color="grey", alpha=0.15, lw=0)
        axis.axvline(mean, color="grey", ls="--", lw=1.2, label="a random column (no effect): mean ± sd")
        axis.legend(fontsize=8, loc="lower right")
    axis.set_yticks(range(len(names)), labels)
    axis.set_xlim(0, max(1.0, float(np.max(importance.mean + importance.sd))) * 1.02)
    axis.set_xlabel(f"share of the explained variance (main effects, normalised); mean ± sd over "
                    f"{len(importance.seeds)} forest seeds")
    axis.grid(axis="x", alpha=0.3)
    figure.suptitle(title or f"fANOVA importance ({importance.n_trials} completed trials)")
    figure.tight_layout()
    return _save(figure, path)


def plot_parallel_coordinates(data: ParallelData, path: str | Path, *, title: str = "") -> Path:
    """Every completed trial as a line across the axes, coloured by score; the best trial in black."""
    columns = list(data.positions.columns)
    x = np.arange(len(columns))
    figure = Figure(figsize=(max(6.0, 1.5 * len(columns) + 2), 5.0))
    axis = figure.subplots()
    norm = Normalize(float(data.scores.min()), float(data.scores.max()) + (1e-9 if np.ptp(data.scores) == 0 else 0))
    cmap = colormaps["viridis"] if data.direction == "max" else colormaps["viridis_r"]
    for row in range(len(data.trial_ids) - 1, -1, -1):  # worst first, so the best lines end up on top
        best = row == 0
        axis.plot(x, data.positions.iloc[row].to_numpy(dtype=float), color="black" if best else
                  cmap(norm(data.scores[row])), lw=2.6 if best else 1.2, alpha=1.0 if best else 0.75,
                  zorder=3 if best else 2, label=f"best trial {data.best}" if best else None)
    for position, parallel_axis in zip(x, data.axes):
        axis.axvline(position, color="grey", lw=0.8, zorder=1)
        for tick, label in parallel_axis.ticks:
            axis.text(position + 0.03, tick, label, fontsize=8, va="center", ha="left", color="black", zorder=4,
                      bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 0.5})
    axis.set_xticks(x, columns, rotation=30 if len(columns) > 6 else 0, ha="right" if len(columns) > 6 else "center")
    axis.set_yticks([])
    axis.set_ylim(-0.25, 1.08)
    axis.set_xlim(-0.2, len(columns) - 0.4)
    for side in ("left", "right", "top"):
        axis.spines[side].set_visible(False)
    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axis, label=data.objective, pad=0.02)
    axis.legend(loc="upper left", bbox_to_anchor=(0.0, 1.12), frameon=False, fontsize=9)
    figure.suptitle(title or f"Parallel coordinates of {len(data.trial_ids)} completed trials")
    figure.tight_layout()
    return _save(figure, path)


def plot_edf(curves: Mapping[str, EdfCurve], path: str | Path, *, objective: str = "score",
             direction: str = "max", labels: Mapping[str, str] | None = None,
             colors: Mapping[str, str] | None = None) -> Path:
    """The empirical distribution function of the trial scores, one step line per study.

    ``labels`` and ``colors`` map a study name to its legend text and colour (default: the name, the
    study's position).
    """
    low = min(float(c.values[0]) for c in curves.values())
    high = max(float(c.values[-1]) for c in curves.values())
    pad = 0.02 * (high - low) if high > low else 0.01
    figure = Figure(figsize=(7.0, 4.4))
    axis = figure.subplots()
    for index, (name, curve) in enumerate(curves.items()):
        x = np.concatenate([[low - pad], curve.values, [high + pad]])
        y = np.concatenate([[0.0], curve.fraction, [1.0]])
        axis.step(x, y, where="post", color=(colors or {}).get(name, study_color(index)), lw=2,
                  label=f"{(labels or {}).get(name, name)} ({curve.n} trials)")
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel(f"{objective} of a completed trial")
    axis.set_ylabel("fraction of trials at or below")
    better = "further right" if direction == "max" else "further left"
    axis.set_title(f"Empirical distribution of the trial scores (better: {better})", fontsize=11)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=9, loc="upper left")
    figure.tight_layout()
    return _save(figure, path)


def plot_trial_curves(data: TrialCurves, path: str | Path, *, title: str = "") -> Path:
    """The objective against the epoch for every trial (grey), the best trial highlighted."""
    figure = Figure(figsize=(7.5, 4.6))
    axis = figure.subplots()
    for trial_id, line in data.lines.items():
        if trial_id != data.best:
            axis.plot(line["epoch"], line["value"], "-", color="grey", lw=1, alpha=0.55, marker="." if len(line) < 3
                      else None)
    if data.best is not None:
        line = data.lines[data.best]
        axis.plot(line["epoch"], line["value"], "o-", color=_BEST, lw=2.4, ms=4, label=f"best trial {data.best}",
                  zorder=3)
        axis.legend(fontsize=9)
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel(data.objective)
    axis.grid(alpha=0.3)
    figure.suptitle(title or f"{data.objective} of {len(data.lines)} trials against the epoch")
    figure.tight_layout()
    return _save(figure, path)
