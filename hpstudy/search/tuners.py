"""Keras Tuner tuners with hpstudy's per-trial bookkeeping.

One mixin adds, to each of Keras Tuner's own tuners (no home-made search engine):
a fresh Keras state and a per-trial seed before every trial, the epoch history and the best epoch
written beside Keras Tuner's ``trial.json`` when the trial ends, the trials table rewritten
atomically, a progress line, and the checkpoint policy (Hyperband needs a trial's checkpoint only
until its bracket completes; the other oracles never reuse one).
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import pandas as pd

from hpstudy import _kt_compat as compat
from hpstudy._io import atomic_path, atomic_write_json, read_json
from hpstudy.models.training import history_frame
from hpstudy.paths import HISTORY_FILE, ORACLE_FILE, TRIAL_META_FILE
from hpstudy.runtime import resident_mib
from hpstudy.search.timing import EpochTimer, TrialClock

__all__ = ["TUNERS", "make_tuner", "trial_seed", "repair_reloaded_oracle", "planned_trials", "planned_epochs",
           "KEEP_BEST_CHECKPOINTS", "best_completed_trials"]

log = logging.getLogger("hpstudy")

# The best completed trials keep their checkpoint (weights at the best epoch): finalize restores the best one
# to choose a threshold on validation predictions of a model trained on the training split only.
KEEP_BEST_CHECKPOINTS = 3
# Keep a trial's best-epoch weights in memory and write its checkpoint once, when its fit ends (False: at every
# improving epoch, as Keras Tuner does). The file holds the same weights; tests switch it off to compare scores.
DEFER_CHECKPOINTS = True


def trial_seed(base_seed: int, trial_id: str) -> int:
    """Seed of one trial: the same trial gets the same seed when it is re-run after a crash."""
    digits = "".join(ch for ch in str(trial_id) if ch.isdigit()) or "0"
    return (int(base_seed) * 1_000_003 + int(digits)) % (2**31 - 1)


def _best_row(history: pd.DataFrame, objective: kt.Objective) -> pd.Series | None:
    if objective.name not in history.columns or history[objective.name].isna().all():
        return None
    index = history[objective.name].idxmax() if objective.direction == "max" else history[objective.name].idxmin()
    return history.loc[index]


class _TrialLimitReached(Exception):
    """Raised before a new trial is asked for once this process has run its share (``trial_limit``)."""


class _BudgetReached(Exception):
    """Raised before a new trial is asked for once the study's trials have spent its ``budget``."""


