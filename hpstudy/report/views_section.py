"""Report section "Hyperparameter importance and trial views" of a study, and the EDF of a comparison.

Every builder returns a non-empty ``Section``: when there is nothing to show, it says why.
"""

from __future__ import annotations

from collections.abc import Sequence

from hpstudy.report.assets import Assets, read_csv
from hpstudy.report.document import Figure, Note, Para, Section, Table
from hpstudy.report.figures import study_color
from hpstudy.report.importance import hyperparameter_importance
from hpstudy.report.runs import StudyRun
from hpstudy.report.trial_views import (
    completed_sorted,
    edf_table,
    parallel_coordinates,
    score_edf,
    trial_curves,
)
from hpstudy.report.view_figures import plot_edf, plot_importance, plot_parallel_coordinates, plot_trial_curves

__all__ = ["views_section", "comparison_edf_section"]

_METHOD = ("fANOVA importance (Hutter et al. 2014, as Optuna's FanovaImportanceEvaluator): a random forest "
           "(scikit-learn, {trees} trees) learns {objective} from the hyperparameters of the completed trials; the "
           "importance of a hyperparameter is the share of the variance of the forest's prediction that its main "
           "effect explains, averaged over the trees and normalised to sum to 1. Log ranges enter on log10, "
           "choices as one code per value. Fitted with forest seeds {seeds}: the bars are the mean, the error "
           "bars the sd over the seeds.")


def views_section(run: StudyRun, anchor: str, assets: Assets) -> Section:
    """Importance, parallel coordinates, score EDF and all trials' validation curves of one study."""
    section = Section("Hyperparameter importance and trial views", anchor)
    if run.trials is None or completed_sorted(run.trials).empty:
        return section.add(Note(f"No completed trial yet, so there is no importance and no trial view: run "
                                f"`hpstudy search {run.command_target}`."))
    section.children = [_importance(run, f"{anchor}-importance", assets),
                        _parallel(run, f"{anchor}-parallel", assets),
                        _edf(run, f"{anchor}-edf", assets),
                        _curves(run, f"{anchor}-curves", assets)]
    return section


def _space(run: StudyRun) -> object:
    return run.config.get("search_space")


def _importance(run: StudyRun, anchor: str, assets: Assets) -> Section:
    section = Section("Hyperparameter importance (fANOVA)", anchor)
    assert run.trials is not None
    importance = hyperparameter_importance(run.trials, space=_space(run))
    warnings = [Note(line) for line in importance.warnings()]
    if importance.reason is not None:
        return section.add(*warnings, *(Para(line) for line in importance.notes()))
    section.add(Para(_METHOD.format(trees=importance.n_trees, objective=run.objective,
                                    seeds=", ".join(map(str, importance.seeds)))))
    section.add(*warnings, *(Para(line) for line in importance.notes()))
    path = plot_importance(importance, assets.path("importance.png"),
                           title=f"{run.name}: fANOVA importance ({importance.n_trials} completed trials)")
    share = importance.main_effect_share or 0.0
    section.add(Figure(path, f"Importance of each hyperparameter for {run.objective}; mean ± sd over "
                             f"{len(importance.seeds)} forest seeds"),
                Para(f"Main effects explain {share:.0%} of the variance of the forest's prediction (averaged over "
                     f"the seeds); the rest comes from interactions between hyperparameters. Most important: "
                     f"{importance.ranking()[0]}."),
                Table(importance.table(), caption=f"fANOVA importance for {run.objective} (normalised to sum to 1)"))
    return section


def _parallel(run: StudyRun, anchor: str, assets: Assets) -> Section:
    section = Section("Parallel coordinates of the completed trials", anchor)
    assert run.trials is not None
    data = parallel_coordinates(run.trials, space=_space(run), objective=run.objective, direction=run.direction)
    path = plot_parallel_coordinates(data, assets.path("parallel_coordinates.png"),
                                     title=f"{run.name}: {len(data.trial_ids)} completed trials")
    return section.add(Figure(path, f"Each completed trial is a line across the hyperparameters to its "
                                    f"{run.objective} (colour); numeric axes span the searched range (log ranges on "
                                    "a log scale), choices are evenly spaced; 'inactive' marks a conditional "
                                    "hyperparameter that did nothing in that trial; black: the best trial"))


def _edf(run: StudyRun, anchor: str, assets: Assets) -> Section:
    section = Section("Distribution of the trial scores (EDF)", anchor)
    assert run.trials is not None
    curves = score_edf({run.name: run.trials})
    path = plot_edf(curves, assets.path("score_edf.png"), objective=run.objective, direction=run.direction,
                    labels={run.name: f"{run.name} ({run.oracle})" if run.oracle else run.name})
    return section.add(Figure(path, f"Fraction of the completed trials with {run.objective} at or below each value"),
                       Table(edf_table(curves, run.direction), caption=f"{run.objective} of the completed trials"))


def _curves(run: StudyRun, anchor: str, assets: Assets) -> Section:
    section = Section("Validation curves of all trials", anchor)
    assert run.trials is not None
    done = completed_sorted(run.trials, run.direction)
    ids = done["trial_id"].astype(str).tolist()
    data = trial_curves({i: read_csv(run.paths.trial_history(i)) for i in ids}, objective=run.objective,
                        best=ids[0])
    if data.missing:
        shown = ", ".join(data.missing[:10]) + (" …" if len(data.missing) > 10 else "")
        section.add(Note(f"{len(data.missing)} of {len(ids)} completed trials have no {run.objective} history "
                         f"(`tuner/trial_<id>/history.csv`, written when a trial ends): {shown}."))
    if not data.lines:
        return section
    path = plot_trial_curves(data, assets.path("trial_curves.png"),
                             title=f"{run.name}: {run.objective} of {len(data.lines)} trials against the epoch")
    return section.add(Figure(path, f"{run.objective} at every epoch of every completed trial (grey)"
                                    + (f"; red: the best trial {data.best}" if data.best else "")))


def comparison_edf_section(runs: Sequence[StudyRun], assets: Assets) -> Section:
    """The EDF of the trial scores of several studies in one figure, with their quartiles."""
    section = Section("Distribution of the trial scores (EDF)", "comparison-edf")
    tables = {r.name: r.trials for r in runs if r.trials is not None}
    curves = score_edf(tables)
    if not curves:
        return section.add(Note("No study has a completed trial, so there is no score distribution to compare."))
    objective, direction = runs[0].objective, runs[0].direction
    labels = {r.name: f"{r.name} ({r.oracle})" if r.oracle else r.name for r in runs}
    colors = {name: study_color(index) for index, name in enumerate(tables)}  # as in the other comparison figures
    path = plot_edf(curves, assets.path("score_edf.png"), objective=objective, direction=direction, labels=labels,
                    colors=colors)
    section.add(Para("The empirical distribution function of each study's completed trials: a curve further "
                     f"{'right' if direction == 'max' else 'left'} means more trials scored well. It shows how "
                     "the strategies spread their trials, not only their single best one (one search each)."),
                Figure(path, f"Fraction of each study's completed trials with {objective} at or below each value"),
                Table(edf_table(curves, direction), caption=f"{objective} of the completed trials, per study"))
    left_out = [r.name for r in runs if r.name not in curves]
    if left_out:
        section.add(Note(f"No completed trial in {', '.join(left_out)}: left out of the EDF."))
    return section
