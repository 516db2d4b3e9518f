"""Oracle comparison with repeats at equal budget: pure statistics on the trials tables of every repeat.

Each oracle (study) ran R times with different seeds, each repeat stopped once its trials had spent the
budget (epochs trained or training seconds); the trial running when it ran out was allowed to finish.
What counts: every trial that **started** before its repeat had spent the budget, that last trial
included; trials a repeat started later (after a lowered budget) are left out. Failed trials spend
budget without counting for "best" (``report.compare.study_curve``).

Computed here, per oracle: the median best-so-far curve against epochs and against seconds with its
interquartile band, on one grid shared by all oracles; the distribution of the final best score; the
epochs and seconds each repeat needed to come within ``margin`` of the overall best ("never" counted);
and, per pair of oracles, a two-sided Mann-Whitney U test on the final best scores with effect sizes,
Holm-adjusted over the pairs (``report.significance``), and a bootstrap interval of the difference of
means. ``verdict`` is the one plain sentence the report leads with.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hpstudy.report.compare import study_curve
from hpstudy.report.significance import (
    RankTest,
    bootstrap_mean_difference,
    holm,
    mann_whitney,
    repeats_needed,
    smallest_p,
)

__all__ = ["Repeat", "RepeatRun", "Band", "ScoreSummary", "PairTest", "RepeatComparison", "compare_repeats",
           "repeat_run", "band", "verdict", "budget_statement"]

_AXES = {"epochs": "cum_epochs", "seconds": "cum_seconds"}  # budget kind / axis -> RepeatRun attribute


@dataclass
class Repeat:
    """One repeat's trials table, its seed and whether it stopped on its budget (None: not known)."""

    trials: pd.DataFrame
    seed: int | None = None
    budget_reached: bool | None = None


@dataclass(eq=False)
class RepeatRun:
    """One repeat, cut to the trials that started within the budget: its curves and headline numbers."""

    study: str
    index: int
    seed: int | None
    budget_reached: bool | None
    cum_epochs: np.ndarray
    cum_seconds: np.ndarray
    best_so_far: np.ndarray
    n_trials: int
    n_left_out: int  # trials started after the budget had run out
    final_best: float | None
    epochs_to_margin: float | None = None
    seconds_to_margin: float | None = None

    @property
    def spent_epochs(self) -> float:
        return float(self.cum_epochs[-1]) if len(self.cum_epochs) else 0.0

    @property
    def spent_seconds(self) -> float:
        return float(self.cum_seconds[-1]) if len(self.cum_seconds) else 0.0


@dataclass(eq=False)
class Band:
    """Median and quartiles of the repeats' best-so-far at each grid point (NaN until every repeat has a result)."""

    grid: np.ndarray
    median: np.ndarray
    q25: np.ndarray
    q75: np.ndarray
    repeats: int


@dataclass
class ScoreSummary:
    """The final best scores of one oracle's repeats, and its budget to within the margin."""

    study: str
    n: int
    mean: float | None
    sd: float | None
    median: float | None
    low: float | None
    high: float | None
    epochs_to_margin: list[float | None] = field(default_factory=list)
    seconds_to_margin: list[float | None] = field(default_factory=list)


@dataclass
class PairTest:
    """Oracle ``a`` against ``b``: the rank test, its Holm-adjusted p and the bootstrap interval of the means."""

    a: str
    b: str
    test: RankTest
    p_holm: float | None
    mean_difference: float | None
    interval: tuple[float, float] | None


@dataclass(eq=False)
class RepeatComparison:
    """Everything the repeated-comparison report shows (see the module docstring)."""

    direction: str
    margin: float
    alpha: float
    budget: tuple[str, float] | None
    objective: str
    overall_best: float | None
    runs: dict[str, list[RepeatRun]]
    bands: dict[str, dict[str, Band]]
    scores: dict[str, ScoreSummary]
    pairs: list[PairTest]
    verdict: str

    def score_table(self) -> pd.DataFrame:
        """One row per oracle: repeats, mean ± sd, median, min and max of the final best score."""
        return pd.DataFrame([{
            "study": s.study, "repeats": s.n, "mean": s.mean, "sd": s.sd, "median": s.median, "min": s.low,
            "max": s.high} for s in self.scores.values()])

    def margin_table(self) -> pd.DataFrame:
        """One row per oracle: epochs and seconds to within the margin (median, range) and how often never."""
        rows = []
        for s in self.scores.values():
            rows.append({"study": s.study, **_spread("epochs", s.epochs_to_margin),
                         **_spread("seconds", s.seconds_to_margin),
                         "never": f"{sum(v is None for v in s.epochs_to_margin)} of {s.n}"})
        return pd.DataFrame(rows)

    def pair_table(self) -> pd.DataFrame:
        """One row per pair: U, p, Holm-adjusted p, effect sizes, difference of means with its interval."""
        return pd.DataFrame([{
            "A": t.a, "B": t.b, "n A": t.test.n_a, "n B": t.test.n_b, "U (A)": t.test.u, "p": t.test.p,
            "p (Holm)": t.p_holm, "P(A better)": t.test.common_language, "rank-biserial": t.test.rank_biserial,
            "mean A - B": t.mean_difference,
            "95% bootstrap CI": None if t.interval is None else f"[{t.interval[0]:.4g}, {t.interval[1]:.4g}]",
            "method": t.test.method} for t in self.pairs])

    def run_table(self) -> pd.DataFrame:
        """One row per repeat: seed, trials counted and left out, budget spent, final best, budget reached."""
        return pd.DataFrame([{
            "study": r.study, "repeat": r.index, "seed": r.seed, "trials": r.n_trials, "left out": r.n_left_out,
            "epochs": r.spent_epochs, "seconds": round(r.spent_seconds, 1), "final best": r.final_best,
            "budget reached": {True: "yes", False: "no (ended first)", None: "?"}[r.budget_reached]}
            for runs in self.runs.values() for r in runs])