class _StudyTunerMixin(compat.TunerHooks):
    """Bookkeeping shared by every oracle's tuner; see the module docstring.

    ``on_trial_done(tuner, trial)`` is called after every trial's cleanup (the progress line); a
    distributed chief calls it for the trials its workers end.
    """

    def __init__(self, *args: Any, base_seed: int = 0, keep_checkpoints: bool = False,
                 on_trial_done: Callable[[Any, Any], None] | None = None, trial_limit: int | None = None,
                 budget: Any = None, process_started: float | None = None, **kwargs: Any) -> None:
        self._base_seed = base_seed
        self.trial_clock = TrialClock()
        self.defer_checkpoints = DEFER_CHECKPOINTS
        # wall-clock time (time.time()) since which the next trial's wall time counts: the process start for
        # its first trial (None: when search() is called), then the end of the previous trial
        self._since = process_started
        self._trial_started = 0.0
        self.budget = budget  # a config.SearchBudget (a repeated comparison's equal budget) or None
        self.budget_reached = False
        self._keep_checkpoints = keep_checkpoints
        self.on_trial_done = on_trial_done
        self.trial_limit = trial_limit
        self.trials_run_here = 0
        self.paused = False  # the search stopped at trial_limit, not at the end of the budget
        super().__init__(*args, **kwargs)

    def search(self, *args: Any, **kwargs: Any) -> Any:
        # Each trial runs gc.collect() several times (Keras Tuner twice, hpstudy twice per cleanup); with
        # TensorFlow loaded a full collection scans ~500k long-lived objects (~0.4 s each, ~2 s per trial).
        # Freezing what exists before the search keeps those scans to the trial's own objects (~ms).
        gc.collect()
        gc.freeze()
        if self._since is None:
            self._since = time.time()
        self.paused = self.budget_reached = False
        try:
            return super().search(*args, **kwargs)
        except _TrialLimitReached:
            self.paused = True
            return None
        except _BudgetReached:
            self.budget_reached = True
            return None
        finally:
            gc.unfreeze()

    def pre_create_trial(self) -> None:
        # Checked before the oracle hands out a trial, so stopping here leaves no trial half-started:
        # the next process resumes the oracle exactly where this one stopped.
        if self.trial_limit is not None and self.trials_run_here >= self.trial_limit:
            raise _TrialLimitReached()
        # Same place for the budget: the trial that was running when it ran out has finished, none starts.
        if self.budget is not None and self.budget_spent() >= self.budget.amount:
            raise _BudgetReached()
        super().pre_create_trial()

    def budget_spent(self) -> float:
        """Epochs trained or training seconds (``budget.column``) summed over every trial of the study so far.

        Read from each trial's metadata on disk, so a resumed study counts what earlier processes spent; a
        trial without metadata (failed, or killed while running) counts 0.
        """
        column = self.budget.column if self.budget is not None else "epochs_run"
        total = 0.0
        for trial_id in self.oracle.trials:
            meta = read_json(Path(self.get_trial_dir(trial_id)) / TRIAL_META_FILE, default=None)
            if isinstance(meta, dict):
                total += float(meta.get(column) or 0.0)
        return total

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        keras.backend.clear_session()
        gc.collect()
        keras.utils.set_random_seed(trial_seed(self._base_seed, trial.trial_id))
        self.trial_clock.reset()
        self._trial_started = time.time()
        kwargs["callbacks"] = [EpochTimer(self.trial_clock), *(kwargs.get("callbacks") or [])]
        start = time.perf_counter()
        histories = super().run_trial(trial, *args, **kwargs)
        self._record(trial, histories, time.perf_counter() - start)
        return histories

    def _record(self, trial: Any, histories: list[Any], seconds: float) -> None:
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        history = history_frame(histories if isinstance(histories, list) else [histories])
        with atomic_path(trial_dir / HISTORY_FILE) as tmp:
            history.to_csv(tmp, index=False)
        best = _best_row(history, self.oracle.objective)
        atomic_write_json(trial_dir / TRIAL_META_FILE, {
            "seconds": round(seconds, 3),
            "epochs_run": int(len(history)),
            "best_epoch": None if best is None else int(best["epoch"]),
            "best_metrics": {} if best is None else {k: float(v) for k, v in best.items() if k != "epoch"},
            "seed": trial_seed(self._base_seed, trial.trial_id),
            "executions": len(histories) if isinstance(histories, list) else 1,
            "pid": os.getpid(),  # which process ran it (a study may use several: trials_per_process, workers)
        })

    def on_trial_end(self, trial: Any) -> None:
        super().on_trial_end(trial)
        self.trials_run_here += 1
        if not self._keep_checkpoints and not compat.is_worker(self):  # a worker cannot see the brackets:
            self.drop_unneeded_checkpoints()  # the chief drops them
        keras.backend.clear_session()
        gc.collect()
        self._record_end(trial)
        if self.on_trial_done is not None:
            self.on_trial_done(self, trial)

    def _record_end(self, trial: Any) -> None:
        """After the trial's cleanup: the process's resident memory (a leak shows as a climb over trials) and
        where the trial's wall time went (``hpstudy.search.timing``)."""
        now = time.time()
        since = self._since if self._since is not None else self._trial_started
        self._since = now
        path = Path(self.get_trial_dir(trial.trial_id)) / TRIAL_META_FILE
        meta = read_json(path, default=None)
        if not isinstance(meta, dict):  # a failed trial writes no metadata
            return
        meta["rss_mib"] = resident_mib()
        meta["timing"] = self.trial_clock.record(wall_s=now - since, start_s=max(self._trial_started - since, 0.0))
        atomic_write_json(path, meta)

    def drop_unneeded_checkpoints(self) -> None:
        """Delete the checkpoints no later trial can load (only Hyperband's open brackets need them), except
        those of the ``KEEP_BEST_CHECKPOINTS`` best completed trials (finalize may restore them)."""
        best = best_completed_trials(self.oracle.trials.values(), self.oracle.objective.direction)
        needed = compat.open_bracket_trials(self.oracle) | set(best)
        ongoing = {t.trial_id for t in getattr(self.oracle, "ongoing_trials", {}).values()}
        for trial_id in self.oracle.trials:
            if trial_id in needed or trial_id in ongoing:
                continue
            for path in Path(self.get_trial_dir(trial_id)).glob("checkpoint*"):
                path.unlink(missing_ok=True)


