"""Oracle comparison: pure computations on trials tables (no drawing, no files).

Several studies of one model family on the same data, each searched by a different oracle, are compared
on the budget they really spent. For every study the best-so-far objective is traced against the trial
number (start order), the cumulative wall-clock seconds and the cumulative epochs trained; then each study
is asked when it first came within ``margin`` of the overall best score of all studies.

Only COMPLETED trials with a score count for "best"; the seconds and epochs of failed trials still count
as budget spent. RUNNING trials (no result yet) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hpstudy._io import format_duration

__all__ = ["StudyCurve", "HpRelation", "ComparisonData", "compare_oracles", "study_curve", "spearman"]

_DONE = ("COMPLETED", "FAILED", "INVALID")
_MAX_CATEGORIES = 8


@dataclass(eq=False)
class StudyCurve:
    """The search history of one study on the three budget axes, and its headline numbers."""

    name: str
    oracle: str | None
    trial_ids: list[str]
    trial_number: np.ndarray
    cum_seconds: np.ndarray
    cum_epochs: np.ndarray
    best_so_far: np.ndarray
    best_score: float | None
    best_trial: str | None
    n_trials: int
    n_completed: int
    n_failed: int
    total_seconds: float
    total_epochs: float
    trials_to_margin: int | None = None
    seconds_to_margin: float | None = None
    epochs_to_margin: float | None = None

    @property
    def label(self) -> str:
        """Legend text: the study name and its oracle type."""
        return f"{self.name} ({self.oracle})" if self.oracle else self.name


@dataclass(eq=False)
class HpRelation:
    """Values tried for one hyperparameter and how they relate to the score.

    ``points`` has columns study, value, score (completed trials only). ``spearman`` maps each study
    (and ``"all"`` for the pooled trials) to Spearman's rank correlation of value and score, for numeric
    hyperparameters. ``mean_by_value`` has one row per value and one column per study (mean score), for
    choices and numeric hyperparameters with few distinct values.
    """

    name: str
    kind: str
    points: pd.DataFrame
    spearman: dict[str, float | None] = field(default_factory=dict)
    mean_by_value: pd.DataFrame | None = None


@dataclass(eq=False)
class ComparisonData:
    """Everything the comparison figures and text show."""

    direction: str
    margin: float
    overall_best: float | None
    overall_best_study: str | None
    studies: dict[str, StudyCurve]
    hyperparameters: list[HpRelation]
    summary: list[str]

    def table(self) -> pd.DataFrame:
        """One row per study: trials, best score, budget, and budget to come within the margin."""
        rows = []
        for curve in self.studies.values():
            rows.append({
                "study": curve.name, "oracle": curve.oracle, "trials": curve.n_trials,
                "completed": curve.n_completed, "failed": curve.n_failed, "best score": curve.best_score,
                "best trial": curve.best_trial, "total epochs": curve.total_epochs,
                "total time": format_duration(curve.total_seconds),
                "trials to margin": _or_never(curve.trials_to_margin),
                "time to margin": format_duration(curve.seconds_to_margin),
                "epochs to margin": _or_never(curve.epochs_to_margin),
            })
        return pd.DataFrame(rows)


def _or_never(value: float | None) -> float | str:
    return "never" if value is None else value


def _check_direction(direction: str) -> None:
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be 'max' or 'min', but got {direction!r}")


def _start_order(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished trials sorted by trial id (numerically when every id is a number)."""
    frame = trials[trials["status"].isin(_DONE)].copy()
    ids = frame["trial_id"].astype(str)
    key = ids.astype(int) if ids.str.fullmatch(r"\d+").all() else ids
    return frame.assign(_key=key.to_numpy()).sort_values("_key", kind="stable").drop(columns="_key")


