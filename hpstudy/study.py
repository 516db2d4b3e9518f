"""Create or resume a study from its configuration and run its Keras Tuner search.

A study is a directory (``studies/<name>/``). Running the same configuration again resumes it;
a changed configuration is refused with the difference shown, except for the settings that only
extend the budget or do not touch the search (see ``RESUMABLE_CHANGES``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from hpstudy._io import atomic_write_json, atomic_write_text, remove_orphaned_temporaries
from hpstudy.config import StudyConfig, diff_configs, load_study
from hpstudy.errors import ConfigError, StudyError
from hpstudy.paths import StudyPaths
from hpstudy.runtime import configure_devices, package_versions, quiet_tensorflow, seed_everything
from hpstudy.trials import best_trial, boundary_flags, load_trials, write_trials_csv

__all__ = ["StudyOutcome", "run_study", "run_here", "resolve_config", "export_trials", "study_status", "read_state",
           "RESUMABLE_CHANGES"]

# Settings that may change between runs of one study without invalidating its trials.
RESUMABLE_CHANGES = ("oracle.iterations", "oracle.max_trials", "tensorboard", "keep_checkpoints",
                     "trials_per_process", "data", "source", "search_space_path", "finalize", "finetune", "leak_check")


@dataclass
class StudyOutcome:
    """What a call of ``run_study`` did."""

    study_dir: Path
    trials_run: int
    trials_total: int
    planned: int | None
    best: dict[str, Any] | None
    boundary: list[dict[str, Any]] = field(default_factory=list)
    finished_before: bool = False
    exhausted: bool = False
    paused: bool = False  # stopped at a trial_limit with budget left (a later run continues)


def resolve_config(config: StudyConfig | str | Path, *, data: str | Path | None = None,
                   overrides: Sequence[str] | Mapping[str, Any] = ()) -> StudyConfig:
    """A ``StudyConfig`` from an object or a YAML path, with ``--data`` and overrides applied."""
    if isinstance(config, StudyConfig):
        if overrides:
            raise ConfigError("overrides apply to a YAML path; change the StudyConfig object instead")
        return config.with_data(data) if data is not None else config
    return load_study(config, data=data, overrides=overrides)


def read_state(paths: StudyPaths) -> dict[str, Any]:
    """The study's ``study.json`` (empty dict before the first run)."""
    import json

    try:
        return json.loads(paths.state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StudyError(f"{paths.state} cannot be read ({exc}); it only records progress: delete it, and "
                         "`hpstudy search` (which resumes from the tuner files) writes it again") from None


def _write_state(paths: StudyPaths, **updates: Any) -> dict[str, Any]:
    state = read_state(paths)
    state.update(updates)
    state["updated"] = _now()
    atomic_write_json(paths.state, state)
    return state


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _significant_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    lines = diff_configs(old, new)
    return [line for line in lines if not any(line.startswith(p) for p in RESUMABLE_CHANGES)]


def _freeze_or_check(config: StudyConfig, paths: StudyPaths, fingerprint: str, *, write: bool = True) -> None:
    """First run: write ``study.yaml``. Later runs: refuse a changed configuration or changed data.

    ``write=False`` (a distributed worker) only checks against the chief's frozen copy.
    """
    current = config.to_dict()
    if paths.frozen_config.exists():
        try:
            frozen = yaml.safe_load(paths.frozen_config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise StudyError(f"{paths.frozen_config} is not valid YAML ({exc}); it is written by hpstudy: restore "
                             "it, or pass --overwrite to delete the run and start again") from None
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
    document = {
        "config": current,
        "seed": config.seed,
        "data_fingerprint": fingerprint,
        "versions": package_versions(),
        "frozen_at": _now(),
    }
    atomic_write_text(paths.frozen_config, yaml.safe_dump(document, sort_keys=False))


def _callbacks(config: StudyConfig, paths: StudyPaths) -> list[Any]:
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
            raise ConfigError("tensorboard: true needs the tensorboard package: pip install 'hpstudy[tensorboard]'") from exc
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths.tensorboard_dir)))
    return callbacks


