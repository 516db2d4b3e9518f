"""The winner of a top-k re-evaluation, from fake or real runs alike: pure functions, no training.

The configuration with the best mean re-evaluation score wins; its search score is reported beside the
mean, never averaged in (it was selected on the same validation set, so it is biased upward). Per
candidate: search score, mean, sd, Student-t 95 % interval of the mean, n, median best epoch; and a plain
sentence saying whether the search's best trial kept its rank.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hpstudy.errors import StudyError

__all__ = ["Candidate", "Selection", "t_interval", "median_epoch", "choose_winner", "best_of_history",
           "candidates_frame", "summary_lines"]


@dataclass(frozen=True)
class Candidate:
    """One re-evaluated configuration: its search score and the statistics of its re-evaluation runs."""

    trial_id: str
    search_score: float
    mean: float | None
    sd: float | None
    ci95: tuple[float, float] | None
    n: int
    median_best_epoch: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "search_score": self.search_score, "mean": self.mean, "sd": self.sd,
                "ci95": None if self.ci95 is None else list(self.ci95), "n": self.n,
                "median_best_epoch": self.median_best_epoch}


@dataclass(frozen=True)
class Selection:
    """The outcome of the re-evaluation: candidates best mean first, the winner, and whether the rank changed."""

    top_k: int
    seeds: int
    candidates: tuple[Candidate, ...]
    winner: str
    single_run_winner: str
    rank_changed: bool
    sentence: str

    def candidate(self, trial_id: str) -> Candidate:
        return next(c for c in self.candidates if c.trial_id == trial_id)

    def to_dict(self) -> dict[str, Any]:
        """The ``selection`` record of ``final/best_config.json`` (the shared contract)."""
        return {"top_k": self.top_k, "seeds": self.seeds, "winner": self.winner,
                "single_run_winner": self.single_run_winner, "rank_changed": self.rank_changed,
                "sentence": self.sentence, "candidates": [c.to_dict() for c in self.candidates]}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean: ``mean ± t(1 - (1 - confidence) / 2, n - 1) · sd / √n`` (sd with n - 1).

    None with fewer than two values (one run says nothing about the spread).
    """
    from scipy import stats

    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return None
    half = float(stats.t.ppf(0.5 + confidence / 2, len(data) - 1)) * float(data.std(ddof=1)) / math.sqrt(len(data))
    return float(data.mean()) - half, float(data.mean()) + half


def median_epoch(epochs: Sequence[float]) -> int | None:
    """Median of best epochs as a whole epoch count; a median of ``x.5`` (even count) rounds half up.

    Up rather than to even: the final model trains on train+val, more data than the runs saw, so of two
    equally central epoch counts the longer one is the safer. None without epochs.
    """
    data = [float(e) for e in epochs if e is not None and not math.isnan(float(e))]
    return int(math.floor(float(np.median(data)) + 0.5)) if data else None


def _candidate(trial_id: str, search_score: float, runs: pd.DataFrame) -> Candidate:
    scored = runs[pd.to_numeric(runs["score"], errors="coerce").notna()]
    scores = scored["score"].astype(float).to_numpy()
    n = len(scores)
    return Candidate(trial_id=trial_id, search_score=float(search_score), mean=float(scores.mean()) if n else None,
                     sd=float(scores.std(ddof=1)) if n > 1 else None, ci95=t_interval(scores), n=n,
                     median_best_epoch=median_epoch(scored["best_epoch"].tolist()))


def choose_winner(search_scores: Mapping[str, float], runs: pd.DataFrame, *, direction: str, top_k: int,
                  seeds: int) -> Selection:
    """The configuration with the best mean re-evaluation score.

    The search's own score of a trial is NOT averaged in: it was the best of many trials on the same
    validation set, so it is biased upward; it is reported beside the mean, never mixed into it. Runs
    without a score (a NaN loss) are left out of a candidate's mean and counted out of its ``n``. Ties of
    the mean go to the trial ranked higher in the search.

    Args:
        search_scores: trial id -> search score, in the search's order (best first).
        runs: re-evaluation runs (``trial_id``, ``score``, ``best_epoch``); other trials' runs are ignored.
        direction: ``"max"`` or ``"min"`` (the objective's).
        top_k, seeds: the settings, recorded with the result.

    Raises:
        StudyError: no candidate has a run with a score yet.
    """
    order = list(search_scores)
    candidates = [_candidate(t, s, runs[runs["trial_id"].astype(str) == t]) for t, s in search_scores.items()]
    sign = -1.0 if direction == "max" else 1.0
    ranked = tuple(sorted(candidates, key=lambda c: (c.mean is None, sign * (c.mean or 0.0), order.index(c.trial_id))))
    if ranked[0].mean is None:
        raise StudyError("no re-evaluation run has a score yet (every run's objective was missing or NaN)")
    winner, single = ranked[0].trial_id, order[0]
    return Selection(top_k=int(top_k), seeds=int(seeds), candidates=ranked, winner=winner, single_run_winner=single,
                     rank_changed=winner != single, sentence=_sentence(ranked, single))


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _mean_text(c: Candidate) -> str:
    if c.mean is None:
        return "no run with a score"
    return f"{c.mean:.3f} ± {c.sd:.3f}" if c.sd is not None else f"{c.mean:.3f}"