def best_completed_trials(trials: Any, direction: str, n: int = KEEP_BEST_CHECKPOINTS) -> list[str]:
    """Ids of the ``n`` best completed trials with a score, best first (ties: the order given).

    Args:
        trials: Keras Tuner ``Trial`` objects (``trial_id``, ``status``, ``score``).
        direction: ``"max"`` or ``"min"``, the objective's.
        n: how many.
    """
    done = [t for t in trials if t.status == "COMPLETED" and t.score is not None and t.score == t.score]
    done.sort(key=lambda t: t.score, reverse=direction == "max")
    return [t.trial_id for t in done[:n]]


class HyperbandTuner(_StudyTunerMixin, kt.Hyperband):
    """Keras Tuner's Hyperband with hpstudy's bookkeeping."""


class RandomSearchTuner(_StudyTunerMixin, kt.RandomSearch):
    """Keras Tuner's RandomSearch with hpstudy's bookkeeping."""


class BayesianTuner(_StudyTunerMixin, kt.BayesianOptimization):
    """Keras Tuner's BayesianOptimization with hpstudy's bookkeeping."""


def _hyperband_kwargs(oracle: Any) -> dict[str, Any]:
    return {"max_epochs": oracle.max_epochs, "factor": oracle.factor, "hyperband_iterations": oracle.iterations}


def _trials_kwargs(oracle: Any) -> dict[str, Any]:
    return {"max_trials": oracle.max_trials}


def _bayesian_kwargs(oracle: Any) -> dict[str, Any]:
    kwargs = _trials_kwargs(oracle)
    if oracle.num_initial_points:
        kwargs["num_initial_points"] = oracle.num_initial_points
    return kwargs


TUNERS: dict[str, tuple[type, Callable[[Any], dict[str, Any]]]] = {
    "hyperband": (HyperbandTuner, _hyperband_kwargs),
    "random": (RandomSearchTuner, _trials_kwargs),
    "bayesian": (BayesianTuner, _bayesian_kwargs),
}


