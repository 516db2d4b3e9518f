"""The front end of a study: create or resume its search, show its status, export its trials table.

A study is a directory (``studies/<name>/``). Running the same configuration again resumes it;
a changed configuration is refused with the difference shown, except for the settings that only
extend the budget or do not touch the search (``search.session.RESUMABLE_CHANGES``). How the trials
run is chosen here: in this process (``search.session``), in child processes every
``trials_per_process`` trials (``search.processes``), or by distributed workers (``search.distributed``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpstudy._io import format_duration
from hpstudy._log import quieted
from hpstudy.boundary import boundary_flags, boundary_lines, settled_sentence
from hpstudy.config import StudyConfig, resolve_config, stage_config
from hpstudy.errors import StudyError
from hpstudy.paths import StudyPaths
from hpstudy.records import read_initial_record, read_state, study_lock
from hpstudy.runtime import quiet_tensorflow
from hpstudy.search.session import StudyOutcome
from hpstudy.selection import status_lines as selection_lines
from hpstudy.trials import load_trials, useful_fraction, write_trials_csv

__all__ = ["StudyOutcome", "run_study", "export_trials", "study_status"]

log = logging.getLogger("hpstudy")


def run_study(config: StudyConfig | str | Path, *, data: str | Path | None = None,
              overrides: Sequence[str] | Mapping[str, Any] = (), overwrite: bool = False,
              verbose: bool = True, fit_verbose: int = 0, distributed: Any = None) -> StudyOutcome:
    """Create or resume a study and run its search to the end of its budget.

    Args:
        config: a ``StudyConfig`` or the path of a study YAML file.
        data: data folder or zip (overrides the YAML's ``data``).
        overrides: dotted ``key=value`` settings applied on top of the YAML.
        overwrite: delete an existing run directory of this study first.
        verbose: log one line per trial and the summary (False: only warnings; the ``hpstudy`` logger's
            level silences them too).
        fit_verbose: Keras ``fit`` verbosity inside trials (0 = only hpstudy's line per trial).
        distributed: a ``hpstudy.search.distributed.DistributedSettings`` to serve the oracle as Keras
            Tuner's chief and run the trials in worker processes; None runs them here.

    With ``trials_per_process: N`` in the study (or ``overrides={"trials_per_process": N}``) the trials run
    in child processes that exit every N trials, so that memory TensorFlow keeps per trained model is
    returned to the system (see ``hpstudy.search.processes``); workers of a distributed search restart
    themselves every N trials instead.

    Returns:
        A ``StudyOutcome`` with the trials run now, the best trial and the boundary flags.

    Raises:
        ConfigError, DataError: bad configuration or data.
        StudyError: a changed configuration, too many failed trials, or a trial process that died.
    """
    quiet_tensorflow()
    config = resolve_config(config, data=data, overrides=overrides)
    paths = StudyPaths(config.study_dir)
    with quieted(not verbose), study_lock(paths, command="search"):
        if overwrite and paths.root.exists():
            log.info("--overwrite: deleting the existing run %s", paths.root)
            _delete_run(paths)
        if distributed is not None:
            from hpstudy.search.distributed import run_chief

            return run_chief(config, distributed, overrides=overrides, fit_verbose=fit_verbose)
        if config.trials_per_process:
            from hpstudy.search.processes import run_in_processes

            return run_in_processes(config, fit_verbose=fit_verbose)
        from hpstudy.search.session import run_here

        return run_here(config, fit_verbose=fit_verbose)


def _delete_run(paths: StudyPaths) -> None:
    """Delete a run directory, except the lock file this process holds (deleting it would free the study) and
    the repeats of an oracle comparison (``repeat-<r>/``: runs of their own, kept by ``hpstudy compare``)."""
    for child in paths.root.iterdir():
        if child == paths.lock:
            continue
        if child.is_dir() and child.name.startswith("repeat-") and child == paths.repeat(_index(child.name)):
            log.info("--overwrite: keeping %s (a repeat of `hpstudy compare`; delete it by hand if unwanted)", child)
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _index(name: str) -> int:
    suffix = name.partition("-")[2]
    return int(suffix) if suffix.isdigit() else -1


def export_trials(config: StudyConfig | str | Path) -> Path:
    """Rebuild ``trials.csv`` from the tuner directory of a study; returns its path.

    Raises:
        StudyError: no search yet, a broken tuner file, a table that would lose finished trials, or
            another process using the study.
    """
    config = stage_config(config, stage="export")
    paths = StudyPaths(config.study_dir)
    if not paths.tuner_dir.is_dir():
        raise StudyError(f"no tuner directory at {paths.tuner_dir}: run `hpstudy search` first")
    with study_lock(paths, command="export"):
        write_trials_csv(paths.tuner_dir, paths.trials_csv, hp_names=config.search_space.names)
    return paths.trials_csv


def study_status(config: StudyConfig | str | Path, *, top: int = 5) -> str:
    """Progress, top trials and boundary flags of a study, as text (read only: works while a search runs)."""
    config = resolve_config(config)
    paths = StudyPaths(config.study_dir)
    state = read_state(paths)
    if not state:
        return f"Study '{config.name}' has not been run yet ({paths.root} does not exist or is empty)."
    config = stage_config(config, stage="status")
    table = load_trials(paths.root)
    counts = table["status"].value_counts().to_dict()
    planned = state.get("planned_trials")
    lines = [f"Study '{config.name}' [{state.get('status', '?')}] at {paths.root}",
             f"trials: {len(table)}{f' of {planned} planned' if planned else ''}; "
             + ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items()))]
    lines.extend(_useful_work_lines(table))
    done = table[table["status"] == "COMPLETED"].sort_values(
        "score", ascending=config.objective.direction == "min").head(top)
    if not done.empty:
        columns = ["trial_id", "score", "best_epoch", "epochs_run", "seconds",
                   *[c for c in table.columns if c.startswith("hp_")]]
        lines.append(f"top {len(done)} by {config.objective.name}:")
        lines.append(done[columns].to_string(index=False))
    lines.extend(_warm_start_lines(paths))
    flags = _current_flags(table, config) if not done.empty else state.get("boundary", [])
    lines.extend(boundary_lines(flags))
    lines.extend(_settled_lines(state, config, flags))
    lines.extend(selection_lines(paths))
    return "\n".join(lines)


def _useful_work_lines(table: Any) -> list[str]:
    """One line: the share of the trials' wall time spent inside their epochs (none for untimed trials)."""
    fraction = useful_fraction(table)
    if fraction is None:
        return []
    wall = float(table["wall_s"].sum())
    return [f"useful work: {fraction:.2f} of {format_duration(wall)} trial wall time in epochs (less tracing); "
            "the rest is process start, model build, tracing and checkpoints (trials.csv: useful_s, overhead_s)"]


def _warm_start_lines(paths: StudyPaths) -> list[str]:
    """Which configurations the study tried first (``initial_trials``), if any."""
    record = read_initial_record(paths)
    if not record or not record["trials"]:
        return []
    studies = {entry.get("study") for entry in record["trials"]} - {None}
    if not studies:
        return [f"warm start: {len(record['trials'])} given configuration(s) were tried first (initial_trials)"]
    ids = ", ".join(str(entry.get("trial_id")) for entry in record["trials"])
    return [f"warm start: the {len(record['trials'])} best trial(s) of study {', '.join(sorted(studies))} "
            f"({ids}) were tried first (initial_trials)"]


def _current_flags(table: Any, config: StudyConfig) -> list[dict[str, Any]]:
    """The boundary flags of the trials as they are now, by this version's rules (``study.json`` keeps the
    ones computed when the search last concluded, possibly by an older version)."""
    return boundary_flags(table, config.search_space, direction=config.objective.direction,
                          image_size=config.image_size)


def _settled_lines(state: Mapping[str, Any], config: StudyConfig, flags: list[dict[str, Any]]) -> list[str]:
    """"ranges settled: ..." for a finished study without an extendable flag; else how to extend them."""
    if state.get("status") != "finished" or "boundary" not in state:
        return []
    settled = settled_sentence(flags)
    if settled is not None:
        return [settled]
    return [f"extend these ranges in a warm-started follow-up study: hpstudy extend {config.source or 'STUDY.yaml'}"]
