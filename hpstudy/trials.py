"""Trials table: a pure function of the tuner directory, plus best-trial selection and boundary check.

Every trial directory ``tuner/trial_<id>/`` holds Keras Tuner's ``trial.json`` and, written by
hpstudy when the trial ends, ``hpstudy_trial.json`` (timing, best epoch, metrics at the best epoch)
and ``history.csv`` (one row per epoch). ``trials_frame`` flattens them into one row per trial with
a fixed column order::

    trial_id, status, score, best_epoch, epochs_run, seconds, hp_<name>..., <metric>..., val_<metric>...,
    hb_bracket, hb_round, hb_epochs, hb_initial_epoch, hb_parent, message, pid, rss_mib

``pid`` is the process that ran the trial and ``rss_mib`` its resident memory after the trial's cleanup.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hpstudy._io import atomic_path
from hpstudy.errors import StudyError

__all__ = [
    "TRIAL_META_FILE",
    "HISTORY_FILE",
    "BASE_COLUMNS",
    "trials_frame",
    "write_trials_csv",
    "load_trials",
    "best_trial",
    "boundary_flags",
]

TRIAL_META_FILE = "hpstudy_trial.json"
HISTORY_FILE = "history.csv"
BASE_COLUMNS = ("trial_id", "status", "score", "best_epoch", "epochs_run", "seconds")
# Which process ran the trial and its resident memory after the trial's cleanup (a leak climbs).
_PROCESS_COLUMNS = ("pid", "rss_mib")
_METRIC_ORDER = ("loss", "accuracy", "auc", "precision", "recall")
_HYPERBAND_KEYS = {
    "tuner/bracket": "hb_bracket",
    "tuner/round": "hb_round",
    "tuner/epochs": "hb_epochs",
    "tuner/initial_epoch": "hb_initial_epoch",
    "tuner/trial_id": "hb_parent",
}
# Physical limits: a hyperparameter already at one of these cannot be extended past it.
# Hyperparameters that only act when another one allows it (momentum for sgd only; the dense layers'
# width and dropout only when there is a dense layer): a boundary flag on them is meaningless for trials
# where they were inactive. Each entry: (the other hyperparameter, the test its value must pass).
_ACTIVE_WHEN: dict[str, tuple[str, Any]] = {
    "momentum": ("optimizer", lambda v: v == "sgd"),
    "weight_decay": ("optimizer", lambda v: v == "adamw"),
    "dense_units": ("n_dense", lambda v: v >= 1),
    "dropout": ("n_dense", lambda v: v >= 1),
}
_HARD_LIMITS = {
    "dropout": (0.0, 0.95),
    "conv_dropout": (0.0, 0.95),
    "momentum": (0.0, 0.999),
    "n_blocks": (1, None),
    "n_dense": (0, None),
    "base_filters": (1, None),
    "dense_units": (1, None),
    "kernel_size": (1, None),
    "batch_size": (1, None),
}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _trial_row(trial_dir: Path) -> dict[str, Any] | None:
    trial = _read_json(trial_dir / "trial.json")
    if trial is None:
        return None
    meta = _read_json(trial_dir / TRIAL_META_FILE) or {}
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
    fixed = set(BASE_COLUMNS) | set(hp_cols) | set(_HYPERBAND_KEYS.values()) | {"message", *_PROCESS_COLUMNS}
    metrics = sorted((c for c in present if c not in fixed), key=_metric_sort_key)
    hyperband = [c for c in _HYPERBAND_KEYS.values() if c in present]
    return [*BASE_COLUMNS, *hp_cols, *metrics, *hyperband, "message", *_PROCESS_COLUMNS]


def trials_frame(tuner_dir: str | Path, *, hp_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Build the trials table from a Keras Tuner project directory.

    Args:
        tuner_dir: the project directory holding ``trial_<id>/trial.json``.
        hp_names: hyperparameter names in search-space order (others follow, sorted).

    Returns:
        One row per trial, sorted by trial id, in the fixed column order of the module docstring.
        Trials whose ``trial.json`` cannot be read (e.g. being written) are skipped.
    """
    tuner_dir = Path(tuner_dir)
    rows = [row for d in sorted(tuner_dir.glob("trial_*")) if (row := _trial_row(d)) is not None]
    columns = _ordered_columns(rows, hp_names)
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("trial_id", kind="stable").reset_index(drop=True)