def make_tuner(config: Any, hypermodel: kt.HyperModel, *, directory: Path, overwrite: bool = False,
               on_trial_done: Callable[[Any, Any], None] | None = None, trial_limit: int | None = None,
               initial_values: Sequence[Mapping[str, Any]] = (), process_started: float | None = None) -> kt.Tuner:
    """Create (or reload, when the project exists) the tuner of a study's oracle, chosen by name.

    ``trial_limit`` stops ``search`` (``tuner.paused`` is then True) once this process has run that many
    trials; the oracle's state on disk lets a new process continue. A ``config.budget`` stops it
    (``tuner.budget_reached`` is then True) once the study's trials have spent that budget. ``initial_values``
    (complete configurations) are tried first, in order, those the oracle already holds excepted.
    ``process_started`` (``time.time()`` of the process start) counts the process start in the first trial's
    wall time (default: from when ``search`` is called).
    """
    tuner_class, oracle_kwargs = TUNERS[config.oracle.type]
    _mark_reloadable(Path(directory) / "tuner", overwrite)
    tuner = tuner_class(
        hypermodel,
        objective=kt.Objective(config.objective.name, direction=config.objective.direction),
        seed=config.seed,
        executions_per_trial=config.executions_per_trial,
        directory=str(directory),
        project_name="tuner",
        overwrite=overwrite,
        max_consecutive_failed_trials=3,
        base_seed=config.seed,
        keep_checkpoints=config.keep_checkpoints,
        on_trial_done=on_trial_done,
        trial_limit=trial_limit,
        budget=getattr(config, "budget", None),
        process_started=process_started,
        **oracle_kwargs(config.oracle),
    )
    _apply_budget(tuner.oracle, config.oracle)
    if not compat.is_worker(tuner):
        repair_reloaded_oracle(tuner)
        if initial_values:
            compat.try_first(tuner.oracle, initial_values)
    return tuner


def _apply_budget(oracle: Any, settings: Any) -> None:
    """A reloaded oracle restores its old budget from oracle.json; a larger one in the config wins."""
    if settings.type == "hyperband":
        oracle.hyperband_iterations = settings.iterations
    elif settings.max_trials:
        oracle.max_trials = settings.max_trials


def _mark_reloadable(project: Path, overwrite: bool) -> None:
    """Make Keras Tuner reload an existing oracle.

    It reloads only when the tuner's own state file (``tuner0.json``, an empty ``{}``) exists, and writes
    that file after the first trial: a process killed during the first trial would start the oracle
    afresh over the trials already on disk.
    """
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
    marker = project / f"{tuner_id}.json"
    worker = "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in tuner_id
    if not overwrite and not worker and (project / ORACLE_FILE).is_file() and not marker.exists():
        atomic_write_json(marker, {})


def repair_reloaded_oracle(tuner: kt.Tuner) -> list[str]:
    """Reconcile a reloaded oracle with its trial files after a crash between the two writes of one step.

    Keras Tuner writes a trial's ``trial.json`` first and ``oracle.json`` second. Killed in between, a new
    trial exists on disk that the oracle state never recorded (it would stay RUNNING forever while the
    budget counts it), or an ended trial is still recorded as running (it would be run again). The first
    is discarded (it never started), the second keeps its result. Returns one note per repair.
    """
    oracle, notes = tuner.oracle, []
    for trial_id in [t for t in oracle.trials if t not in oracle.start_order]:
        del oracle.trials[trial_id]
        shutil.rmtree(tuner.get_trial_dir(trial_id), ignore_errors=True)
        notes.append(f"trial {trial_id} was created but not recorded when the last run stopped: created again")
    for trial_id in compat.reconcile_reloaded(oracle):
        notes.append(f"trial {trial_id} had ended when the last run stopped: its result is kept")
    if notes:
        oracle.save()
        for note in notes:
            log.info("note: %s", note)
    return notes


def planned_trials(tuner: kt.Tuner) -> int | None:
    """Total trials the oracle will create (Hyperband: every round of every bracket), if known."""
    oracle = tuner.oracle
    if isinstance(oracle, kt.oracles.HyperbandOracle):
        return int(sum(size for size, _ in compat.hyperband_rounds(oracle)) * oracle.hyperband_iterations)
    return oracle.max_trials


def planned_epochs(tuner: kt.Tuner, trial_epochs: int) -> int | None:
    """Upper bound of the epochs the whole search trains (early stopping only lowers it)."""
    oracle = tuner.oracle
    if isinstance(oracle, kt.oracles.HyperbandOracle):
        return int(sum(size * epochs for size, epochs in compat.hyperband_rounds(oracle)) * oracle.hyperband_iterations)
    return oracle.max_trials * trial_epochs if oracle.max_trials else None