class _Progress:
    """Prints one line per finished trial and keeps the trials table and study.json current."""

    def __init__(self, config: StudyConfig, paths: StudyPaths, planned: int | None, *,
                 started: float | None = None) -> None:
        self.config, self.paths, self.planned = config, paths, planned
        self.planned_epochs: int | None = None
        self.start = time.time() if started is None else started

    def __call__(self, tuner: Any, trial: Any) -> None:
        table = write_trials_csv(self.paths.tuner_dir, self.paths.trials_csv, hp_names=self.config.search_space.names)
        done = int(table["status"].isin(["COMPLETED", "FAILED", "INVALID"]).sum())
        row = table[table["trial_id"] == trial.trial_id].iloc[0]
        print(self._line(table, row, _end_position(tuner, trial.trial_id) or done), flush=True)
        _write_state(self.paths, status="running", trials_done=done, planned_trials=self.planned)

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
                f" | {_duration(float(row['seconds'] or 0))} | elapsed {_duration(elapsed)}{self._eta(table)}")

    def _eta(self, table: Any) -> str:
        """Remaining time from the seconds per epoch so far and the epochs the budget has left.

        An upper bound in epochs (early stopping ends trials sooner), hence the "~".
        """
        epochs, seconds = table["epochs_run"].fillna(0).sum(), table["seconds"].fillna(0).sum()
        if not self.planned_epochs or not epochs:
            return ""
        remaining = max(self.planned_epochs - epochs, 0)
        return f" | ETA <={_duration(seconds / epochs * remaining)}"


def _end_position(tuner: Any, trial_id: str) -> int | None:
    """1-based position of a trial in the oracle's end order: its number in "trial i of N" even when
    several trials end before the progress line is printed (distributed workers)."""
    order = getattr(tuner.oracle, "end_order", None) or []
    return order.index(trial_id) + 1 if trial_id in order else None