def _spread(what: str, values: Sequence[float | None]) -> dict[str, float | str | None]:
    present = [v for v in values if v is not None]
    if not present:
        return {f"{what} to margin (median)": None, f"{what} to margin (range)": None}
    return {f"{what} to margin (median)": float(np.median(present)),
            f"{what} to margin (range)": f"{min(present):.4g}–{max(present):.4g}"}


# --------------------------------------------------------------------------- one repeat
def repeat_run(study: str, index: int, repeat: Repeat | pd.DataFrame, *, direction: str = "max",
               budget: tuple[str, float] | None = None) -> RepeatRun:
    """The curves of one repeat, keeping the trials that started before the budget ran out.

    A trial started within the budget when the budget spent by the trials before it (in start order) was
    below ``budget``; the first one that crossed it is kept, anything after it left out.
    """
    repeat = repeat if isinstance(repeat, Repeat) else Repeat(repeat)
    curve = study_curve(study, repeat.trials, direction=direction)
    keep = len(curve.trial_ids)
    if budget is not None:
        kind, amount = budget
        spent = curve.cum_epochs if kind == "epochs" else curve.cum_seconds
        before = np.concatenate([[0.0], spent[:-1]]) if len(spent) else spent
        keep = int(np.sum(before < amount))
    best = curve.best_so_far[:keep]
    final = float(best[-1]) if keep and not np.isnan(best[-1]) else None
    return RepeatRun(study=study, index=index, seed=repeat.seed, budget_reached=repeat.budget_reached,
                     cum_epochs=curve.cum_epochs[:keep], cum_seconds=curve.cum_seconds[:keep], best_so_far=best,
                     n_trials=keep, n_left_out=len(curve.trial_ids) - keep, final_best=final)


def _within(value: float, target: float, margin: float, direction: str) -> bool:
    return not np.isnan(value) and (value >= target - margin if direction == "max" else value <= target + margin)


def _add_margin(run: RepeatRun, target: float, margin: float, direction: str) -> None:
    for position, value in enumerate(run.best_so_far):
        if _within(float(value), target, margin, direction):
            run.epochs_to_margin = float(run.cum_epochs[position])
            run.seconds_to_margin = float(run.cum_seconds[position])
            return


