"""Trials table: a pure function of the tuner directory, and the best trial.

Every trial directory ``tuner/trial_<id>/`` holds Keras Tuner's ``trial.json`` and, written by
hpstudy when the trial ends, ``hpstudy_trial.json`` (timing, best epoch, metrics at the best epoch)
and ``history.csv`` (one row per epoch). ``trials_frame`` flattens them into one row per trial with
a fixed column order::

    trial_id, status, score, best_epoch, epochs_run, seconds, hp_<name>..., <metric>..., val_<metric>...,
    hb_bracket, hb_round, hb_epochs, hb_initial_epoch, hb_parent, message, pid, rss_mib,
    wall_s, useful_s, overhead_s, start_s, build_s, trace_s, checkpoint_s

``pid`` is the process that ran the trial and ``rss_mib`` its resident memory after the trial's cleanup.
``wall_s`` is the trial's share of its process's time (from the previous trial's end, or the process start,
to its own end), ``useful_s`` the seconds inside its epochs less the tracing of the first steps, and
``overhead_s = wall_s - useful_s``; ``start_s``, ``build_s``, ``trace_s`` and ``checkpoint_s`` are parts of
the overhead (``hpstudy.search.timing``). A trial run before hpstudy measured them has them empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hpstudy._io import atomic_path, read_json
from hpstudy.errors import StudyError
from hpstudy.paths import ORACLE_FILE, TRIAL_FILE, TRIAL_META_FILE, StudyPaths

__all__ = ["BASE_COLUMNS", "TIMING_COLUMNS", "trials_frame", "write_trials_csv", "load_trials", "best_trial",
           "completed_trials", "check_tuner_files", "ranked_trials", "trial_hyperparameters", "useful_fraction"]

BASE_COLUMNS = ("trial_id", "status", "score", "best_epoch", "epochs_run", "seconds")
# Which process ran the trial and its resident memory after the trial's cleanup (a leak climbs).
_PROCESS_COLUMNS = ("pid", "rss_mib")
# Where the trial's wall time went (hpstudy.search.timing writes them under "timing" in hpstudy_trial.json).
TIMING_COLUMNS = ("wall_s", "useful_s", "overhead_s", "start_s", "build_s", "trace_s", "checkpoint_s")
_METRIC_ORDER = ("loss", "accuracy", "auc", "precision", "recall")
_HYPERBAND_KEYS = {
    "tuner/bracket": "hb_bracket",
    "tuner/round": "hb_round",
    "tuner/epochs": "hb_epochs",
    "tuner/initial_epoch": "hb_initial_epoch",
    "tuner/trial_id": "hb_parent",
}
def _trial_row(trial_dir: Path) -> dict[str, Any] | None:
    if not (trial_dir / TRIAL_FILE).is_file():  # a trial directory Keras Tuner has not written into yet
        return None
    trial = _tuner_file(trial_dir / TRIAL_FILE)
    meta = read_json(trial_dir / TRIAL_META_FILE, default=None) or {}
    values = trial.get("hyperparameters", {}).get("values", {})
    row: dict[str, Any] = {
        "trial_id": str(trial["trial_id"]),
        "status": trial.get("status", "UNKNOWN"),
        "score": trial.get("score"),
        "best_epoch": meta.get("best_epoch"),
        "epochs_run": meta.get("epochs_run"),
        "seconds": meta.get("seconds"),
    }
    for name, value in values.items():
        if name not in _HYPERBAND_KEYS:
            row[f"hp_{name}"] = value
    for name, value in (meta.get("best_metrics") or {}).items():
        row[name] = value
    for key, column in _HYPERBAND_KEYS.items():
        if key in values:
            row[column] = values[key]
    row["message"] = _short_message(trial.get("message"))
    row.update({column: meta.get(column) for column in _PROCESS_COLUMNS})
    timing = meta.get("timing") or {}
    row.update({column: timing.get(column) for column in TIMING_COLUMNS})
    return row


def _short_message(message: str | None) -> str | None:
    """Last line of a failure traceback: the part a user reads."""
    if not message:
        return None
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else None


def _metric_sort_key(name: str) -> tuple[int, int, str]:
    is_val = name.startswith("val_")
    base = name[4:] if is_val else name
    rank = _METRIC_ORDER.index(base) if base in _METRIC_ORDER else len(_METRIC_ORDER)
    return (int(is_val), rank, base)


def _ordered_columns(rows: list[dict[str, Any]], hp_names: Sequence[str] | None) -> list[str]:
    present = {key for row in rows for key in row}
    hp_cols = [f"hp_{n}" for n in (hp_names or [])]
    hp_cols += sorted(c for c in present if c.startswith("hp_") and c not in hp_cols)
    fixed = (set(BASE_COLUMNS) | set(hp_cols) | set(_HYPERBAND_KEYS.values()) | {"message", *_PROCESS_COLUMNS}
             | set(TIMING_COLUMNS))
    metrics = sorted((c for c in present if c not in fixed), key=_metric_sort_key)
    hyperband = [c for c in _HYPERBAND_KEYS.values() if c in present]
    return [*BASE_COLUMNS, *hp_cols, *metrics, *hyperband, "message", *_PROCESS_COLUMNS, *TIMING_COLUMNS]


def trials_frame(tuner_dir: str | Path, *, hp_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Build the trials table from a Keras Tuner project directory.

    Args:
        tuner_dir: the project directory holding ``trial_<id>/trial.json``.
        hp_names: hyperparameter names in search-space order (others follow, sorted).

    Returns:
        One row per trial, sorted by trial id, in the fixed column order of the module docstring.

    Raises:
        StudyError: a ``trial.json`` is not valid JSON (named, with what to do).
    """
    tuner_dir = Path(tuner_dir)
    rows = [row for d in sorted(tuner_dir.glob("trial_*")) if (row := _trial_row(d)) is not None]
    columns = _ordered_columns(rows, hp_names)
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("trial_id", kind="stable").reset_index(drop=True)


