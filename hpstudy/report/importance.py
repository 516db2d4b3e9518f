"""Hyperparameter importance: fANOVA on random forests fitted to a study's completed trials (pure).

What is computed. A scikit-learn ``RandomForestRegressor`` (64 trees, as Optuna's
``FanovaImportanceEvaluator``) learns the score from the hyperparameters of the completed trials; for
every tree, ``fanova.tree_main_effects`` gives the share of the tree's variance that each
hyperparameter's main effect explains; the shares are averaged over the trees and normalised to sum to
1. That is repeated with ``n_seeds`` forest seeds: the importance is the mean over the seeds and the
error bar their standard deviation. The share of the variance that main effects explain before the
normalisation (``main_effect_share``) says how much is left to interactions.

How the hyperparameters enter (``hp_axes``): ranges as numbers (log ranges on log10), choices and
booleans as codes 0 .. K-1, each value of a grid or choice owning an equal share of its axis, so the
average over a hyperparameter weighs its values as the random sampler does. For the forest, the codes of
a choice are put in the order of their mean score, so any grouping of its values is one split away.

Conditional hyperparameters. momentum (sgd only), weight_decay (adamw only), dense_units and dropout
(n_dense >= 1) have a value in every trial, because Keras Tuner samples the whole space, but it does
nothing in a trial where its condition fails. Such an *inactive* value, and a missing one, is replaced
by a value drawn uniformly from the hyperparameter's range (a new draw for every forest seed): to the
forest it is noise, as it was to the model. We do not code "inactive" as a value of its own: that column
would then also tell sgd from the other optimizers and take a share of the optimizer's importance (on 40
fake trials where only "optimizer is sgd" mattered, such a code gave momentum 37-52 % of the importance
over four data seeds; this coding gives it about 0.1 % over eight, and the test asks for under 2 %).
So a conditional hyperparameter's importance is its main effect over all trials, active or not (its
effect inside the active trials alone shows up as an interaction with its parent, which main effects do
not count); the table says in how many trials each one acted.

A reference. Every forest also gets a column of uniform random numbers (Boruta's "shadow feature"
idea): its importance, on the same scale as the hyperparameters' (which alone sum to 1), is what a
hyperparameter with no effect gets from the forest fitting noise. The error bars show the forest's
randomness, not the noise of the scores; the reference shows the latter.

Hyperband. A trial that a later trial continued (``hb_parent``) is the same configuration trained for
fewer epochs; it is left out, so that each configuration counts once, at its longest training.

Few trials. Below ``MIN_TRIALS`` completed trials, or when every score is the same, nothing is computed
and the reason is given. Below two trials per varied hyperparameter the importances are computed but
flagged as unreliable. A hyperparameter with a single value among the completed trials is left out
(nothing can be said about it) and named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor

from hpstudy.report.fanova import tree_main_effects
from hpstudy.report.hp_axes import HpAxis, hp_axes

__all__ = ["Importance", "hyperparameter_importance", "MIN_TRIALS"]

MIN_TRIALS = 3
_TRIALS_PER_HP = 2


@dataclass(eq=False)
class Importance:
    """fANOVA importance of a study's hyperparameters, or why there is none (``reason``)."""

    names: list[str]
    mean: np.ndarray
    sd: np.ndarray
    per_seed: np.ndarray
    main_effect_share: float | None
    n_trials: int
    seeds: list[int]
    active: dict[str, int] = field(default_factory=dict)
    conditional: dict[str, str] = field(default_factory=dict)
    not_varied: list[str] = field(default_factory=list)
    few_trials: bool = False
    reason: str | None = None
    n_trees: int = 64
    reference: tuple[float, float] | None = None
    continued: int = 0

    def ranking(self) -> list[str]:
        """Hyperparameter names, most important first (ties: declaration order)."""
        order = np.argsort(-self.mean, kind="stable")
        return [self.names[i] for i in order]

    def table(self) -> pd.DataFrame:
        """One row per hyperparameter, most important first: importance, sd, and where it acted."""
        rows = []
        for name in self.ranking():
            index = self.names.index(name)
            rows.append({"hyperparameter": name, "importance": float(self.mean[index]),
                         "sd over forest seeds": float(self.sd[index]),
                         "vs random column": "at or below" if name in self.below_reference() else "above",
                         "active in trials": f"{self.active.get(name, self.n_trials)}/{self.n_trials}",
                         "acts when": self.conditional.get(name, "always")})
        return pd.DataFrame(rows, columns=["hyperparameter", "importance", "sd over forest seeds", "vs random column",
                                           "active in trials", "acts when"])

    def below_reference(self) -> list[str]:
        """Hyperparameters whose importance is not above the random reference column's (no effect seen)."""
        if self.reference is None:
            return []
        return [n for n in self.ranking() if self.mean[self.names.index(n)] <= self.reference[0]]

    def warnings(self) -> list[str]:
        """Why there is no importance, or why it is unreliable (shown highlighted)."""
        lines = [] if self.reason is None else [self.reason]
        if self.few_trials:
            lines.append(f"Only {self.n_trials} completed trials for {len(self.names)} varied hyperparameters "
                         f"(fewer than {_TRIALS_PER_HP} per hyperparameter): the importances are computed but "
                         "unreliable; read them as a hint, not a ranking.")
        return lines

    def notes(self) -> list[str]:
        """Sentences a reader needs next to the numbers: which trials, inactive values, the reference."""
        lines = []
        if self.continued:
            lines.append(f"{self.continued} Hyperband trial(s) continued by a later trial are counted once, at "
                         "their longest training (the later trial).")
        inactive = [f"{n} ({self.active[n]}/{self.n_trials})" for n in self.names
                    if n in self.conditional and self.active.get(n, self.n_trials) < self.n_trials]
        if inactive:
            lines.append("Conditional hyperparameters inactive in some trials (active/all): " + ", ".join(inactive)
                         + ". In the trials where they did nothing, their value is replaced by a random one from "
                           "their range (noise to the forest, as it was to the model), so their importance is "
                           "their effect averaged over all trials.")
        if self.reference is not None:
            lines.append(self._reference_sentence())
        if self.not_varied:
            lines.append("Left out, having a single value among the completed trials: " + ", ".join(self.not_varied)
                         + ".")
        return lines

    def _reference_sentence(self) -> str:
        assert self.reference is not None
        below = self.below_reference()
        return (f"A column of random numbers, fitted alongside as a reference, gets {self.reference[0]:.3f} "
                f"± {self.reference[1]:.3f} on the same scale: "
                + (f"{', '.join(below)} did no better, so no effect of them can be seen in these trials. "
                   if below else "every hyperparameter did better. ")
                + "Doing better is not proof of an effect: with many hyperparameters, one of them beats a "
                  "single random column by chance.")