# --------------------------------------------------------------------------- bands
def _step_values(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A step function known from each ``x[i]`` on (value ``y[i]``), read at ``grid``; NaN before ``x[0]``."""
    position = np.searchsorted(x, grid, side="right") - 1
    values = np.full(len(grid), np.nan)
    known = position >= 0
    values[known] = y[position[known]]
    return values


def band(runs: Sequence[RepeatRun], grid: Sequence[float], *, axis: str = "epochs") -> Band:
    """Median and interquartile range of the best-so-far of ``runs`` at each point of ``grid``.

    A repeat's best-so-far is known from the end of its first completed trial on and stays at its final
    value after it stopped. Points where any repeat has no result yet are NaN. Repeats without any
    completed trial are left out (``Band.repeats`` counts those used).

    Raises:
        ValueError: an unknown axis.
    """
    if axis not in _AXES:
        raise ValueError(f"axis must be one of {', '.join(_AXES)}, but got {axis!r}")
    grid = np.asarray(grid, dtype=float)
    used = [r for r in runs if r.final_best is not None]
    if not used:
        empty = np.full(len(grid), np.nan)
        return Band(grid, empty, empty.copy(), empty.copy(), 0)
    rows = np.vstack([_step_values(getattr(r, _AXES[axis]), r.best_so_far, grid) for r in used])
    complete = ~np.isnan(rows).any(axis=0)
    median, q25, q75 = (np.full(len(grid), np.nan) for _ in range(3))
    if complete.any():
        q25[complete], median[complete], q75[complete] = np.quantile(rows[:, complete], [0.25, 0.5, 0.75], axis=0)
    return Band(grid, median, q25, q75, len(used))


def _grid(runs: Sequence[RepeatRun], axis: str, points: int) -> np.ndarray:
    end = max((float(getattr(r, _AXES[axis])[-1]) for r in runs if r.n_trials), default=0.0)
    return np.linspace(0.0, end, points)


# --------------------------------------------------------------------------- scores and tests
def _summary(study: str, runs: Sequence[RepeatRun]) -> ScoreSummary:
    scores = np.array([r.final_best for r in runs if r.final_best is not None], dtype=float)
    n = len(scores)
    return ScoreSummary(
        study=study, n=n, mean=float(scores.mean()) if n else None, sd=float(scores.std(ddof=1)) if n > 1 else None,
        median=float(np.median(scores)) if n else None, low=float(scores.min()) if n else None,
        high=float(scores.max()) if n else None, epochs_to_margin=[r.epochs_to_margin for r in runs],
        seconds_to_margin=[r.seconds_to_margin for r in runs])


def _finals(runs: Sequence[RepeatRun]) -> list[float]:
    return [r.final_best for r in runs if r.final_best is not None]


def _pairs(runs: Mapping[str, list[RepeatRun]], direction: str, seed: int) -> list[PairTest]:
    tests = []
    for a, b in itertools.combinations(runs, 2):
        x, y = _finals(runs[a]), _finals(runs[b])
        difference = float(np.mean(x) - np.mean(y)) if x and y else None
        tests.append(PairTest(a, b, mann_whitney(x, y, direction=direction), None, difference,
                              bootstrap_mean_difference(x, y, seed=seed)))
    for test, adjusted in zip(tests, holm([t.test.p for t in tests])):
        test.p_holm = adjusted
    return tests


# --------------------------------------------------------------------------- the verdict
def _scores_text(scores: Mapping[str, ScoreSummary]) -> str:
    parts = []
    for s in scores.values():
        if s.mean is None:
            parts.append(f"{s.study} no completed trial")
        else:
            spread = f" ± {s.sd:.4f}" if s.sd is not None else ""
            parts.append(f"{s.study} {s.mean:.4f}{spread}")
    return ", ".join(parts)


def _power_text(pairs: Sequence[PairTest], alpha: float) -> str:
    """Why "no difference" may only mean "too few repeats": the smallest p the test could have given."""
    sizes = [(t.test.n_a, t.test.n_b) for t in pairs if t.test.n_a and t.test.n_b]
    if not sizes:
        return ""
    smallest = min(smallest_p(a, b) for a, b in sizes)
    adjusted = min(1.0, smallest * len(pairs))  # Holm's first step multiplies the smallest p by the pairs
    if adjusted < alpha:
        return ""
    holm_text = f" ({adjusted:.3g} after Holm over {len(pairs)} pairs)" if len(pairs) > 1 else ""
    repeats = max(max(pair) for pair in sizes)
    return (f" With {repeats} repeats per oracle the smallest p-value this test can give is {smallest:.3g}"
            f"{holm_text}, so no difference could reach p < {alpha:g}: at least "
            f"{repeats_needed(len(pairs), alpha=alpha)} repeats per oracle are needed.")


def verdict(scores: Mapping[str, ScoreSummary], pairs: Sequence[PairTest], *, alpha: float = 0.05,
            objective: str = "score") -> str:
    """One plain sentence (two when the repeats were too few to show anything) on which oracle is better."""
    repeats = sorted({s.n for s in scores.values()})
    r_text = "/".join(str(n) for n in repeats)
    means = f"mean best {objective} within the budget: {_scores_text(scores)}"
    significant = [t for t in pairs if t.p_holm is not None and t.p_holm < alpha]
    if not pairs or all(t.test.p is None for t in pairs):
        return f"No test was possible: an oracle has no repeat with a completed trial ({means})."
    if not significant:
        return (f"No significant difference between {_join(list(scores))} with {r_text} repeats (two-sided "
                f"Mann-Whitney U, Holm-adjusted, alpha {alpha:g}; {means})." + _power_text(pairs, alpha))
    claims = []
    for t in significant:
        better, worse = (t.a, t.b) if (t.test.rank_biserial or 0) > 0 else (t.b, t.a)
        share = t.test.common_language if better == t.a else 1 - (t.test.common_language or 0)
        claims.append(f"{better} beat {worse} (P({better} better) = {share:.2f}, Holm-adjusted p = {t.p_holm:.3g})")
    rest = "" if len(significant) == len(pairs) else "; the other pairs show no significant difference"
    return f"With {r_text} repeats: {'; '.join(claims)}{rest} ({means})."


_WHAT_COUNTS = {"epochs": "epochs_run, the epochs each trial trained",
                "seconds": "seconds, the time each trial took from building its model to the end of its fit"}


def _spent_text(spent: Sequence[float], kind: str) -> str:
    if max(spent) == min(spent):
        return f"here every repeat spent {spent[0]:.4g} {kind}"
    return f"here the repeats spent {min(spent):.4g}–{max(spent):.4g} {kind} (median {float(np.median(spent)):.4g})"


def budget_statement(data: RepeatComparison) -> list[str]:
    """What the equal budget was, what counted, what each repeat spent, and which repeats ended first."""
    if data.budget is None:
        return ["No budget was given: every trial of every repeat counts."]
    kind, amount = data.budget
    runs = [r for rs in data.runs.values() for r in rs]
    spent = [r.spent_epochs if kind == "epochs" else r.spent_seconds for r in runs]
    lines = [f"Equal budget: each repeat stopped asking its oracle for trials once its trials had spent {amount:g} "
             f"{kind} (the sum of {_WHAT_COUNTS[kind]}); the trial running at that moment was allowed to finish. "
             f"What counts is every trial that started within the budget, that last one included, so a repeat "
             f"may spend more than the budget: {_spent_text(spent, kind)}. Failed trials spend budget but never "
             "count as the best."]
    left_out = sum(r.n_left_out for r in runs)
    if left_out:
        lines.append(f"{left_out} trial(s) started after their repeat had spent the budget (an earlier run with a "
                     "larger budget) and are left out.")
    early = [f"{r.study} repeat {r.index} (spent {s:.4g})" for r, s in zip(runs, spent) if r.budget_reached is False]
    if early:
        lines.append(f"Ended before the budget, because the oracle had no further trial to give: {', '.join(early)}; "
                     "these repeats compare on less budget.")
    return lines


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# --------------------------------------------------------------------------- entry point
def compare_repeats(repeats: Mapping[str, Sequence[Repeat | pd.DataFrame]], *, direction: str = "max",
                    margin: float = 0.01, budget: tuple[str, float] | None = None, alpha: float = 0.05,
                    grid_points: int = 101, objective: str = "score", seed: int = 0) -> RepeatComparison:
    """Compare oracles that each ran several repeats at an equal budget.

    Args:
        repeats: for each oracle (study name), the trials table of every repeat (or a ``Repeat``).
        direction: "max" or "min": which scores are better.
        margin: distance to the overall best (of all repeats of all oracles) that counts as "as good".
        budget: ``("epochs" | "seconds", amount)``: trials started after a repeat spent it are left out.
        alpha: significance level of the tests (after Holm's adjustment).
        grid_points: points of the common grid of each axis for the bands.
        objective: the objective's name, for the verdict.
        seed: seed of the bootstrap.

    Returns:
        A ``RepeatComparison``.

    Raises:
        ValueError: fewer than two oracles, an oracle without repeats, a bad direction, margin or budget kind.
    """
    if len(repeats) < 2 or any(not list(r) for r in repeats.values()):
        raise ValueError("compare_repeats needs at least two oracles with at least one repeat each")
    if margin < 0 or (budget is not None and budget[0] not in _AXES):
        raise ValueError(f"need margin >= 0 and a budget kind in {', '.join(_AXES)}, but got {margin}, {budget}")
    runs = {name: [repeat_run(name, i, r, direction=direction, budget=budget) for i, r in enumerate(items)]
            for name, items in repeats.items()}
    finals = [r.final_best for rs in runs.values() for r in rs if r.final_best is not None]
    overall = (max(finals) if direction == "max" else min(finals)) if finals else None
    if overall is not None:
        for run in (r for rs in runs.values() for r in rs):
            _add_margin(run, overall, margin, direction)
    every = [r for rs in runs.values() for r in rs]
    grids = {axis: _grid(every, axis, grid_points) for axis in _AXES}
    bands = {name: {axis: band(rs, grids[axis], axis=axis) for axis in _AXES} for name, rs in runs.items()}
    scores = {name: _summary(name, rs) for name, rs in runs.items()}
    pairs = _pairs(runs, direction, seed)
    return RepeatComparison(direction=direction, margin=margin, alpha=alpha, budget=budget, objective=objective,
                            overall_best=overall, runs=runs, bands=bands, scores=scores, pairs=pairs,
                            verdict=verdict(scores, pairs, alpha=alpha, objective=objective))