def write_trials_csv(tuner_dir: str | Path, csv_path: str | Path, *,
                     hp_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Rebuild the trials table and write it atomically to ``csv_path``; returns the table.

    Raises:
        StudyError: a tuner file is broken, or the new table would lose a finished trial the existing
            ``trials.csv`` holds (it is then left as it is, and the missing trials are named).
    """
    frame = trials_frame(tuner_dir, hp_names=hp_names)
    _refuse_losing_trials(Path(csv_path), frame)
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


_ENDED = ("COMPLETED", "FAILED")


def _refuse_losing_trials(csv_path: Path, frame: pd.DataFrame) -> None:
    if not csv_path.is_file():
        return
    try:
        old = pd.read_csv(csv_path, dtype={"trial_id": str}, usecols=["trial_id", "status"])
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return  # not a readable table: nothing in it to keep
    lost = sorted(set(old.loc[old["status"].isin(_ENDED), "trial_id"]) - set(frame["trial_id"]))
    if lost:
        raise StudyError(f"{csv_path} holds finished trial(s) {', '.join(lost)} that the tuner files no longer have "
                         f"(tuner/trial_<id>/ missing); it was left as it is. Restore those trial folders, or move "
                         f"{csv_path.name} away to write a table without them")


def check_tuner_files(tuner_dir: str | Path) -> None:
    """Refuse to go on with a broken Keras Tuner project: name the broken file and say what to do.

    Raises:
        StudyError: ``oracle.json`` or a ``trial_<id>/trial.json`` is not valid JSON.
    """
    tuner_dir = Path(tuner_dir)
    for path in [tuner_dir / ORACLE_FILE, *sorted(tuner_dir.glob(f"trial_*/{TRIAL_FILE}"))]:
        if path.is_file():
            _tuner_file(path)


def _tuner_file(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        data, reason = None, problem
    else:
        reason = "not a JSON object"
    if isinstance(data, dict):
        return data
    raise StudyError(f"{path} is broken ({reason}); it is Keras Tuner's record of the search and hpstudy cannot "
                     "rebuild it. Restore it from a backup of the study folder; otherwise start the study again with "
                     "--overwrite (copy trials.csv first: it keeps the finished trials' results)")


def load_trials(study: str | Path) -> pd.DataFrame:
    """Read a study's ``trials.csv`` (pass the run directory or the CSV itself).

    Raises:
        StudyError: when there is no trials table yet.
    """
    path = Path(study)
    if path.suffix != ".csv":
        path = StudyPaths(path).trials_csv
    if not path.is_file():
        raise StudyError(f"no trials table at {path}: run `hpstudy search` first")
    try:
        table = pd.read_csv(path, dtype={"trial_id": str, "hb_parent": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        table, problem = None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    else:
        missing = [c for c in BASE_COLUMNS if c not in table.columns]
        problem = f"columns {', '.join(missing)} are missing" if missing else None
    if problem is not None:
        raise StudyError(f"{path} is not a readable trials table ({problem}); it is derived from the tuner files: "
                         "rebuild it with `hpstudy export STUDY.yaml`")
    return table


def best_trial(trials: pd.DataFrame, *, direction: str = "max") -> pd.Series:
    """The completed trial with the best score (ties: the earliest trial).

    Raises:
        StudyError: when no trial completed with a score.
    """
    done = completed_trials(trials)
    if done.empty:
        raise StudyError("no completed trial with a score: the search has not produced a usable trial")
    ordered = done.sort_values(["score", "trial_id"], ascending=[direction == "min", True], kind="stable")
    return ordered.iloc[0]


def completed_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The rows of trials that completed with a score."""
    return trials[(trials["status"] == "COMPLETED") & trials["score"].notna()]


def ranked_trials(trials: pd.DataFrame, *, direction: str = "max") -> pd.DataFrame:
    """The completed trials with a score, best first (ties: the earliest trial), as ``best_trial`` orders them."""
    return completed_trials(trials).sort_values(["score", "trial_id"], ascending=[direction == "min", True],
                                                kind="stable")


def trial_hyperparameters(paths: StudyPaths, trial_id: str) -> dict[str, Any]:
    """Exact hyperparameter values of a trial, read from Keras Tuner's trial.json (types preserved).

    Keras Tuner's own bookkeeping values (``tuner/epochs``, ``tuner/bracket``, ...) are left out.

    Raises:
        StudyError: the trial file is missing or broken.
    """
    trial_json = paths.trial_json(trial_id)
    try:
        values = read_json(trial_json)["hyperparameters"]["values"]
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise StudyError(f"cannot read the hyperparameters of trial {trial_id} from {trial_json}: {exc}") from exc
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def useful_fraction(trials: pd.DataFrame) -> float | None:
    """The study's useful-work fraction: seconds inside the trials' epochs (less tracing) over the trials' wall time.

    The trials' wall times tile the time of the processes that ran them (process start included), so this is
    the share of the search's time that trained or validated a model. None when no trial has timings (a study
    run before hpstudy measured them).
    """
    if "wall_s" not in trials.columns or "useful_s" not in trials.columns:
        return None
    timed = trials[pd.to_numeric(trials["wall_s"], errors="coerce").notna()]
    wall = pd.to_numeric(timed["wall_s"]).sum()
    if timed.empty or wall <= 0:
        return None
    return float(pd.to_numeric(timed["useful_s"], errors="coerce").fillna(0).sum() / wall)
