"""Report figures, drawn from data computed elsewhere (``compare.py``) or read from a run directory.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend) and saved
atomically as PNG. Every study keeps one colour in all figures (its position in the comparison).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hpstudy._io import atomic_path
from hpstudy.report.compare import ComparisonData, HpRelation

__all__ = ["plot_best_so_far", "plot_hyperparameters", "plot_learning_curves", "time_unit", "study_color"]

_DPI = 100
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def _color(index: int) -> str:
    return _COLORS[index % len(_COLORS)]


def study_color(index: int) -> str:
    """The colour of the study at position ``index`` of a report, the same in every figure."""
    return _color(index)


def time_unit(max_seconds: float) -> tuple[float, str]:
    """Divisor and unit name for a time axis whose largest value is ``max_seconds``."""
    if max_seconds >= 3 * 3600:
        return 3600.0, "h"
    if max_seconds >= 180:
        return 60.0, "min"
    return 1.0, "s"


def plot_best_so_far(data: ComparisonData, path: str | Path, *, objective: str = "score") -> Path:
    """Best-so-far objective against trial number, cumulative wall-clock time and cumulative epochs.

    One step line per study (legend: study name and oracle type); the dashed line is the overall best
    and the shaded band the margin within which a study counts as "as good".
    """
    figure = Figure(figsize=(15, 4.6))
    axes = figure.subplots(1, 3, sharey=True)
    longest = max((float(c.cum_seconds[-1]) for c in data.studies.values() if len(c.cum_seconds)), default=0.0)
    divisor, unit = time_unit(longest)
    panels = (("trial_number", 1.0, "trial number (start order)"),
              ("cum_seconds", divisor, f"cumulative wall-clock training time ({unit})"),
              ("cum_epochs", 1.0, "cumulative epochs trained (all trials)"))
    for axis, (attribute, scale, label) in zip(axes, panels):
        for index, curve in enumerate(data.studies.values()):
            x = np.asarray(getattr(curve, attribute), dtype=float) / scale
            axis.step(x, curve.best_so_far, where="post", color=_color(index), lw=2, label=curve.label)
            axis.plot(x, curve.best_so_far, "o", color=_color(index), ms=3)
        _mark_target(axis, data)
        axis.margins(y=0.08)
        if attribute != "cum_seconds":
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(f"best {objective} so far ({data.direction})")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 4),
                  frameon=False, fontsize=10)
    figure.suptitle(f"Best {objective} so far against the budget spent")
    figure.tight_layout()
    return _save(figure, Path(path))


def _mark_target(axis: object, data: ComparisonData) -> None:
    if data.overall_best is None:
        return
    best, margin = data.overall_best, data.margin
    low, high = (best - margin, best) if data.direction == "max" else (best, best + margin)
    axis.axhline(best, color="grey", ls="--", lw=1)  # type: ignore[attr-defined]
    axis.axhspan(low, high, color="grey", alpha=0.12, lw=0)  # type: ignore[attr-defined]


def _grid(count: int, columns: int = 3) -> tuple[int, int]:
    columns = max(1, min(columns, count))
    return math.ceil(count / columns), columns


def plot_hyperparameters(data: ComparisonData, path: str | Path, *, objective: str = "score") -> Path | None:
    """Score against each hyperparameter's values, coloured by study (None when there is none)."""
    relations = [r for r in data.hyperparameters if not r.points.empty]
    if not relations:
        return None
    rows, columns = _grid(len(relations))
    figure = Figure(figsize=(5 * columns, 3.8 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    studies = list(data.studies)
    for axis, relation in zip(axes, relations):
        if relation.kind == "numeric" and relation.mean_by_value is None:
            _scatter(axis, relation, studies)
        else:
            _categories(axis, relation, studies)
        axis.set_title(_hp_title(relation), fontsize=10)
        axis.set_ylabel(objective)
        axis.grid(alpha=0.3)
    for axis in axes[len(relations):]:
        axis.set_visible(False)
    handles = [axes[0].scatter([], [], color=_color(i), label=data.studies[n].label) for i, n in enumerate(studies)]
    figure.legend(handles=handles, loc="upper center", ncol=min(len(handles), 4), frameon=False,
                  bbox_to_anchor=(0.5, 1.0))
    figure.suptitle(f"{objective} of completed trials against each hyperparameter", y=1.04)
    figure.tight_layout()
    return _save(figure, Path(path))


def _hp_title(relation: HpRelation) -> str:
    rho = relation.spearman.get("all")
    return relation.name if rho is None else f"{relation.name} (Spearman ρ = {rho:+.2f})"


def _scatter(axis: object, relation: HpRelation, studies: Sequence[str]) -> None:
    points = relation.points
    values = points["value"].astype(float)
    for index, name in enumerate(studies):
        subset = points[points["study"] == name]
        axis.scatter(subset["value"].astype(float), subset["score"], color=_color(index), s=22,  # type: ignore[attr-defined]
                     alpha=0.8, edgecolors="none")
    if (values > 0).all() and values.max() / values.min() >= 50:
        axis.set_xscale("log")  # type: ignore[attr-defined]
    axis.set_xlabel(f"{relation.name} (value tried)")  # type: ignore[attr-defined]


def _categories(axis: object, relation: HpRelation, studies: Sequence[str]) -> None:
    """Box per value (all studies pooled) with each trial as a jittered dot in its study's colour."""
    points = relation.points.assign(label=relation.points["value"].map(_category_label))
    order = [_category_label(v) for v in _ordered_values(relation)]
    groups = [points.loc[points["label"] == label, "score"].to_numpy() for label in order]
    axis.boxplot(groups, positions=range(len(order)), widths=0.5, showfliers=False,  # type: ignore[attr-defined]
                 medianprops={"color": "black"}, boxprops={"color": "grey"})
    rng = np.random.default_rng(0)
    for index, name in enumerate(studies):
        subset = points[points["study"] == name]
        x = np.array([order.index(label) for label in subset["label"]], dtype=float)
        x += rng.uniform(-0.15, 0.15, size=len(x))
        axis.scatter(x, subset["score"], color=_color(index), s=20, alpha=0.8, edgecolors="none", zorder=3)  # type: ignore[attr-defined]
    axis.set_xticks(range(len(order)), order, rotation=30 if len(order) > 4 else 0)  # type: ignore[attr-defined]
    axis.set_xlabel(f"{relation.name} (value tried)")  # type: ignore[attr-defined]


def _category_label(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _ordered_values(relation: HpRelation) -> list[object]:
    values = list(dict.fromkeys(relation.points["value"]))
    numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
    if numeric.notna().all():
        return [values[i] for i in np.argsort(numeric.to_numpy(dtype=float), kind="stable")]
    return sorted(values, key=str)


def _metric_names(history: pd.DataFrame) -> list[str]:
    """Training metric names that have a column (``loss`` first), e.g. loss, auc, accuracy."""
    names = [c for c in history.columns if c != "epoch" and not str(c).startswith("val_")
             and c not in ("learning_rate", "lr")]
    return sorted(names, key=lambda n: (n != "loss", n))


def plot_learning_curves(history: pd.DataFrame, path: str | Path, *, title: str,
                         best_epoch: int | None = None, max_panels: int = 4) -> Path:
    """Training and validation curves (one panel per metric) from a ``history.csv`` table."""
    epochs = history["epoch"] if "epoch" in history.columns else pd.Series(range(1, len(history) + 1))
    names = _metric_names(history)[:max_panels] or [c for c in history.columns if c != "epoch"][:1]
    figure = Figure(figsize=(4.4 * len(names), 3.6))
    axes = np.atleast_1d(figure.subplots(1, len(names)))
    for axis, name in zip(axes, names):
        axis.plot(epochs, history[name], "o-", ms=3, label=f"train {name}")
        if f"val_{name}" in history.columns:
            axis.plot(epochs, history[f"val_{name}"], "s-", ms=3, label=f"validation {name}")
        if best_epoch is not None:
            axis.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"best epoch ({best_epoch})")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, Path(path))