def write_trials_csv(tuner_dir: str | Path, csv_path: str | Path, *,
                     hp_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Rebuild the trials table and write it atomically to ``csv_path``; returns the table."""
    frame = trials_frame(tuner_dir, hp_names=hp_names)
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def load_trials(study: str | Path) -> pd.DataFrame:
    """Read a study's ``trials.csv`` (pass the run directory or the CSV itself).

    Raises:
        StudyError: when there is no trials table yet.
    """
    path = Path(study)
    if path.suffix != ".csv":
        path = path / "trials.csv"
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
    done = trials[(trials["status"] == "COMPLETED") & trials["score"].notna()]
    if done.empty:
        raise StudyError("no completed trial with a score: the search has not produced a usable trial")
    ordered = done.sort_values(["score", "trial_id"], ascending=[direction == "min", True], kind="stable")
    return ordered.iloc[0]


def _top_trials(trials: pd.DataFrame, direction: str, top_k: int) -> pd.DataFrame:
    done = trials[(trials["status"] == "COMPLETED") & trials["score"].notna()]
    return done.sort_values("score", ascending=direction == "min", kind="stable").head(top_k)


def _position(param: Any, value: float) -> str | None:
    """'low' or 'high' when ``value`` lies at or next to that end of the range, else None.

    Being exactly at an end wins; otherwise "next to" is within 10 % of the range width (on the log
    scale for log ranges), or one step for integers.
    """
    if param.type == "choice":
        values = list(param.values)
        if value not in values:
            return None
        index = values.index(value)
        return "low" if index == 0 else "high" if index == len(values) - 1 else None
    low, high = float(param.low), float(param.high)
    if high <= low:
        return None
    if value <= low or value >= high:
        return "low" if value <= low else "high"
    if param.log:
        low, high, value = math.log10(low), math.log10(high), math.log10(value)
    margin = 0.1 * (high - low)
    if param.type == "int" and not param.log:
        margin = max(margin, float(param.step or 1))
    if value <= low + margin:
        return "low"
    if value >= high - margin:
        return "high"
    return None


def _suggestion(param: Any, side: str) -> tuple[float | None, str]:
    """Suggested new limit for ``side`` and a sentence saying it (None when it cannot be extended).

    Log ranges move one decade, linear ranges half their width (at least one step), ordered choices
    one more value in their own progression (x2 for 8, 16, 32; +2 for 3, 5).
    """
    sign = -1 if side == "low" else 1
    if param.type == "choice":
        values = [float(v) for v in param.values]
        end, neighbour = (values[0], values[1]) if side == "low" else (values[-1], values[-2])
        new = end * end / neighbour if _is_geometric(values) else 2 * end - neighbour
    else:
        end = float(param.low if side == "low" else param.high)
        if param.log:
            new = end * 10.0 ** sign
        else:
            width = float(param.high) - float(param.low)
            new = end + sign * max(width / 2, float(param.step or 0))
    lo_hard, hi_hard = _HARD_LIMITS.get(param.name, (0.0, None))
    if side == "low" and lo_hard is not None:
        new = max(new, lo_hard)
    if side == "high" and hi_hard is not None:
        new = min(new, hi_hard)
    if all(float(v).is_integer() for v in _numeric_values(param)) and param.type != "float":
        new = float(math.floor(new) if side == "low" else math.ceil(new))
    if new == end:
        return None, f"already at its hard limit {end:g}; cannot be extended"
    verb = "lower" if side == "low" else "raise"
    return new, f"{verb} the {side} end from {end:g} to {new:g}"


def _is_geometric(values: list[float]) -> bool:
    """Values that grow by one whole factor (8, 16, 32): extend them by that factor, not by a step."""
    if len(values) < 2 or any(v <= 0 for v in values):
        return False
    ratios = {values[i + 1] / values[i] for i in range(len(values) - 1)}
    return len(ratios) == 1 and float(next(iter(ratios))).is_integer() and next(iter(ratios)) > 1


def _numeric_values(param: Any) -> list[float]:
    if param.type == "choice":
        return [float(v) for v in param.values]
    return [float(param.low), float(param.high)]


def _active(trials: pd.DataFrame, name: str) -> pd.Series:
    """Rows of the trials in which ``name`` had an effect."""
    parent, test = _ACTIVE_WHEN.get(name, (None, None))
    if parent is None or f"hp_{parent}" not in trials.columns:
        return pd.Series(True, index=trials.index)
    return trials[f"hp_{parent}"].map(lambda value: bool(pd.notna(value) and test(value)))


def _is_boundary_candidate(param: Any) -> bool:
    if param.type in ("float", "int"):
        return True
    return param.type == "choice" and bool(param.is_numeric) and len(param.values) >= 2


def boundary_flags(trials: pd.DataFrame, space: Any, *, direction: str = "max",
                   top_k: int = 3) -> list[dict[str, Any]]:
    """Flag hyperparameters whose best values sit at or next to the end of their range.

    A course rule: an optimum at the edge of the searched range means the range was too narrow.
    For each numeric hyperparameter (and each ordered numeric choice) of the best trial, the value is
    compared with the range on the log scale for log ranges; "next to" means within 10 % of the range
    width (or one step for integers, or the first/last value of an ordered choice).

    Args:
        trials: the trials table.
        space: the study's ``SearchSpace``.
        direction: "max" or "min" for the score.
        top_k: how many of the best trials are counted in ``trials_at_limit``.

    Returns:
        One dict per flagged hyperparameter: hyperparameter, side, limit, best_value,
        trials_at_limit ("k/n" among the top trials), extendable, suggested_limit, suggestion.
    """
    top = _top_trials(trials, direction, top_k)
    if top.empty:
        return []
    flags = []
    for param in space.params:
        column = f"hp_{param.name}"
        if not _is_boundary_candidate(param) or column not in top.columns:
            continue
        top = _top_trials(trials[_active(trials, param.name)], direction, top_k)
        if top.empty or pd.isna(top.iloc[0][column]):
            continue
        best_value = float(top.iloc[0][column])
        side = _position(param, best_value)
        if side is None:
            continue
        at_limit = sum(_position(param, float(v)) == side for v in top[column].dropna())
        limit = _numeric_values(param)[0 if side == "low" else -1]
        new, sentence = _suggestion(param, side)
        flags.append({
            "hyperparameter": param.name,
            "side": side,
            "limit": limit,
            "best_value": best_value,
            "trials_at_limit": f"{at_limit}/{len(top)}",
            "extendable": new is not None,
            "suggested_limit": new,
            "suggestion": sentence,
        })
    return flags