def _skip(reason: str, n_trials: int, seeds: list[int], not_varied: list[str] | None = None) -> Importance:
    empty = np.zeros(0)
    return Importance([], empty, empty, np.zeros((len(seeds), 0)), None, n_trials, seeds,
                      not_varied=not_varied or [], reason=reason)


def _completed(trials: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Completed trials with a score, each configuration once, and how many continued trials were dropped.

    A Hyperband trial that a later trial continued (its id in that trial's ``hb_parent``) is the same
    configuration trained for fewer epochs: only the longest training of a configuration counts.
    """
    scores = pd.to_numeric(trials["score"], errors="coerce")
    done = trials[(trials["status"] == "COMPLETED") & scores.notna()]
    if "hb_parent" not in done.columns:
        return done.reset_index(drop=True), 0
    parents = {_id_key(v) for v in done["hb_parent"].dropna()}
    continued = done["trial_id"].map(_id_key).isin(parents)
    return done[~continued].reset_index(drop=True), int(continued.sum())


def _id_key(value: Any) -> str:
    """A trial id as text; "0003", 3 and 3.0 (a CSV read without dtypes) are the same trial."""
    try:
        return str(int(float(value)))
    except (TypeError, ValueError):
        return str(value)


def _design(done: pd.DataFrame, axes: list[HpAxis], y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The feature matrix: axis coordinates, inactive or missing values drawn uniformly from the range."""
    columns = []
    for axis in axes:
        values = axis.encode(done[axis.column])
        inactive = axis.inactive(done)
        low, high = axis.bounds
        if axis.kind == "choice":
            noise = rng.integers(0, len(axis.categories), size=len(done))
            values = _by_mean_score(np.where(inactive, noise, values).astype(int), y, len(axis.categories))
        else:
            values = np.where(inactive, rng.uniform(low, high, size=len(done)), values)
        columns.append(values)
    return np.column_stack(columns)


def _by_mean_score(codes: np.ndarray, y: np.ndarray, count: int) -> np.ndarray:
    """Choice codes renumbered by the mean score of each value (values never tried last).

    A tree splits a code axis at thresholds, so only values adjacent in the coding can be grouped by one
    split; ordered by their mean score, the best grouping of K values is always one split away (Breiman
    et al. 1984, CART). Every value keeps a cell of width 1, so the main effect does not change.
    """
    means = np.array([y[codes == code].mean() if np.any(codes == code) else np.inf for code in range(count)])
    rank = np.empty(count, dtype=float)
    rank[np.argsort(means, kind="stable")] = np.arange(count)
    return rank[codes]


def _condition(done: pd.DataFrame, axis: HpAxis) -> str:
    """When a conditional hyperparameter acted, read off the trials: "optimizer = sgd", "n_dense in 1, 2"."""
    values = done.loc[~axis.inactive(done), f"hp_{axis.parent}"].dropna().unique().tolist()
    shown = sorted((_text(v) for v in values), key=lambda s: (len(s), s))
    if not shown:
        return f"{axis.parent} allows it (never among these trials)"
    return f"{axis.parent} = {shown[0]}" if len(shown) == 1 else f"{axis.parent} in {', '.join(shown)}"


def _text(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _varied(done: pd.DataFrame, axes: list[HpAxis]) -> tuple[list[HpAxis], list[str]]:
    keep, dropped = [], []
    for axis in axes:
        values = axis.encode(done[axis.column])[~axis.inactive(done)]
        if axis.varied and np.unique(values).size >= 2:
            keep.append(axis)
        else:
            dropped.append(f"{axis.name} (never active)" if values.size == 0 else axis.name)
    return keep, dropped


def _forest_fractions(x: np.ndarray, y: np.ndarray, bounds: np.ndarray, seed: int, n_trees: int) -> np.ndarray:
    """Main-effect fractions of every hyperparameter, averaged over the trees of one forest."""
    forest = RandomForestRegressor(n_estimators=n_trees, max_depth=64, min_samples_leaf=1, random_state=seed)
    forest.fit(x, y)
    per_tree = [tree_main_effects(tree.tree_, bounds) for tree in forest.estimators_]
    useful = [fractions for fractions, variance in per_tree if variance > 0]
    return np.mean(useful, axis=0) if useful else np.zeros(x.shape[1])


def hyperparameter_importance(trials: pd.DataFrame, *, space: Any = None, seed: int = 0, n_seeds: int = 5,
                              n_trees: int = 64) -> Importance:
    """fANOVA importance of each hyperparameter over the completed trials (see the module docstring).

    Args:
        trials: the trials table (``trial_id, status, score, ..., hp_<name>...``).
        space: the study's search space (``SearchSpace``, its ``to_dict()`` or the ``hyperparameters``
            mapping of the frozen ``study.yaml``); None reads each hyperparameter's kind from its values.
        seed: the first forest seed; seeds ``seed .. seed + n_seeds - 1`` are used.
        n_seeds: forests fitted (the error bars are the sd over them).
        n_trees: trees per forest.

    Returns:
        An ``Importance``; with too few trials or no variation, one whose ``reason`` says why.

    Raises:
        ValueError: ``n_seeds`` or ``n_trees`` below 1, or a table without trial_id, status and score.
    """
    if n_seeds < 1 or n_trees < 1:
        raise ValueError(f"n_seeds and n_trees must be >= 1, but got n_seeds={n_seeds}, n_trees={n_trees}")
    missing = [c for c in ("trial_id", "status", "score") if c not in trials.columns]
    if missing:
        raise ValueError(f"a trials table needs the columns trial_id, status and score, but {', '.join(missing)} "
                         f"is/are missing (columns: {', '.join(map(str, trials.columns))})")
    seeds = list(range(seed, seed + n_seeds))
    done, continued = _completed(trials)
    if len(done) < MIN_TRIALS:
        return _skip(f"Only {len(done)} completed trial(s): hyperparameter importance needs at least {MIN_TRIALS}.",
                     len(done), seeds)
    axes, not_varied = _varied(done, hp_axes(done, space))
    y = pd.to_numeric(done["score"]).to_numpy(dtype=float)
    if not axes or np.ptp(y) == 0:
        what = "no hyperparameter took two values" if not axes else "every completed trial has the same score"
        return _skip(f"No hyperparameter importance: {what}.", len(done), seeds, not_varied)
    per_seed, reference, shares = _fit_seeds(done, axes, y, seeds, n_trees)
    ddof = min(1, n_seeds - 1)
    return Importance(
        names=[a.name for a in axes], mean=per_seed.mean(axis=0), sd=per_seed.std(axis=0, ddof=ddof),
        per_seed=per_seed, main_effect_share=float(np.mean(shares)), n_trials=len(done), seeds=seeds,
        reference=(float(reference.mean()), float(reference.std(ddof=ddof))),
        active={a.name: int((~a.inactive(done)).sum()) for a in axes},
        conditional={a.name: _condition(done, a) for a in axes if a.parent and f"hp_{a.parent}" in done.columns},
        not_varied=not_varied, few_trials=len(done) < _TRIALS_PER_HP * len(axes), n_trees=n_trees,
        continued=continued)


def _fit_seeds(done: pd.DataFrame, axes: list[HpAxis], y: np.ndarray, seeds: list[int],
               n_trees: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per forest seed: the normalised importances, the reference column's on that scale, and the
    share of the variance the hyperparameters' main effects explain before normalising."""
    bounds = np.array([axis.bounds for axis in axes] + [(0.0, 1.0)])  # last: the random reference column
    per_seed, reference, shares = np.zeros((len(seeds), len(axes))), np.zeros(len(seeds)), np.zeros(len(seeds))
    for row, forest_seed in enumerate(seeds):
        rng = np.random.default_rng(forest_seed)
        x = np.column_stack([_design(done, axes, y, rng), rng.uniform(0.0, 1.0, size=len(done))])
        fractions = _forest_fractions(x, y, bounds, forest_seed, n_trees)
        shares[row] = total = float(fractions[:-1].sum())
        if total > 0:
            per_seed[row], reference[row] = fractions[:-1] / total, fractions[-1] / total
    return per_seed, reference, shares
