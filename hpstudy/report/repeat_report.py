"""The report of an oracle comparison with repeats: its figures and its page (HTML and Markdown).

The numbers come from ``report.repeats`` (pure, tested); this module only draws them and lays them out
with the document blocks every report uses. Layout of ``out_dir``::

    report.html                 self-contained page (figures embedded)
    report.md                   the same content in Markdown, linking the PNGs below
    repeats/best_so_far_epochs.png, repeats/best_so_far_seconds.png
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from hpstudy._io import atomic_path, atomic_write_text
from hpstudy.report.assets import Assets
from hpstudy.report.document import Block, Figure, Note, Para, Section, Table
from hpstudy.report.figures import time_unit
from hpstudy.report.html import render_html, render_markdown
from hpstudy.report.repeats import RepeatComparison, budget_statement

__all__ = ["RepeatReport", "plot_repeat_bands", "repeat_section", "write_repeat_report"]

_LABELS = {"epochs": "cumulative epochs trained", "seconds": "cumulative training time"}


@dataclass
class RepeatReport:
    """What ``write_repeat_report`` wrote."""

    out_dir: Path
    html: Path
    markdown: Path
    figures: list[Path]
    data: RepeatComparison


def plot_repeat_bands(data: RepeatComparison, path: str | Path, *, axis: str = "epochs") -> Path:
    """Median best-so-far of each oracle against ``axis`` ("epochs" or "seconds") with its interquartile band.

    Each repeat is drawn as a thin step line with a dot per trial, the final median as a diamond; the dashed
    horizontal line is the overall best, the dotted vertical line the budget (when it is on this axis).
    """
    figure = MplFigure(figsize=(8, 4.8))
    ax = figure.subplots()
    longest = max((float(b[axis].grid[-1]) for b in data.bands.values()), default=0.0)
    scale, unit = time_unit(longest) if axis == "seconds" else (1.0, "")
    for index, (name, bands) in enumerate(data.bands.items()):
        color, band = f"C{index}", bands[axis]
        for run in data.runs[name]:
            x = np.asarray(run.cum_epochs if axis == "epochs" else run.cum_seconds, dtype=float) / scale
            ax.step(x, run.best_so_far, where="post", color=color, lw=0.8, alpha=0.35)
            ax.plot(x, run.best_so_far, ".", color=color, ms=4, alpha=0.5)  # each trial's end
        ax.step(band.grid / scale, band.median, where="post", color=color, lw=2.2,
                label=f"{name}: median of {band.repeats}")
        known = np.flatnonzero(~np.isnan(band.median))
        if len(known):  # the final median, visible even when the band is only one point wide
            ax.plot(band.grid[known[-1]] / scale, band.median[known[-1]], "D", color=color, ms=6)
        ax.fill_between(band.grid / scale, band.q25, band.q75, step="post", color=color, alpha=0.2, lw=0,
                        label=f"{name}: interquartile range")
    if data.overall_best is not None:
        ax.axhline(data.overall_best, color="grey", ls="--", lw=1, label=f"overall best {data.overall_best:.4f}")
    if data.budget is not None and data.budget[0] == axis:
        ax.axvline(data.budget[1] / scale, color="black", ls=":", lw=1, label="budget")
    ax.set_xlim(left=0)
    if axis == "epochs":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"{_LABELS[axis]}{f' ({unit})' if unit else ''}")
    ax.set_ylabel(f"best {data.objective} so far ({data.direction})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right" if data.direction == "max" else "upper right")
    ax.set_title(f"Best {data.objective} so far against {_LABELS[axis]}, over repeats")
    figure.tight_layout()
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return Path(path)


def repeat_section(data: RepeatComparison, assets: Assets, *, notes: Sequence[str] = ()) -> Section:
    """The comparison: verdict, budget, the two best-so-far figures, scores, budget to margin, tests."""
    section = Section("Oracle comparison with repeats", "repeats")
    section.add(Para(f"Verdict: {data.verdict}"))
    budget = Section("Budget and repeats", "repeats-budget")
    budget.add(*(Para(line) for line in [*budget_statement(data), *notes]))
    budget.add(Table(data.run_table(), caption="Every repeat: its seed, trials counted, budget spent, final best"))
    curves = Section("Best score so far, median and interquartile range over repeats", "repeats-curves")
    for axis in ("epochs", "seconds"):
        path = plot_repeat_bands(data, assets.path(f"best_so_far_{axis}.png"), axis=axis)
        curves.add(Figure(path, f"Best {data.objective} so far against {_LABELS[axis]}: median over repeats "
                                f"(thick), interquartile band, each repeat (thin)"))
    scores = Section("Final best score", "repeats-scores")
    scores.add(Table(data.score_table(), caption=f"Best {data.objective} each repeat found within the budget "
                                                 f"(mean ± sd, median, min–max over repeats)"))
    scores.add(Table(data.margin_table(), caption=f"Budget each repeat needed to come within {data.margin:g} of the "
                                                  "overall best (median and range over the repeats that got there)"))
    tests = Section("Pairwise tests", "repeats-tests")
    tests.add(Para(f"Two-sided Mann-Whitney U test of the final best scores of each pair of oracles (exact without "
                   f"ties), p-values Holm-adjusted over the {len(data.pairs)} pair(s), alpha {data.alpha:g}. "
                   "P(A better) is the common-language effect size (ties count one half); the rank-biserial "
                   "correlation is 2 P(A better) - 1; the interval is a percentile bootstrap of the difference "
                   "of mean scores."))
    if data.pairs:
        tests.add(Table(data.pair_table(), caption="Pairwise comparison of the final best scores"))
    else:
        tests.add(Note("No pair of oracles to test."))
    section.children = [budget, curves, scores, tests]
    return section


def write_repeat_report(data: RepeatComparison, *, out_dir: str | Path, title: str | None = None,
                        studies: pd.DataFrame | None = None, notes: Sequence[str] = ()) -> RepeatReport:
    """Write ``report.html``, ``report.md`` and the figures of a repeated comparison into ``out_dir``.

    Args:
        data: the statistics (``report.repeats.compare_repeats``).
        out_dir: output folder (created).
        title: page title (default: from the oracle names).
        studies: a table of the studies compared (shown first).
        notes: further sentences for the budget section (e.g. how the oracles' own limits were raised).

    Returns:
        A ``RepeatReport`` with the paths written.
    """
    out = Path(out_dir)
    assets = Assets(out, "repeats")
    section = repeat_section(data, assets, notes=notes)
    title = title or "Oracle comparison with repeats: " + ", ".join(data.runs)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    intro: list[Block] = [Para("Each study was searched several times with different seeds at an equal budget; "
                               "the comparison reports the spread over these repeats and a test per pair.")]
    if studies is not None:
        intro.append(Table(studies, caption="Studies compared"))
    html = atomic_write_text(out / "report.html", render_html(title=title, generated=generated, intro=intro,
                                                              sections=[section]))
    markdown = atomic_write_text(out / "report.md", render_markdown(title=title, generated=generated, intro=intro,
                                                                    sections=[section], out_dir=out))
    return RepeatReport(out, html, markdown, [p for p in assets.written if p.exists()], data)
