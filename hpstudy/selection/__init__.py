"""Top-k re-evaluation before a winner is picked: ``hpstudy confirm``, the winner, and what finalize trains.

Why: the search keeps the trial with the best single validation score. That score is one draw of a noisy
number (with 400 validation images the standard error of an AUC is about 0.02), and it is the maximum over
all trials on the same validation set, so it is biased upward (the winner's curse). ``confirm`` trains each
of the ``top_k`` best completed trials again ``seeds`` times with new seeds, on the training split,
validated on val, exactly as the search trained it (data pipeline, class weights, feature cache, early
stopping, per-trial epoch budget), and the configuration with the best mean wins; finalize then trains it
for the median best epoch of its runs.

On disk (names from ``StudyPaths``): ``selection.csv`` holds one row per run (``RUN_COLUMNS``), rewritten
atomically after every run, so a killed ``confirm`` continues where it stopped with the same command;
``selection/val-<trial>-seed<seed>.csv`` holds each run's validation predictions (``index, label,
probability``; index = position in the validation split), on which thresholds and calibration may be fitted;
``selection.json`` holds the settings the runs were made with, the candidates, progress and the result.

The package: ``winner`` (the statistics and the winner, pure), ``runs`` (seeds, files, training),
``confirm`` (the command, the settings, finalize's choice). Nothing here imports TensorFlow until a run trains.
"""

from __future__ import annotations

from hpstudy.selection.confirm import (
    FinalChoice,
    choose_for_finalize,
    confirm_study,
    record_in_best_config,
    status_lines,
)
from hpstudy.selection.runs import RUN_COLUMNS, RunResult, plan_runs, read_runs, reevaluation_seed
from hpstudy.selection.winner import (
    Candidate,
    Selection,
    best_of_history,
    candidates_frame,
    choose_winner,
    median_epoch,
    summary_lines,
    t_interval,
)

__all__ = ["RUN_COLUMNS", "RunResult", "Candidate", "Selection", "FinalChoice", "confirm_study", "choose_winner",
           "t_interval", "median_epoch", "best_of_history", "reevaluation_seed", "plan_runs", "read_runs",
           "choose_for_finalize", "record_in_best_config", "candidates_frame", "summary_lines", "status_lines"]
