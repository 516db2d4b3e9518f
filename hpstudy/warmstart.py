"""Warm starts: the configurations a study tries first, and the history of a chain of such studies.

``initial_trials:`` (``hpstudy.config.initial``) lists configurations, or names another study whose best
completed trials are tried again. ``resolve_initial`` turns it into complete configurations once, when
the search first starts, and ``save_initial`` keeps them in ``initial_trials.json``: a resumed study (or
a child process of one) hands out the same ones even if the other study has changed since. The oracle
tries them first (``_kt_compat.try_first``).

``hpstudy extend`` chains studies this way (a follow-up starts from its original's best trials);
``study_chain`` follows the chain back to its first study and ``merged_history`` makes one table of it,
the oldest study's trials first, every trial keeping its own id (warm starts say which trial they
repeat).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hpstudy.boundary import is_active
from hpstudy.config import StudyConfig, load_study
from hpstudy.errors import ConfigError, StudyError
from hpstudy.paths import StudyPaths
from hpstudy.records import read_frozen, read_initial_record, write_initial_record
from hpstudy.trials import completed_trials, load_trials

__all__ = ["resolve_initial", "save_initial", "initial_values", "study_chain", "warm_start_ids", "merged_history",
           "load_history"]

log = logging.getLogger("hpstudy")


# --------------------------------------------------------------------------- resolving initial_trials
def resolve_initial(config: StudyConfig, paths: StudyPaths) -> list[dict[str, Any]]:
    """The configurations ``config`` tries first, in order, each as ``{values, study, trial_id, score}``.

    Read from ``initial_trials.json`` once the study has started; else resolved from the study
    definition (``from:`` reads the other study's trials table; nothing is written here).

    Raises:
        ConfigError: a ``from:`` study that is missing, of another family, this study itself, or whose
            trials use hyperparameters or values outside this study's space.
        StudyError: a ``from:`` study without a completed trial.
    """
    spec = config.initial_trials
    if spec is None:
        return []
    record = read_initial_record(paths)
    if record is not None:
        return list(record["trials"])
    if spec.source is None:
        return [{"values": dict(values), "study": None, "trial_id": None, "score": None}
                for values in spec.configurations]
    return _from_study(config)


def save_initial(paths: StudyPaths, config: StudyConfig, entries: Sequence[Mapping[str, Any]]) -> None:
    """Record the resolved configurations on the first search (no-op when recorded or when there are none)."""
    spec = config.initial_trials
    if spec is None or read_initial_record(paths) is not None:
        return
    source = _source(config)[0] if spec.source is not None else None
    write_initial_record(paths, {"source": None if spec.source is None else str(spec.source),
                                 "source_run_dir": None if source is None else str(source),
                                 "top_k": spec.top_k if spec.source is not None else None,
                                 "trials": [dict(entry) for entry in entries]})


def initial_values(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The hyperparameter values of resolved entries, in order."""
    return [dict(entry["values"]) for entry in entries]


def _where(config: StudyConfig) -> str:
    return f"{config.source or 'study ' + repr(config.name)}: initial_trials.from"


def _source(config: StudyConfig) -> tuple[Path, str, str, str]:
    """(run directory, name, family, objective direction) of the ``from:`` study."""
    source = config.initial_trials.source  # type: ignore[union-attr]
    assert source is not None
    if source.is_dir():
        frozen = read_frozen(StudyPaths(source)).get("config")
        if not frozen:
            raise ConfigError(f"{_where(config)}: {source} is not a study run directory (no study.yaml in it); "
                              "give the other study's YAML file or its run directory")
        return source, str(frozen.get("name")), str(frozen.get("family")), \
            str((frozen.get("objective") or {}).get("direction", "max"))
    if not source.is_file():
        raise ConfigError(f"{_where(config)}: no study at {source}; give the other study's YAML file or its run "
                          "directory")
    other = load_study(source)
    return other.study_dir, other.name, other.family, other.objective.direction


def _from_study(config: StudyConfig) -> list[dict[str, Any]]:
    run_dir, name, family, direction = _source(config)
    if family != config.family:
        raise ConfigError(f"{_where(config)}: study {name!r} ({config.initial_trials.source}) is of family "  # type: ignore[union-attr]
                          f"{family!r}, but this study is {config.family!r}: its configurations cannot be tried here")
    if run_dir.resolve() == Path(config.study_dir).resolve():
        raise ConfigError(f"{_where(config)}: names this study itself; name the study to start from")
    try:
        done = completed_trials(load_trials(run_dir))
    except StudyError:
        done = pd.DataFrame()
    if done.empty:
        raise StudyError(f"{_where(config)}: study {name!r} has no completed trial to start from ({run_dir}); "
                         f"run `hpstudy search` on it first")
    ordered = done.sort_values("score", ascending=direction == "min", kind="stable")
    return _top_configurations(config, ordered, name)


def _top_configurations(config: StudyConfig, ordered: pd.DataFrame, name: str) -> list[dict[str, Any]]:
    top_k = config.initial_trials.top_k  # type: ignore[union-attr]
    entries: list[dict[str, Any]] = []
    for _, row in ordered.iterrows():
        values = _configuration(config, row, name)
        if any(entry["values"] == values for entry in entries):
            continue  # a Hyperband continuation repeats its parent's configuration
        entries.append({"values": values, "study": name, "trial_id": str(row["trial_id"]),
                        "score": float(row["score"])})
        if len(entries) == top_k:
            break
    if len(entries) < top_k:
        log.info("note: study %r has %d distinct completed configuration(s), fewer than top_k=%d: all are tried "
                 "first", name, len(entries), top_k)
    return entries


def _configuration(config: StudyConfig, row: pd.Series, name: str) -> dict[str, Any]:
    """One trial's values as a complete configuration of this study's space."""
    space, trial = config.search_space, row["trial_id"]
    given = {c[3:]: row[c] for c in row.index if str(c).startswith("hp_") and pd.notna(row[c])}
    values = space.defaults()
    for hp, value in given.items():
        if hp not in space:
            raise ConfigError(f"{_where(config)}: trial {trial} of study {name!r} sets {hp!r}, which this study's "
                              f"space does not declare; it declares: {', '.join(space.names)}")
        try:
            values[hp] = space[hp].cast(value)
        except ValueError as exc:
            if is_active(hp, given):
                raise ConfigError(f"{_where(config)}: trial {trial} of study {name!r} has {hp}={value!r}: "
                                  f"{exc}") from None
            # inactive there (momentum without sgd): its value never mattered, so the default is as good
    return values


# --------------------------------------------------------------------------- one history of a chain
def study_chain(run_dir: str | Path, *, limit: int = 50) -> list[Path]:
    """Run directories of the studies ``run_dir`` descends from by ``initial_trials.from``, oldest first."""
    chain = [Path(run_dir)]
    while len(chain) < limit:
        try:
            record = read_initial_record(StudyPaths(chain[0]))
        except StudyError:
            break
        source = (record or {}).get("source_run_dir")
        if not source or Path(source) in chain or not Path(source).is_dir():
            break
        chain.insert(0, Path(source))
    return chain


def _by_trial_id(trials: pd.DataFrame) -> pd.DataFrame:
    ids = trials["trial_id"].astype(str)
    key = ids.astype(int) if len(ids) and ids.str.fullmatch(r"\d+").all() else ids
    return trials.assign(_key=key.to_numpy()).sort_values("_key", kind="stable").drop(columns="_key")


def warm_start_ids(trials: pd.DataFrame, entries: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Trial id -> ``"<study>/<trial id>"`` for the trials that repeated an earlier study's trial.

    Each entry of another study is matched to the first trial (in id order) with its values.
    """
    found: dict[str, str] = {}
    ordered = _by_trial_id(trials)
    for entry in entries:
        if entry.get("study") is None:
            continue
        for _, row in ordered.iterrows():
            trial_id = str(row["trial_id"])
            if trial_id not in found and _matches(row, entry["values"]):
                found[trial_id] = f"{entry['study']}/{entry['trial_id']}"
                break
    return found


def _matches(row: pd.Series, values: Mapping[str, Any]) -> bool:
    for name, value in values.items():
        seen = row.get(f"hp_{name}")
        if seen is None or (isinstance(seen, float) and pd.isna(seen)):
            return False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if abs(float(seen) - float(value)) > 1e-9 * max(1.0, abs(float(value))):
                return False
        elif seen != value:
            return False
    return True


def merged_history(parts: Sequence[tuple[str, pd.DataFrame, Mapping[str, str]]]) -> pd.DataFrame:
    """One trials table of a chain of studies: each study's trials in id order, the oldest study first.

    Args:
        parts: ``(study name, trials table, {trial id: "<study>/<trial id>" it repeated})`` per study.

    Returns:
        The trials with ``position`` (1..N along the history), ``study``, ``trial_id`` (the study's own
        id) and ``warm_start_of`` (None for a trial that repeats nothing) first, then the table's columns.
    """
    frames = []
    for name, trials, warm in parts:
        frame = _by_trial_id(trials).copy()
        frame.insert(0, "warm_start_of", [warm.get(str(t)) for t in frame["trial_id"]])
        frame.insert(0, "study", name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["position", "study", "trial_id", "warm_start_of"])
    merged = pd.concat(frames, ignore_index=True)
    merged.insert(0, "position", range(1, len(merged) + 1))
    columns = ["position", "study", "trial_id", "warm_start_of"]
    return merged[columns + [c for c in merged.columns if c not in columns]]


def load_history(run_dir: str | Path) -> tuple[pd.DataFrame, list[str]] | None:
    """The merged history of the chain ``run_dir`` ends, and the studies' names (None for a lone study)."""
    chain = study_chain(run_dir)
    if len(chain) < 2:
        return None
    parts = []
    for folder in chain:
        paths = StudyPaths(folder)
        name = str((read_frozen(paths).get("config") or {}).get("name") or folder.name)
        try:
            trials = load_trials(folder)
        except StudyError:
            continue
        try:
            entries = (read_initial_record(paths) or {"trials": []})["trials"]
        except StudyError:  # a broken record: the trials are still shown, without their warm-start marks
            entries = []
        parts.append((name, trials, warm_start_ids(trials, entries)))
    return merged_history(parts), [name for name, _, _ in parts]
