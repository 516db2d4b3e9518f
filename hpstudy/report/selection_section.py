"""The study report's section on choosing the winner: the top-k re-evaluation of ``hpstudy confirm``.

It shows, per candidate, the search's single-run score beside the mean ± sd and 95 % interval of the
re-evaluation runs, the sentence saying whether the search's best trial kept its rank, and a figure of every
run. Without a re-evaluation it says that the winner rests on one run and how to re-evaluate it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure as PlotFigure

from hpstudy._io import atomic_path
from hpstudy.errors import StudyError
from hpstudy.records import read_selection
from hpstudy.report.assets import Assets
from hpstudy.report.document import Figure, Note, Para, Section, Table
from hpstudy.report.runs import StudyRun
from hpstudy.selection import candidates_frame, read_runs

__all__ = ["selection_section", "selection_points", "plot_selection"]


def selection_points(candidates: Sequence[Mapping[str, Any]], runs: pd.DataFrame) -> pd.DataFrame:
    """One row per re-evaluation run of a candidate: ``rank`` (1 = winner), ``trial_id``, ``score``.

    Runs without a score and runs of trials that are not candidates are left out.
    """
    rank = {str(c["trial_id"]): i for i, c in enumerate(candidates, start=1)}
    points = runs.assign(trial_id=runs["trial_id"].astype(str), score=pd.to_numeric(runs["score"], errors="coerce"))
    points = points[points["trial_id"].isin(list(rank)) & points["score"].notna()]
    return pd.DataFrame({"rank": points["trial_id"].map(rank).astype(int), "trial_id": points["trial_id"],
                         "score": points["score"].astype(float)}).reset_index(drop=True)


def plot_selection(candidates: Sequence[Mapping[str, Any]], points: pd.DataFrame, path: Path, *,
                   objective: str) -> Path:
    """Every run's score (dots), each candidate's mean with its 95 % interval, and its search score (cross)."""
    figure = PlotFigure(figsize=(7.5, 1.2 + 0.6 * len(candidates)))
    axis = figure.subplots()
    for row, candidate in enumerate(candidates):
        mine = points[points["trial_id"] == str(candidate["trial_id"])]
        axis.scatter(mine["score"], [row] * len(mine), s=18, color="#7f7f7f", alpha=0.7,
                     label="re-evaluation run" if row == 0 else None)
        if candidate.get("mean") is not None:
            ci = candidate.get("ci95")
            error = [[candidate["mean"] - ci[0]], [ci[1] - candidate["mean"]]] if ci else None
            axis.errorbar([candidate["mean"]], [row], xerr=error, fmt="o", color="#1f77b4", capsize=4,
                          label="mean, 95 % interval" if row == 0 else None)
        axis.scatter([candidate["search_score"]], [row], marker="x", s=50, color="#d62728",
                     label="search (single run)" if row == 0 else None)
    axis.set_yticks(range(len(candidates)), [f"trial {c['trial_id']}" for c in candidates])
    axis.invert_yaxis()  # the winner on top
    axis.set_xlabel(objective)
    axis.grid(alpha=0.3, axis="x")
    axis.legend(loc="best", fontsize="small")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def selection_section(run: StudyRun, anchor: str, assets: Assets) -> Section:
    """Choosing the winner: the re-evaluation's candidates, sentence and figure, or why there is none."""
    section = Section("Choosing the winner", anchor)
    record = read_selection(run.paths) or {}
    result = record.get("result")
    if not result and run.trials is None:
        return section.add(Para("No winner yet: the search has no trials."))
    if not result:
        return section.add(Para(
            "The winner is the search's best trial, chosen on one training run. Its score is the best of all trials "
            "on the same validation set, so it is biased upward, and how much it moves with the seed is unknown. "
            f"`hpstudy confirm {run.command_target} --set selection.top_k=3 --set selection.seeds=3` re-evaluates "
            "the best trials with new seeds and picks the best mean."))
    settings = record.get("settings") or {}
    section.add(Para(
        f"The {len(record.get('candidates') or [])} best trial(s) of the search (top_k {settings.get('top_k')}) were "
        f"trained again with {settings.get('seeds')} new seed(s) each on the training split, validated on val with "
        "the search's early stopping; the winner has the best mean. The search score is shown beside the mean, not "
        "averaged in: it was selected on the same validation set, so it is biased upward."),
        Table(candidates_frame(record), caption=f"Candidates by mean {record.get('objective', 'score')} over their "
                                                "re-evaluation runs (sd and Student-t 95 % interval of the mean)"),
        Para(result["sentence"][:1].upper() + result["sentence"][1:] + "."))
    if not record.get("complete"):
        section.add(Note(f"The re-evaluation is incomplete ({record.get('runs_done')} of {record.get('runs_planned')} "
                         f"runs): `hpstudy confirm {run.command_target}` continues it."))
    try:
        runs = read_runs(run.paths)
    except StudyError as exc:
        return section.add(Note(str(exc)))
    path = plot_selection(result["candidates"], selection_points(result["candidates"], runs),
                          assets.path("selection.png"), objective=record.get("objective", "score"))
    return section.add(Figure(path, "Every re-evaluation run (dots), the mean with its 95 % interval, and the "
                                    "trial's single-run search score (cross), winner on top"))
