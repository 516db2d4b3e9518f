"""``write_report``: the study report (and the oracle comparison for several studies) as HTML and Markdown.

Layout of ``out_dir``::

    report.html          self-contained page (figures embedded as base64 PNG data URIs)
    report.md            the same content in Markdown, linking the PNGs below
    comparison/*.png     oracle comparison figures (two or more studies)
    <study>/*.png        each study's figures (drawn here or copied from its run directory)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from hpstudy._io import atomic_write_text
from hpstudy.report.assets import Assets
from hpstudy.report.checklist import checklist_section
from hpstudy.report.compare import ComparisonData, compare_oracles
from hpstudy.report.document import Block, Figure, Note, Para, Section, Table, slug
from hpstudy.report.figures import plot_best_so_far, plot_hyperparameters
from hpstudy.report.html import render_html, render_markdown
from hpstudy.report.results_sections import final_section, test_section
from hpstudy.report.runs import StudyRun, compatibility_notes, load_run
from hpstudy.report.search_sections import data_section, search_section
from hpstudy.report.selection_section import selection_section
from hpstudy.report.views_section import comparison_edf_section, views_section

__all__ = ["ReportResult", "write_report", "comparison_section", "study_section", "SINGLE_RUN_NOTE"]

SINGLE_RUN_NOTE = ("Single run per oracle: each study below was searched once, with one seed, so these differences "
                   "carry no uncertainty and a rerun with other seeds may reverse them. For repeats at an equal "
                   "budget with a significance test, run `hpstudy compare A.yaml B.yaml --repeats 5 "
                   "--budget-epochs E`.")


@dataclass
class ReportResult:
    """What ``write_report`` wrote and found."""

    out_dir: Path
    html: Path
    markdown: Path
    figures: list[Path]
    studies: list[str]
    comparison: ComparisonData | None = None
    comparable: bool | None = None
    missing: list[str] = field(default_factory=list)


def write_report(studies: Sequence[Any], *, out_dir: str | Path, explore_dir: str | Path | None = None,
                 margin: float = 0.01, title: str | None = None) -> ReportResult:
    """Write ``report.html``, ``report.md`` and their PNGs for one study or an oracle comparison.

    Args:
        studies: study YAML paths, study run directories, frozen ``study.yaml`` files or ``StudyConfig``s.
        out_dir: output folder (created).
        explore_dir: folder of ``hpstudy explore`` outputs (default: ``<run>/explore/`` of each study).
        margin: absolute distance to the overall best score that counts as "as good" in the comparison.
        title: page title (default: from the study names).

    Returns:
        A ``ReportResult`` with the paths written, the comparison data and every "missing" sentence.

    Raises:
        StudyError: a study is neither a YAML file nor a run directory.
        ValueError: no study given.
    """
    if not studies:
        raise ValueError("write_report needs at least one study, but got none")
    out = Path(out_dir)
    runs = _unique_names([load_run(study) for study in studies])
    sections: list[Section] = []
    comparison, comparable, assets = None, None, []
    if len(runs) > 1:
        shared = Assets(out, "comparison")
        section, comparison, comparable = comparison_section(runs, shared, margin=margin)
        sections.append(section)
        assets.append(shared)
    for run, prefix in zip(runs, _unique_slugs(runs)):
        own = Assets(out, prefix)
        sections.append(study_section(run, own, Path(explore_dir) if explore_dir is not None else None))
        assets.append(own)
    title = title or _title(runs)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    intro = _intro(runs)
    html_path = atomic_write_text(out / "report.html", render_html(title=title, generated=generated, intro=intro,
                                                                   sections=sections))
    md_path = atomic_write_text(out / "report.md", render_markdown(title=title, generated=generated, intro=intro,
                                                                   sections=sections, out_dir=out))
    missing = [b.text for s in sections for part in s.walk() for b in part.blocks if isinstance(b, Note)]
    return ReportResult(out, html_path, md_path, [p for a in assets for p in a.written if p.exists()],
                        [r.name for r in runs], comparison, comparable, missing)


def _unique_names(runs: list[StudyRun]) -> list[StudyRun]:
    seen: dict[str, int] = {}
    for run in runs:
        count = seen.get(run.name, 0) + 1
        seen[run.name] = count
        if count > 1:
            run.name = f"{run.name} ({count})"
    return runs


def _unique_slugs(runs: Sequence[StudyRun]) -> list[str]:
    """A distinct folder name and anchor stem per study ("a b" and "a-b" would share a slug)."""
    used: set[str] = {"comparison"}
    slugs = []
    for run in runs:
        base = candidate = slug(run.name)
        index = 1
        while candidate in used:
            index += 1
            candidate = f"{base}-{index}"
        used.add(candidate)
        slugs.append(candidate)
    return slugs


def _title(runs: Sequence[StudyRun]) -> str:
    if len(runs) == 1:
        return f"Study report: {runs[0].name}"
    return "Oracle comparison: " + ", ".join(run.name for run in runs)


def _intro(runs: Sequence[StudyRun]) -> list[Block]:
    rows = [{"study": r.name, "oracle": r.oracle, "family": r.family, "objective": f"{r.objective} ({r.direction})",
             "status": r.state.get("status", "not run"), "run directory": str(r.paths.root)} for r in runs]
    text = ("This report follows the course's tasks: data exploration (Task 1), hyperparameter search (Tasks 2–3), "
            "the final model, and the test evaluation with Grad-CAM (Task 4).")
    if len(runs) > 1:
        text = "The oracle comparison comes first, then one section per study. " + text
    return [Para(text), Table(pd.DataFrame(rows), caption="Studies in this report")]


def study_section(run: StudyRun, assets: Assets, explore_dir: Path | None = None) -> Section:
    """One study's section: Task 1, Tasks 2-3, final model, Task 4."""
    anchor = f"study-{assets.prefix}"
    section = Section(f"Study: {run.name}", anchor)
    details = ", ".join(f"{k} {v}" for k, v in (("oracle", run.oracle), ("family", run.family)) if v)
    section.add(Para(f"Run directory `{run.paths.root}`" + (f"; {details}." if details else ".")))
    section.add(*(Note(note) for note in run.notes))
    section.children = [data_section(run, f"{anchor}-data", assets, explore_dir),
                        search_section(run, f"{anchor}-search", assets),
                        views_section(run, f"{anchor}-views", assets),
                        selection_section(run, f"{anchor}-selection", assets),
                        final_section(run, f"{anchor}-final", assets),
                        test_section(run, f"{anchor}-test", assets),
                        checklist_section(run, f"{anchor}-checklist")]
    return section


