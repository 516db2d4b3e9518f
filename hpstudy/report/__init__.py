"""Reports: the study report (Tasks 1-4) and the oracle comparison, as self-contained HTML and Markdown.

Computations are pure and tested (``compare``); drawing is separate (``figures``); the page is built from
one document tree rendered twice (``document``, ``html``).
"""

from __future__ import annotations

from hpstudy.report.build import ReportResult, write_report
from hpstudy.report.compare import ComparisonData, HpRelation, StudyCurve, compare_oracles, study_curve
from hpstudy.report.figures import plot_best_so_far, plot_hyperparameters, plot_learning_curves
from hpstudy.report.importance import Importance, hyperparameter_importance
from hpstudy.report.repeat_report import RepeatReport, write_repeat_report
from hpstudy.report.repeats import RepeatComparison, compare_repeats
from hpstudy.report.runs import StudyRun, compatibility_notes, load_run
from hpstudy.report.trial_views import parallel_coordinates, score_edf, trial_curves
from hpstudy.report.view_figures import plot_edf, plot_importance, plot_parallel_coordinates, plot_trial_curves

__all__ = [
    "write_report",
    "ReportResult",
    "compare_oracles",
    "study_curve",
    "ComparisonData",
    "StudyCurve",
    "HpRelation",
    "plot_best_so_far",
    "plot_hyperparameters",
    "plot_learning_curves",
    "StudyRun",
    "load_run",
    "compatibility_notes",
    "hyperparameter_importance",
    "Importance",
    "parallel_coordinates",
    "score_edf",
    "trial_curves",
    "plot_importance",
    "plot_parallel_coordinates",
    "plot_edf",
    "plot_trial_curves",
    "compare_repeats",
    "RepeatComparison",
    "write_repeat_report",
    "RepeatReport",
]