def _budget(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A budget column as floats (missing values and a missing column count as 0)."""
    if column not in frame.columns:
        return np.zeros(len(frame))
    return pd.to_numeric(frame[column], errors="coerce").fillna(0.0).to_numpy(dtype=float)


def _usable_scores(frame: pd.DataFrame) -> np.ndarray:
    """Scores of completed trials; NaN for every other trial."""
    scores = pd.to_numeric(frame["score"], errors="coerce").to_numpy(dtype=float)
    return np.where(frame["status"].to_numpy() == "COMPLETED", scores, np.nan)


def _running_best(scores: np.ndarray, direction: str) -> np.ndarray:
    best = np.full(len(scores), np.nan)
    current = math.nan
    for index, score in enumerate(scores):
        if not math.isnan(score) and (math.isnan(current) or
                                      (score > current if direction == "max" else score < current)):
            current = score
        best[index] = current
    return best


def study_curve(name: str, trials: pd.DataFrame, *, direction: str = "max",
                oracle: str | None = None) -> StudyCurve:
    """The best-so-far curve of one study on the trial, time and epoch axes (no margin yet)."""
    _check_direction(direction)
    frame = _start_order(trials)
    scores = _usable_scores(frame)
    best = _running_best(scores, direction)
    valid = ~np.isnan(scores)
    best_index = None
    if valid.any():
        best_index = int(np.nanargmax(scores) if direction == "max" else np.nanargmin(scores))
    seconds, epochs = np.cumsum(_budget(frame, "seconds")), np.cumsum(_budget(frame, "epochs_run"))
    return StudyCurve(
        name=name, oracle=oracle, trial_ids=frame["trial_id"].astype(str).tolist(),
        trial_number=np.arange(1, len(frame) + 1), cum_seconds=seconds, cum_epochs=epochs, best_so_far=best,
        best_score=None if best_index is None else float(scores[best_index]),
        best_trial=None if best_index is None else str(frame["trial_id"].iloc[best_index]),
        n_trials=len(frame), n_completed=int(valid.sum()), n_failed=int(len(frame) - valid.sum()),
        total_seconds=float(seconds[-1]) if len(frame) else 0.0,
        total_epochs=float(epochs[-1]) if len(frame) else 0.0,
    )


def _within(value: float, target: float, margin: float, direction: str) -> bool:
    if math.isnan(value):
        return False
    return value >= target - margin if direction == "max" else value <= target + margin


def _add_margin(curve: StudyCurve, target: float, margin: float, direction: str) -> None:
    """Set the trials, seconds and epochs the study needed to come within ``margin`` of ``target``."""
    hits = [i for i, value in enumerate(curve.best_so_far) if _within(float(value), target, margin, direction)]
    if hits:
        first = hits[0]
        curve.trials_to_margin = int(curve.trial_number[first])
        curve.seconds_to_margin = float(curve.cum_seconds[first])
        curve.epochs_to_margin = float(curve.cum_epochs[first])


def spearman(x: pd.Series, y: pd.Series) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None with < 3 pairs or a constant side."""
    pairs = pd.DataFrame({"x": pd.to_numeric(x, errors="coerce"), "y": pd.to_numeric(y, errors="coerce")}).dropna()
    if len(pairs) < 3:
        return None
    rx, ry = pairs["x"].rank().to_numpy(), pairs["y"].rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _is_numeric(values: pd.Series) -> bool:
    present = values.dropna()
    if present.empty or present.map(lambda v: isinstance(v, (bool, np.bool_))).any():
        return False
    return bool(pd.to_numeric(present, errors="coerce").notna().all())


def _hp_points(tables: Mapping[str, pd.DataFrame], column: str) -> pd.DataFrame:
    frames = []
    for name, trials in tables.items():
        if column not in trials.columns:
            continue
        done = trials[(trials["status"] == "COMPLETED") & pd.to_numeric(trials["score"], errors="coerce").notna()]
        frames.append(pd.DataFrame({"study": name, "value": done[column].to_numpy(dtype=object),
                                    "score": pd.to_numeric(done["score"]).to_numpy(dtype=float)}))
    points = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["study", "value", "score"])
    return points[points["value"].notna()].reset_index(drop=True)


def _mean_by_value(points: pd.DataFrame) -> pd.DataFrame:
    table = points.assign(value=points["value"].astype(str)).pivot_table(
        index="value", columns="study", values="score", aggfunc="mean", sort=False)
    numeric = pd.to_numeric(pd.Series(table.index), errors="coerce")
    if numeric.notna().all():
        table = table.iloc[np.argsort(numeric.to_numpy(), kind="stable")]
    table.columns.name = None
    return table


def _hp_relation(tables: Mapping[str, pd.DataFrame], column: str) -> HpRelation:
    points = _hp_points(tables, column)
    numeric = _is_numeric(points["value"])
    relation = HpRelation(name=column[3:], kind="numeric" if numeric else "categorical", points=points)
    if numeric:
        points["value"] = pd.to_numeric(points["value"]).astype(float)
        relation.spearman = {name: spearman(group["value"], group["score"])
                             for name, group in points.groupby("study", sort=False)}
        relation.spearman["all"] = spearman(points["value"], points["score"])
    if not numeric or points["value"].nunique() <= _MAX_CATEGORIES:
        relation.mean_by_value = _mean_by_value(points)
    return relation