def comparison_section(runs: Sequence[StudyRun], assets: Assets, *,
                       margin: float = 0.01) -> tuple[Section, ComparisonData | None, bool]:
    """The oracle comparison of several studies: compatibility, summary, curves, hyperparameters."""
    section = Section("Oracle comparison", "comparison")
    comparable, notes = compatibility_notes(runs)
    section.add(*(Note(n) if n.startswith("Warning") else Para(n) for n in notes))
    section.add(Para(SINGLE_RUN_NOTE))
    with_trials = [r for r in runs if r.trials is not None]
    for run in runs:
        if run.trials is None:
            section.add(Note(f"Study {run.name} has no trials yet (run `hpstudy search {run.command_target}`); "
                             "it is left out of the comparison."))
    if not with_trials:
        section.add(Note("No study has a trials table yet, so there is nothing to compare."))
        return section, None, comparable
    objective, direction = with_trials[0].objective, with_trials[0].direction
    data = compare_oracles({r.name: r.trials for r in with_trials if r.trials is not None}, direction=direction,
                           margin=margin, oracles={r.name: r.oracle for r in with_trials})
    section.children = [_summary(data, objective), _curves(data, objective, assets),
                        _hyperparameters(data, objective, assets)]
    section.children.append(comparison_edf_section(with_trials, assets))
    return section, data, comparable


def _summary(data: ComparisonData, objective: str) -> Section:
    section = Section("Summary", "comparison-summary")
    section.add(*(Para(line) for line in data.summary))
    section.add(Table(data.table(), caption=f"Budget and result of each strategy ({objective}, {data.direction}; "
                                            f"margin {data.margin:g} of the overall best)"))
    return section


def _curves(data: ComparisonData, objective: str, assets: Assets) -> Section:
    section = Section("Best score so far against the budget", "comparison-curves")
    path = plot_best_so_far(data, assets.path("best_so_far.png"), objective=objective)
    return section.add(Figure(path, f"Best {objective} so far against trial number, cumulative wall-clock time and "
                                    f"cumulative epochs trained; dashed: overall best, band: margin {data.margin:g}"))


def _hyperparameters(data: ComparisonData, objective: str, assets: Assets) -> Section:
    section = Section("Hyperparameters tried", "comparison-hyperparameters")
    path = plot_hyperparameters(data, assets.path("hyperparameters.png"), objective=objective)
    if path is None:
        return section.add(Note("No hyperparameter values of completed trials to compare."))
    section.add(Figure(path, f"{objective} against each hyperparameter, coloured by study"))
    rows = [{"hyperparameter": r.name, "distinct values": r.points["value"].nunique(),
             **{f"Spearman ρ, {k}": "n/a" if v is None else v for k, v in r.spearman.items()}}
            for r in data.hyperparameters if r.kind == "numeric"]
    if rows:
        section.add(Table(pd.DataFrame(rows), caption=f"Rank correlation of each numeric hyperparameter with "
                                                      f"{objective} (n/a: fewer than 3 trials or no variation)"))
    for relation in data.hyperparameters:
        if relation.mean_by_value is not None and not relation.mean_by_value.empty:
            section.add(Table(relation.mean_by_value.reset_index().rename(columns={"value": relation.name}),
                              caption=f"Mean {objective} per value of {relation.name}, by study"))
    return section
