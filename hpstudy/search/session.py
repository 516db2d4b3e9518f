"""One search session of a study: prepare, build the tuner, run the search, conclude.

``prepare`` freezes the configuration on the first run (``study.yaml``) or refuses a changed one,
checks the data, fits the normalizer on the training split and, for a frozen backbone, fills the
feature cache; ``build_tuner`` creates or reloads the Keras Tuner project with hpstudy's bookkeeping;
``run_search`` runs the trials in this process; ``conclude`` rewrites the trials table, records the best
trial and the boundary flags in ``study.json`` and says what happened. ``run_here`` chains the four.
Child processes (``search.processes``) and distributed workers (``search.distributed``) use the same
steps, so every way of running a search sees the same pixels, seeds and bookkeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpstudy._io import format_duration, remove_orphaned_temporaries, utc_now
from hpstudy.boundary import boundary_flags, boundary_lines
from hpstudy.config import StudyConfig, diff_configs
from hpstudy.errors import ConfigError, StudyError
from hpstudy.paths import StudyPaths
from hpstudy.records import read_frozen, read_state, update_state, write_frozen
from hpstudy.runtime import configure_devices, package_versions, seed_everything
from hpstudy.trials import best_trial, check_tuner_files, write_trials_csv
from hpstudy.warmstart import initial_values, resolve_initial, save_initial

__all__ = ["RESUMABLE_CHANGES", "StudyOutcome", "Session", "CachedSearch", "freeze_or_check", "prepare",
           "build_tuner", "run_search", "conclude", "run_here", "summary_text", "search_callbacks", "search_datasets"]

log = logging.getLogger("hpstudy")

# Settings that may change between runs of one study without invalidating its trials.
RESUMABLE_CHANGES = ("oracle.iterations", "oracle.max_trials", "tensorboard", "keep_checkpoints",
                     "trials_per_process", "data", "source", "search_space_path", "finalize", "finetune", "leak_check",
                     "selection", "threshold", "calibration", "probes", "run_dir", "budget")


@dataclass
class StudyOutcome:
    """What a search call did."""

    study_dir: Path
    trials_run: int
    trials_total: int
    planned: int | None
    best: dict[str, Any] | None
    boundary: list[dict[str, Any]] = field(default_factory=list)
    finished_before: bool = False
    exhausted: bool = False
    paused: bool = False  # stopped at a trial_limit with budget left (a later run continues)
    budget_reached: bool = False  # a comparison's repeat stopped because its trials spent config.budget
    budget_spent: float | None = None  # what they spent (epochs or seconds), with a budget only


@dataclass(frozen=True)
class CachedSearch:
    """What a study searches with when the feature cache is on: head-only hypermodel and feature datasets."""

    hypermodel: Any
    train: Any
    val: Any
    backbone: Any


@dataclass
class Session:
    """A study made ready to search: its configuration, paths, prepared data and (optional) cached features."""

    config: StudyConfig
    paths: StudyPaths
    prepared: Any
    cached: CachedSearch | None = None
    finished_before: bool = False
    initial: list[dict[str, Any]] = field(default_factory=list)  # configurations tried first (warmstart)


# --------------------------------------------------------------------------- prepare
def _significant_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    lines = diff_configs(old, new)
    return [line for line in lines if not any(line.startswith(p) for p in RESUMABLE_CHANGES)]


def freeze_or_check(config: StudyConfig, paths: StudyPaths, fingerprint: str, *, write: bool = True) -> None:
    """First run: write ``study.yaml``. Later runs: refuse a changed configuration or changed data.

    ``write=False`` (a distributed worker) only checks against the chief's frozen copy.

    Raises:
        StudyError: the configuration or the training/validation data changed, or study.yaml is broken.
    """
    current = config.to_dict()
    frozen = read_frozen(paths)
    if frozen:
        differences = _significant_diff(frozen.get("config", {}), current)
        if frozen.get("data_fingerprint") not in (None, fingerprint):
            differences.append(f"data fingerprint: {frozen['data_fingerprint'][:12]}… -> {fingerprint[:12]}…"
                               " (the training/validation images changed)")
        if differences:
            raise StudyError(
                f"the configuration of study '{config.name}' changed since {paths.frozen_config} was written:\n  "
                + "\n  ".join(differences)
                + "\nUse a new study name, or pass --overwrite to delete the existing run and start again."
            )
    if not write:
        return
    write_frozen(paths, {"config": current, "seed": config.seed, "data_fingerprint": fingerprint,
                         "versions": package_versions(), "frozen_at": utc_now()})


def cached_search(config: StudyConfig, prepared: Any, cache_dir: Path) -> CachedSearch | None:
    """Head-only hypermodel and train/val dataset factories over cached features (None if the cache is off)."""
    from hpstudy import features
    from hpstudy.models import DatasetFactory, head_on_features

    if not features.uses_feature_cache(config):
        return None
    cache = features.study_feature_cache(config, prepared, cache_dir)
    train = features.split_features(cache, prepared, "train", features.feature_views(config))
    val = features.split_features(cache, prepared, "val", 0)
    cache.release()
    hypermodel = head_on_features(config.search_space, prepared.input_shape, cache.backbone.source,
                                  config.jit_compile, train.dim)
    seed = config.seed
    return CachedSearch(
        hypermodel,
        DatasetFactory(lambda batch_size: features.feature_dataset(train, batch_size=batch_size, training=True,
                                                                   seed=seed)),
        DatasetFactory(lambda batch_size: features.feature_dataset(val, batch_size=batch_size, training=False)),
        cache.backbone,
    )


def prepare(config: StudyConfig, *, chief: bool = True) -> Session:
    """Make a study ready to search (see the module docstring).

    The data and the configuration are checked before TensorFlow is imported, so a mistake there is
    reported at once. ``chief=False`` is a distributed worker: it checks the configuration against the
    chief's frozen copy, skips the leak check and writes no statistics (the chief did both).

    Raises:
        ConfigError, DataError, LeakError: bad configuration or data.
        StudyError: no data given, or a changed configuration or data.
    """
    from hpstudy.data.discover import resolve_source
    from hpstudy.data.leak import check_leaks

    paths = StudyPaths(config.study_dir)
    # a resumed study (or the next process of trials_per_process) need not decode its images again, nor look
    # for leaks again, when they are the bytes the first run checked (same fingerprint)
    checked = (read_frozen(paths) or {}).get("data_fingerprint")
    source = resolve_source(config.data, positive_class=config.positive_class, verified_fingerprint=checked)
    fingerprint = source.fingerprint(splits=("train", "val"))
    if chief:
        paths.root.mkdir(parents=True, exist_ok=True)
        remove_orphaned_temporaries(paths.root)  # e.g. a finished trial's file whose rewrite was killed
    check_tuner_files(paths.tuner_dir)
    initial = resolve_initial(config, paths) if chief else []  # the oracle (the chief's) hands them out
    freeze_or_check(config, paths, fingerprint, write=chief)
    if chief:
        save_initial(paths, config, initial)
    finished_before = chief and read_state(paths).get("status") == "finished"
    if chief:
        check_leaks(source, severity=config.leak_check, out_csv=paths.leaks_csv, splits=("train", "val"),
                    reuse=fingerprint == checked)
    from hpstudy.data.prepare import prepare_data  # imports TensorFlow

    seed_everything(config.seed, deterministic=config.deterministic)
    configure_devices(mixed_precision=config.mixed_precision)
    prepared = prepare_data(source, image_size=config.image_size, normalization=config.normalization,
                            leak_check="off", cache_dir=paths.cache_dir,
                            stats_path=paths.data_stats if chief else None)
    return Session(config, paths, prepared, cached_search(config, prepared, paths.cache_dir), finished_before,
                   initial)


# --------------------------------------------------------------------------- build and run
def search_callbacks(config: StudyConfig, paths: StudyPaths) -> list[Any]:
    """Early stopping (search only), a stop on NaN loss, and TensorBoard when asked for."""
    import keras

    stopping = config.early_stopping
    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(monitor=stopping.monitor, patience=stopping.patience,
                                      mode=stopping.mode, min_delta=stopping.min_delta,
                                      restore_best_weights=stopping.restore_best_weights),
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError as exc:
            raise ConfigError("tensorboard: true needs the tensorboard package: "
                              "pip install 'hpstudy[tensorboard]'") from exc
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths.tensorboard_dir)))
    return callbacks


def build_tuner(session: Session, *, trial_limit: int | None = None, started: float | None = None,
                process_started: float | None = None) -> tuple[Any, int | None]:
    """Create (or reload) the study's tuner with a progress line per trial; returns ``(tuner, planned trials)``.

    ``process_started`` (``time.time()``): where the first trial's wall time starts (default: the search).
    """
    from hpstudy import _kt_compat
    from hpstudy.models import build_hypermodel
    from hpstudy.search.tuners import make_tuner, planned_epochs, planned_trials

    config, prepared = session.config, session.prepared
    _kt_compat.make_state_writes_atomic()
    hypermodel = session.cached.hypermodel if session.cached is not None else build_hypermodel(
        config.family, config.search_space, input_shape=prepared.input_shape, weights=config.weights,
        jit_compile=config.jit_compile)
    progress = Progress(config, session.paths, None, started=started)
    tuner = make_tuner(config, hypermodel, directory=session.paths.root, on_trial_done=progress,
                       trial_limit=trial_limit, initial_values=initial_values(session.initial),
                       process_started=process_started)
    progress.planned = planned_trials(tuner)
    progress.planned_epochs = planned_epochs(tuner, config.oracle.trial_epochs)
    if config.budget is not None:  # a comparison's repeat ends on its budget: the raised oracle limit is no plan
        progress.planned = None
        progress.planned_epochs = config.budget.amount if config.budget.kind == "epochs" else None
    return tuner, progress.planned


def search_datasets(session: Session) -> tuple[Any, Any, dict[str, Any]]:
    """The training and validation data of the search's trials, and their extra ``fit`` arguments.

    Returns:
        ``(train, val, fit_kwargs)``: ``DatasetFactory``s called with the tuned batch size (over cached
        features when the feature cache is on, else the image pipeline: augmented, seeded training
        batches; clean validation batches in split order), and ``class_weight`` when the study asks for it.
        The same as ``run_search`` trains with; the top-k re-evaluation (``hpstudy.selection``) uses it.
    """
    from hpstudy.data.pipeline import class_weights, make_dataset
    from hpstudy.models import DatasetFactory

    config, prepared = session.config, session.prepared
    fit_kwargs: dict[str, Any] = {"class_weight": class_weights(prepared.y_train)} if config.class_weights else {}
    if session.cached is not None:
        return session.cached.train, session.cached.val, fit_kwargs

    def train(batch_size: int) -> Any:
        return make_dataset(prepared.x_train, prepared.y_train, batch_size=batch_size,
                            normalizer=prepared.normalizer, training=True,
                            augmentation=config.augmentation, seed=config.seed)

    def val(batch_size: int) -> Any:
        return make_dataset(prepared.x_val, prepared.y_val, batch_size=batch_size,
                            normalizer=prepared.normalizer, training=False)

    return DatasetFactory(train), DatasetFactory(val), fit_kwargs


def run_search(session: Session, tuner: Any, *, fit_verbose: int = 0) -> None:
    """Run the tuner's search in this process (early stopping, class weights, the tuned batch size).

    Raises:
        StudyError: too many consecutive failed trials.
    """
    config = session.config
    train_data, val_data, fit_kwargs = search_datasets(session)
    try:
        tuner.search(train_data, validation_data=val_data, epochs=config.oracle.trial_epochs,
                     callbacks=search_callbacks(config, session.paths), verbose=fit_verbose, **fit_kwargs)
    except RuntimeError as exc:
        if "consecutive" in str(exc).lower() or "failed" in str(exc).lower():
            raise StudyError(f"study '{config.name}' stopped: {exc}\nSee the message column of "
                             f"{session.paths.trials_csv} for each failed trial.") from exc
        raise


def run_here(config: StudyConfig, *, fit_verbose: int = 0, trial_limit: int | None = None, announce: bool = True,
             started: float | None = None, process_started: float | None = None) -> StudyOutcome:
    """Prepare, build, search and conclude in this process, stopping after ``trial_limit`` trials.

    ``announce=False`` leaves the closing summary to the caller (a parent process that ran several parts);
    ``started`` is the wall-clock start of the whole search, for the progress lines' elapsed time;
    ``process_started`` where the first trial's wall time starts (default: now, so it includes ``prepare``).
    """
    process_started = time.time() if process_started is None else process_started
    session = prepare(config)
    tuner, planned = build_tuner(session, trial_limit=trial_limit, started=started, process_started=process_started)
    update_state(session.paths, status="running", started=utc_now(), planned_trials=planned)
    run_search(session, tuner, fit_verbose=fit_verbose)
    return conclude(session, tuner, planned, announce=announce)


# --------------------------------------------------------------------------- progress and conclusion
class Progress:
    """Logs one line per finished trial and keeps the trials table and study.json current."""

    def __init__(self, config: StudyConfig, paths: StudyPaths, planned: int | None, *,
                 started: float | None = None) -> None:
        self.config, self.paths, self.planned = config, paths, planned
        self.planned_epochs: int | None = None
        self.start = time.time() if started is None else started

    def __call__(self, tuner: Any, trial: Any) -> None:
        table = write_trials_csv(self.paths.tuner_dir, self.paths.trials_csv, hp_names=self.config.search_space.names)
        done = int(table["status"].isin(["COMPLETED", "FAILED", "INVALID"]).sum())
        row = table[table["trial_id"] == trial.trial_id].iloc[0]
        log.info(self._line(table, row, _end_position(tuner, trial.trial_id) or done))
        update_state(self.paths, status="running", trials_done=done, planned_trials=self.planned)

    def _line(self, table: Any, row: Any, done: int) -> str:
        of = f"/{self.planned}" if self.planned else ""
        hps = " ".join(f"{c[3:]}={_fmt(row[c])}" for c in table.columns if c.startswith("hp_") and _present(row[c]))
        score = f"{self.config.objective.name}={_fmt(row['score'])}" if _present(row["score"]) else row["status"]
        try:
            best = best_trial(table, direction=self.config.objective.direction)
            best_text = f"best {_fmt(best['score'])} (trial {best['trial_id']})"
        except StudyError:
            best_text = "best -"
        elapsed = time.time() - self.start
        return (f"[{self.config.name}] trial {done}{of} ({row['trial_id']}) {hps} -> {score} | {best_text}"
                f" | {format_duration(float(row['seconds'] or 0))} | elapsed {format_duration(elapsed)}"
                f"{self._eta(table)}")

    def _eta(self, table: Any) -> str:
        """Remaining time from the seconds per epoch so far and the epochs the budget has left.

        An upper bound in epochs (early stopping ends trials sooner), hence the "~".
        """
        epochs, seconds = table["epochs_run"].fillna(0).sum(), table["seconds"].fillna(0).sum()
        if not self.planned_epochs or not epochs:
            return ""
        remaining = max(self.planned_epochs - epochs, 0)
        return f" | ETA <={format_duration(seconds / epochs * remaining)}"


def _end_position(tuner: Any, trial_id: str) -> int | None:
    """1-based position of a trial in the oracle's end order: its number in "trial i of N" even when
    several trials end before the progress line is written (distributed workers)."""
    order = getattr(tuner.oracle, "end_order", None) or []
    return order.index(trial_id) + 1 if trial_id in order else None


def _present(value: Any) -> bool:
    import pandas as pd

    return value is not None and not (isinstance(value, float) and pd.isna(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def conclude(session: Session, tuner: Any, planned: int | None, *, announce: bool = True) -> StudyOutcome:
    """Rewrite the trials table, record the best trial and boundary flags in study.json, and say so."""
    config, paths = session.config, session.paths
    table = write_trials_csv(paths.tuner_dir, paths.trials_csv, hp_names=config.search_space.names)
    direction = config.objective.direction
    try:
        best = best_trial(table, direction=direction).to_dict()
    except StudyError:
        best = None
    flags = boundary_flags(table, config.search_space, direction=direction, image_size=config.image_size)
    total = len(table)
    exhausted = config.oracle.type != "hyperband" and bool(planned) and total < planned
    # stopped at trials_per_process: budget left, unless that was the last planned trial
    paused = bool(getattr(tuner, "paused", False)) and not (planned and total >= planned)
    reached, spent = _budget_state(config, tuner)
    update_state(paths, status="running" if paused else "finished", finished=None if paused else utc_now(),
                 trials_done=total, planned_trials=planned,
                 best_trial=None if best is None else best["trial_id"],
                 best_score=None if best is None else best["score"], boundary=flags, exhausted=exhausted,
                 **({} if config.budget is None else {"budget": config.budget.to_dict(), "budget_reached": reached,
                                                      "budget_spent": spent}))
    outcome = StudyOutcome(paths.root, tuner.trials_run_here, total, planned, best, flags,
                           session.finished_before and tuner.trials_run_here == 0, exhausted, paused, reached, spent)
    if announce:
        log.info(summary_text(outcome, config))
    return outcome


def _budget_state(config: StudyConfig, tuner: Any) -> tuple[bool, float | None]:
    """Whether the search stopped on ``config.budget``, and what its trials spent (None without a budget)."""
    if config.budget is None:
        return False, None
    return bool(getattr(tuner, "budget_reached", False)), round(float(tuner.budget_spent()), 3)


def _budget_line(outcome: StudyOutcome, config: StudyConfig) -> str | None:
    if config.budget is None or outcome.paused:
        return None
    spent = f"spent {outcome.budget_spent or 0:g} of {config.budget.describe()}"
    if outcome.budget_reached:
        return f"Budget reached: {spent} (the trial running when it ran out was allowed to finish)."
    return f"The search ended before its budget: {spent} (the oracle had no further trial to give)."


def summary_text(outcome: StudyOutcome, config: StudyConfig) -> str:
    """The closing lines of a search: what happened, the best trial, the boundary flags."""
    lines = []
    if outcome.trials_run == 0 and outcome.trials_total:
        lines.append(f"Study '{config.name}' is already complete ({outcome.trials_total} trials); nothing to run.")
    else:
        lines.append(f"Study '{config.name}': ran {outcome.trials_run} trial(s) now, {outcome.trials_total} in all.")
    if outcome.exhausted:
        lines.append(f"The oracle stopped after {outcome.trials_total} of {outcome.planned} trials because it found "
                     "no untried combination of hyperparameters (Keras Tuner's 'Oracle triggered exit'): "
                     "the search space is smaller than the budget. Widen the space or lower max_trials.")
    budget_line = _budget_line(outcome, config)
    if budget_line:
        lines.append(budget_line)
    if outcome.best is not None:
        lines.append(f"Best trial {outcome.best['trial_id']}: {config.objective.name}={outcome.best['score']:.4f} "
                     f"at epoch {outcome.best['best_epoch']}.")
    lines.extend(boundary_lines(outcome.boundary))
    lines.append(f"Trials table: {StudyPaths(outcome.study_dir).trials_csv}")
    return "\n".join(lines)