def _hp_columns(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    return list(dict.fromkeys(c for t in tables.values() for c in t.columns if str(c).startswith("hp_")))


def _winners(values: Mapping[str, float | None], *, lowest: bool) -> list[str]:
    """Names holding the best non-None value (several on a tie)."""
    present = {name: v for name, v in values.items() if v is not None}
    if not present:
        return []
    target = min(present.values()) if lowest else max(present.values())
    return [name for name, v in present.items() if math.isclose(v, target, rel_tol=1e-12, abs_tol=1e-12)]


def _names(curves: Mapping[str, StudyCurve], names: list[str]) -> str:
    labels = [curves[n].label for n in names]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _score_sentence(curves: Mapping[str, StudyCurve], direction: str) -> str:
    scores = {n: c.best_score for n, c in curves.items()}
    winners = _winners(scores, lowest=direction == "min")
    if not winners:
        return "Best score: no study has a completed trial with a score yet."
    best = scores[winners[0]]
    others = [f"{curves[n].label} {s:.4f}" for n, s in scores.items() if n not in winners and s is not None]
    empty = [curves[n].label for n, s in scores.items() if s is None]
    verb = "tie for" if len(winners) > 1 else "found"
    text = f"Best score: {_names(curves, winners)} {verb} the best score, {best:.4f}"
    text += f" (others: {', '.join(others)})." if others else "."
    if empty:
        text += f" No completed trial in {', '.join(empty)}."
    return text


def _budget_sentence(curves: Mapping[str, StudyCurve], attribute: str, what: str, margin: float,
                     target: float) -> str:
    """E.g. "Time to come within 0.01 of the overall best (0.9200): B (bayesian) was fastest (...)"."""
    values = {n: getattr(c, attribute) for n, c in curves.items()}
    winners = _winners(values, lowest=True)
    seconds = attribute == "seconds_to_margin"
    head = f"{what} to come within {margin:g} of the overall best ({target:.4f})"
    if not winners:
        return f"{head}: no study got there."
    parts = [f"{curves[n].label} after {format_duration(v) if seconds else f'{v:g} epochs'}" for n, v in sorted(
        ((n, v) for n, v in values.items() if v is not None), key=lambda item: item[1])]
    never = [curves[n].label for n, v in values.items() if v is None]
    verb = ("were equally fast" if seconds else "needed equally few") if len(winners) > 1 else \
        ("was fastest" if seconds else "needed the fewest")
    text = f"{head}: {_names(curves, winners)} {verb} ({'; '.join(parts)})"
    return text + (f"; never: {', '.join(never)}." if never else ".")


def _summary(curves: Mapping[str, StudyCurve], direction: str, margin: float, target: float | None) -> list[str]:
    lines = [_score_sentence(curves, direction)]
    if target is None:
        return lines
    lines.append(_budget_sentence(curves, "seconds_to_margin", "Wall-clock time", margin, target))
    lines.append(_budget_sentence(curves, "epochs_to_margin", "Epochs", margin, target))
    if len(curves) == 1:
        lines.append("Only one study was given: there is no other strategy to compare with.")
    return lines


def compare_oracles(tables: Mapping[str, pd.DataFrame], *, direction: str = "max", margin: float = 0.01,
                    oracles: Mapping[str, str | None] | None = None) -> ComparisonData:
    """Compare the searches of several studies on score, wall-clock time and epochs trained.

    Args:
        tables: trials table of each study, keyed by study name (columns as in ``hpstudy.trials``).
        direction: "max" or "min": which scores are better.
        margin: absolute distance to the overall best score that counts as "as good"
            (a study is within the margin once ``best_so_far >= overall_best - margin`` for "max").
        oracles: oracle type of each study, used in legends and the summary.

    Returns:
        A ``ComparisonData`` with a curve per study, hyperparameter relations and summary sentences.

    Raises:
        ValueError: no tables, a bad direction or a negative margin.
    """
    _check_direction(direction)
    if not tables:
        raise ValueError("compare_oracles needs at least one trials table, but got none")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, but got {margin}")
    oracles = oracles or {}
    curves = {name: study_curve(name, t, direction=direction, oracle=oracles.get(name)) for name, t in tables.items()}
    scored = {n: c.best_score for n, c in curves.items() if c.best_score is not None}
    winners = _winners(scored, lowest=direction == "min")
    target = scored[winners[0]] if winners else None
    if target is not None:
        for curve in curves.values():
            _add_margin(curve, target, margin, direction)
    relations = [_hp_relation(tables, column) for column in _hp_columns(tables)]
    return ComparisonData(direction=direction, margin=margin, overall_best=target,
                          overall_best_study=winners[0] if winners else None, studies=curves,
                          hyperparameters=relations, summary=_summary(curves, direction, margin, target))