def _present(value: Any) -> bool:
    import pandas as pd

    return value is not None and not (isinstance(value, float) and pd.isna(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def run_study(config: StudyConfig | str | Path, *, data: str | Path | None = None,
              overrides: Sequence[str] | Mapping[str, Any] = (), overwrite: bool = False,
              verbose: int = 0, distributed: Any = None) -> StudyOutcome:
    """Create or resume a study and run its search to the end of its budget.

    Args:
        config: a ``StudyConfig`` or the path of a study YAML file.
        data: data folder or zip (overrides the YAML's ``data``).
        overrides: dotted ``key=value`` settings applied on top of the YAML.
        overwrite: delete an existing run directory of this study first.
        verbose: Keras ``fit`` verbosity inside trials (0 = only hpstudy's line per trial).
        distributed: a ``hpstudy.distributed.DistributedSettings`` to serve the oracle as Keras Tuner's
            chief and run the trials in worker processes (see ``hpstudy.distributed``); None runs them here.

    With ``trials_per_process: N`` in the study (or ``overrides={"trials_per_process": N}``) the trials run
    in child processes that exit every N trials, so that memory TensorFlow keeps per trained model is
    returned to the system (see ``hpstudy.processes``); workers of a distributed search restart themselves
    every N trials instead.

    Returns:
        A ``StudyOutcome`` with the trials run now, the best trial and the boundary flags.

    Raises:
        ConfigError, DataError: bad configuration or data.
        StudyError: a changed configuration, too many failed trials, or a trial process that died.
    """
    quiet_tensorflow()
    config = resolve_config(config, data=data, overrides=overrides)
    paths = StudyPaths(config.study_dir)
    if overwrite and paths.root.exists():
        print(f"--overwrite: deleting the existing run {paths.root}")
        shutil.rmtree(paths.root)
    if config.trials_per_process and distributed is None:
        from hpstudy.processes import run_in_processes

        return run_in_processes(config, verbose=verbose)
    return run_here(config, verbose=verbose, distributed=distributed, overrides=overrides)


def run_here(config: StudyConfig, *, verbose: int = 0, distributed: Any = None,
             overrides: Sequence[str] | Mapping[str, Any] = (), trial_limit: int | None = None,
             announce: bool = True, started: float | None = None) -> StudyOutcome:
    """``run_study`` in this process, stopping after ``trial_limit`` trials (then ``outcome.paused``).

    ``announce=False`` leaves the closing summary to the caller (a parent process that ran several parts);
    ``started`` is the wall-clock start of the whole search, for the progress lines' elapsed time.
    """
    from hpstudy.data.prepare import prepare_data, resolve_source

    paths = StudyPaths(config.study_dir)
    source = resolve_source(config.data, positive_class=config.positive_class)
    paths.root.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temporaries(paths.root)  # e.g. a finished trial's file whose rewrite was killed
    _freeze_or_check(config, paths, source.fingerprint(splits=("train", "val")))
    finished_before = read_state(paths).get("status") == "finished"
    seed_everything(config.seed, deterministic=config.deterministic)
    configure_devices(mixed_precision=config.mixed_precision)
    prepared = prepare_data(source, image_size=config.image_size, normalization=config.normalization,
                            leak_check=config.leak_check, leaks_csv=paths.leaks_csv,
                            cache_dir=paths.cache_dir, stats_path=paths.data_stats)
    cached = _cached_search(config, paths, prepared)
    tuner, planned = _build_tuner(config, paths, prepared, cached=cached, trial_limit=trial_limit, started=started)
    _write_state(paths, status="running", started=_now(), planned_trials=planned)
    if distributed is not None:
        from hpstudy.distributed import serve_chief

        serve_chief(tuner, config, paths, distributed, overrides=overrides, verbose=verbose)
    else:
        _search(tuner, config, paths, prepared, verbose, cached=cached)
    return _conclude(tuner, config, paths, planned, finished_before, announce=announce)


def _cached_search(config: StudyConfig, paths: StudyPaths, prepared: Any) -> Any:
    """Head-only hypermodel and feature datasets when the study caches backbone features, else None."""
    from hpstudy.features import cached_search, uses_feature_cache

    return cached_search(config, prepared, paths.cache_dir) if uses_feature_cache(config) else None


def _build_tuner(config: StudyConfig, paths: StudyPaths, prepared: Any, *, cached: Any = None,
                 trial_limit: int | None = None, started: float | None = None) -> tuple[Any, int | None]:
    from hpstudy.hypermodels import build_hypermodel
    from hpstudy.tuners import make_keras_tuner_writes_atomic, make_tuner, planned_epochs, planned_trials

    make_keras_tuner_writes_atomic()
    hypermodel = cached.hypermodel if cached is not None else build_hypermodel(
        config.family, config.search_space, input_shape=prepared.input_shape, weights=config.weights,
        jit_compile=config.jit_compile)
    progress = _Progress(config, paths, None, started=started)
    tuner = make_tuner(config, hypermodel, directory=paths.root, on_trial_done=progress, trial_limit=trial_limit)
    progress.planned = planned_trials(tuner)
    progress.planned_epochs = planned_epochs(tuner, config.oracle.trial_epochs)
    return tuner, progress.planned


def _search(tuner: Any, config: StudyConfig, paths: StudyPaths, prepared: Any, verbose: int, *,
            cached: Any = None) -> None:
    from hpstudy.data.pipeline import class_weights, make_dataset
    from hpstudy.hypermodels import DatasetFactory

    def train(batch_size: int) -> Any:
        return make_dataset(prepared.x_train, prepared.y_train, batch_size=batch_size,
                            normalizer=prepared.normalizer, training=True,
                            augmentation=config.augmentation, seed=config.seed)

    def val(batch_size: int) -> Any:
        return make_dataset(prepared.x_val, prepared.y_val, batch_size=batch_size,
                            normalizer=prepared.normalizer, training=False)

    fit_kwargs: dict[str, Any] = {}
    if config.class_weights:
        fit_kwargs["class_weight"] = class_weights(prepared.y_train)
    try:
        train_data, val_data = (cached.train, cached.val) if cached is not None else \
            (DatasetFactory(train), DatasetFactory(val))
        tuner.search(train_data, validation_data=val_data,
                     epochs=config.oracle.trial_epochs, callbacks=_callbacks(config, paths),
                     verbose=verbose, **fit_kwargs)
    except RuntimeError as exc:
        if "consecutive" in str(exc).lower() or "failed" in str(exc).lower():
            raise StudyError(f"study '{config.name}' stopped: {exc}\nSee the message column of "
                             f"{paths.trials_csv} for each failed trial.") from exc
        raise


def _conclude(tuner: Any, config: StudyConfig, paths: StudyPaths, planned: int | None,
              finished_before: bool, *, announce: bool = True) -> StudyOutcome:
    table = write_trials_csv(paths.tuner_dir, paths.trials_csv, hp_names=config.search_space.names)
    direction = config.objective.direction
    try:
        best = best_trial(table, direction=direction).to_dict()
    except StudyError:
        best = None
    flags = boundary_flags(table, config.search_space, direction=direction)
    total = len(table)
    exhausted = config.oracle.type != "hyperband" and bool(planned) and total < planned
    # stopped at trials_per_process: budget left, unless that was the last planned trial
    paused = bool(getattr(tuner, "paused", False)) and not (planned and total >= planned)
    _write_state(paths, status="running" if paused else "finished", finished=None if paused else _now(),
                 trials_done=total, planned_trials=planned,
                 best_trial=None if best is None else best["trial_id"],
                 best_score=None if best is None else best["score"], boundary=flags, exhausted=exhausted)
    outcome = StudyOutcome(paths.root, tuner.trials_run_here, total, planned, best, flags,
                           finished_before and tuner.trials_run_here == 0, exhausted, paused)
    if announce:
        print(summary_text(outcome, config))
    return outcome


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
    if outcome.best is not None:
        lines.append(f"Best trial {outcome.best['trial_id']}: {config.objective.name}={outcome.best['score']:.4f} "
                     f"at epoch {outcome.best['best_epoch']}.")
    lines.extend(boundary_lines(outcome.boundary))
    lines.append(f"Trials table: {StudyPaths(outcome.study_dir).trials_csv}")
    return "\n".join(lines)


def boundary_lines(flags: Sequence[Mapping[str, Any]]) -> list[str]:
    """Human-readable boundary warnings (only for ranges that can be extended)."""
    lines = []
    for flag in flags:
        if flag["extendable"]:
            lines.append(f"boundary: {flag['hyperparameter']}={flag['best_value']:g} is at the {flag['side']} end "
                         f"of its range ({flag['trials_at_limit']} of the best trials): {flag['suggestion']}.")
    return lines


def export_trials(config: StudyConfig | str | Path) -> Path:
    """Rebuild ``trials.csv`` from the tuner directory of a study; returns its path."""
    config = resolve_config(config)
    paths = StudyPaths(config.study_dir)
    if not paths.tuner_dir.is_dir():
        raise StudyError(f"no tuner directory at {paths.tuner_dir}: run `hpstudy search` first")
    write_trials_csv(paths.tuner_dir, paths.trials_csv, hp_names=config.search_space.names)
    return paths.trials_csv


def study_status(config: StudyConfig | str | Path, *, top: int = 5) -> str:
    """Progress, top trials and boundary flags of a study, as text."""
    config = resolve_config(config)
    paths = StudyPaths(config.study_dir)
    state = read_state(paths)
    if not state:
        return f"Study '{config.name}' has not been run yet ({paths.root} does not exist or is empty)."
    table = load_trials(paths.root)
    counts = table["status"].value_counts().to_dict()
    planned = state.get("planned_trials")
    lines = [f"Study '{config.name}' [{state.get('status', '?')}] at {paths.root}",
             f"trials: {len(table)}{f' of {planned} planned' if planned else ''}; "
             + ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items()))]
    done = table[table["status"] == "COMPLETED"].sort_values(
        "score", ascending=config.objective.direction == "min").head(top)
    if not done.empty:
        columns = ["trial_id", "score", "best_epoch", "epochs_run", "seconds",
                   *[c for c in table.columns if c.startswith("hp_")]]
        lines.append(f"top {len(done)} by {config.objective.name}:")
        lines.append(done[columns].to_string(index=False))
    lines.extend(boundary_lines(state.get("boundary", [])))
    return "\n".join(lines)