def _overlap(a: Candidate, b: Candidate) -> bool:
    return a.ci95 is not None and b.ci95 is not None and a.ci95[0] <= b.ci95[1] and b.ci95[0] <= a.ci95[1]


def _sentence(ranked: Sequence[Candidate], single: str) -> str:
    """Plain words: did the search's best trial keep its rank, and who wins with what spread."""
    first = next(c for c in ranked if c.trial_id == single)
    winner, position = ranked[0], [c.trial_id for c in ranked].index(single) + 1
    head = f"trial {single} was best in the search ({first.search_score:.3f})"
    if len(ranked) == 1:
        return f"{head}; re-evaluated over {winner.n} run(s) it scores {_mean_text(winner)} (mean ± sd)"
    if position == 1:
        runner = ranked[1]
        text = (f"{head} and stays best after re-evaluation (mean {_mean_text(winner)}); runner-up trial "
                f"{runner.trial_id} ({_mean_text(runner)})")
    else:
        text = (f"{head} but ranks {_ordinal(position)} of {len(ranked)} after re-evaluation (mean "
                f"{_mean_text(first)}); trial {winner.trial_id} wins ({_mean_text(winner)})")
    if _overlap(ranked[0], ranked[1]):
        text += "; the 95 % intervals of the two best overlap, so their order is within seed noise"
    return text


def best_of_history(history: pd.DataFrame, *, objective: str, direction: str) -> tuple[float | None, int | None]:
    """``(score, best epoch)`` of one fit: the objective's best value and its (first) epoch, as the search scores."""
    if objective not in history.columns or history[objective].isna().all():
        return None, None
    column = history[objective]
    index = column.idxmax() if direction == "max" else column.idxmin()
    return float(column[index]), int(history.loc[index, "epoch"])


# --------------------------------------------------------------------------- as text and table
def candidates_frame(record: Mapping[str, Any]) -> pd.DataFrame:
    """The candidates of a ``selection.json`` record as a table, best mean first (empty before any result)."""
    result = record.get("result") or {}
    rows = []
    for rank, c in enumerate(result.get("candidates", []), start=1):
        ci = c.get("ci95")
        rows.append({"rank": rank, "trial": c["trial_id"], "search score": c["search_score"], "mean": c.get("mean"),
                     "sd": c.get("sd"), "95 % interval": "" if not ci else f"[{ci[0]:.4f}, {ci[1]:.4f}]",
                     "n": c.get("n"), "median best epoch": c.get("median_best_epoch")})
    return pd.DataFrame(rows, columns=["rank", "trial", "search score", "mean", "sd", "95 % interval", "n",
                                       "median best epoch"])


def summary_lines(record: Mapping[str, Any]) -> list[str]:
    """A re-evaluation in a few lines: what ran, the candidates' table, and the rank-change sentence."""
    if not record:
        return []
    result, settings = record.get("result"), record.get("settings") or {}
    candidates = record.get("candidates") or []
    lines = [f"selection: the {len(candidates)} best trial(s) re-evaluated with {settings.get('seeds')} new seed(s) "
             f"each (top_k {settings.get('top_k')}; {record.get('objective')}, mean ± sd and 95 % t-interval; "
             f"{record.get('runs_done')} of {record.get('runs_planned')} runs)"]
    if result:
        frame = candidates_frame(record)
        lines.append(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-"))
        lines.append(result["sentence"][0].upper() + result["sentence"][1:] + ".")
    if not record.get("complete"):
        lines.append("The re-evaluation is incomplete: `hpstudy confirm` continues it (finished runs are kept).")
    return lines
