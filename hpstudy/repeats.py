"""Oracle comparison with repeats at an equal budget: the front end of ``hpstudy compare``.

One search per oracle says little: a rerun with another seed may reverse the ranking. ``compare_studies``
runs each study R times with different seeds, each repeat a normal resumable study in its own run directory
``<name>/repeat-<r>/`` (own study.yaml, tuner/, trials.csv, lock), each stopped once its trials have spent
the same budget (``config.SearchBudget``, checked by the tuner before it asks the oracle for a trial, like
``trial_limit``: the trial running when the budget runs out finishes, none is left half-started). Then it
writes the comparison report (``report.repeats`` computes, ``report.repeat_report`` draws).

* Seeds: repeat r of study n with seed s runs with ``repeat_seed(s, r, study=n)``, the first word of NumPy's
  ``SeedSequence(s, spawn_key=(r, crc32(n)))``: independent streams for every repeat and every study. Shared
  seeds would make the oracles draw the same first configurations (random search, Hyperband's first bracket
  and Bayesian optimization's initial points all start from the seed), so their results would agree by
  construction early on, while the test below treats them as independent samples.
* The oracle's own limit must not end a repeat first, so it is raised for the repeats (random and
  bayesian ``max_trials``, hyperband ``iterations``) to at least one trial per epoch of an epoch budget
  (every trial trains at least one epoch), or ten per second of a seconds budget; the report says so.
* Repeats run in rounds (repeat 0 of every study, then repeat 1, ...), so a slower or busier machine
  during the run affects every oracle alike and an interrupted comparison stays balanced.
* Resume: the same command keeps finished repeats (a repeat that spent its budget is finished) and
  continues the others; a repeat whose settings changed is refused with the difference, before anything
  runs. A larger budget continues every repeat; a smaller one leaves out the trials started after it.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._log import quieted
from hpstudy.config import SearchBudget, StudyConfig, diff_configs, resolve_config
from hpstudy.data.discover import resolve_source
from hpstudy.errors import ConfigError, StudyError
from hpstudy.paths import StudyPaths
from hpstudy.records import read_frozen, read_state
from hpstudy.report.repeat_report import RepeatReport, write_repeat_report
from hpstudy.report.repeats import Repeat, RepeatComparison, compare_repeats
from hpstudy.search.session import RESUMABLE_CHANGES
from hpstudy.study import run_study
from hpstudy.trials import load_trials

__all__ = ["ComparisonOutcome", "compare_studies", "repeat_seed", "repeat_config", "make_budget"]

log = logging.getLogger("hpstudy")

_TRIALS_PER_SECOND = 10  # the raised oracle limit for a seconds budget: no trial takes less than 0.1 s


@dataclass
class ComparisonOutcome:
    """What ``compare_studies`` did: the repeats' run directories, the trials run now, the statistics and report."""

    run_dirs: dict[str, list[Path]]
    trials_run: dict[str, list[int]]
    data: RepeatComparison
    report: RepeatReport

    @property
    def verdict(self) -> str:
        return self.data.verdict


def repeat_seed(seed: int, index: int, *, study: str) -> int:
    """Seed of repeat ``index`` of the study named ``study`` whose seed is ``seed`` (see the module docstring)."""
    key = (int(index), zlib.crc32(study.encode("utf-8")))
    state = np.random.SeedSequence(int(seed), spawn_key=key).generate_state(1)[0]
    return int(state) % (2**31 - 1)


def make_budget(*, epochs: float | None = None, seconds: float | None = None) -> SearchBudget:
    """The equal budget from exactly one of ``epochs`` and ``seconds``.

    Raises:
        ConfigError: both or neither given, or not a finite number > 0.
    """
    if (epochs is None) == (seconds is None):
        raise ConfigError("compare: give exactly one budget, --budget-epochs E or --budget-seconds S, "
                          f"but got {'both' if epochs is not None else 'neither'}")
    kind, amount = ("epochs", epochs) if epochs is not None else ("seconds", seconds)
    try:
        return SearchBudget(kind, amount)  # type: ignore[arg-type]
    except ConfigError:
        raise ConfigError(f"compare: --budget-{kind} must be a finite number > 0, but got {amount!r}") from None


def _oracle_limit(budget: SearchBudget) -> int:
    per_unit = 1 if budget.kind == "epochs" else _TRIALS_PER_SECOND
    return math.ceil(budget.amount * per_unit)


def repeat_config(config: StudyConfig, index: int, budget: SearchBudget) -> StudyConfig:
    """The configuration of repeat ``index``: its seed, run directory, budget and raised oracle limit."""
    oracle, limit = config.oracle, _oracle_limit(budget)
    if oracle.type == "hyperband":
        oracle = replace(oracle, iterations=max(oracle.iterations, limit))
    else:
        oracle = replace(oracle, max_trials=max(oracle.max_trials or 0, limit))
    return replace(config, seed=repeat_seed(config.seed, index, study=config.name), budget=budget, oracle=oracle,
                   run_dir=StudyPaths(config.study_dir).repeat(index))


def _raised_note(config: StudyConfig, budget: SearchBudget) -> str | None:
    raised = repeat_config(config, 0, budget).oracle
    key = "iterations" if config.oracle.type == "hyperband" else "max_trials"
    before, after = getattr(config.oracle, key), getattr(raised, key)
    if before == after:
        return None
    return f"{config.name} ({config.oracle.type}): oracle.{key} {before} -> {after}"


# --------------------------------------------------------------------------- checks before anything runs
def _check_arguments(count: int, repeats: int, margin: float) -> None:
    if count < 2:
        raise ConfigError(f"compare: give at least 2 studies to compare, but got {count}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"compare: --repeats must be a whole number >= 1, but got {repeats!r}")
    if not margin >= 0:
        raise ConfigError(f"compare: --margin must be >= 0, but got {margin!r}")


def _fingerprints(configs: Sequence[StudyConfig]) -> dict[str, str]:
    """The train+val fingerprint of each study's data (each folder read once; the test split stays closed)."""
    by_source: dict[tuple[str, str | None], str] = {}
    result = {}
    for config in configs:
        key = (str(config.data), config.positive_class)
        if key not in by_source:
            source = resolve_source(config.data, positive_class=config.positive_class)
            by_source[key] = source.fingerprint(splits=("train", "val"))
        result[config.name] = by_source[key]
    return result


def _same(configs: Sequence[StudyConfig], what: str, values: Mapping[str, Any]) -> None:
    if len({str(v) for v in values.values()}) > 1:
        shown = ", ".join(f"{name}: {value}" for name, value in values.items())
        raise StudyError(f"compare: the studies differ in their {what} ({shown}); an oracle comparison needs one "
                         f"{what} for all")


def _check_compatible(configs: Sequence[StudyConfig]) -> dict[str, str]:
    """Refuse a name given twice, or studies of other families, objectives or train/val data."""
    names = [c.name for c in configs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"compare: study name {', '.join(twice)} given twice; give each study once")
    _same(configs, "model family", {c.name: c.family for c in configs})
    _same(configs, "objective", {c.name: f"{c.objective.name} ({c.objective.direction})" for c in configs})
    fingerprints = _fingerprints(configs)
    _same(configs, "training/validation data (fingerprint)", {n: f[:12] for n, f in fingerprints.items()})
    return fingerprints


def _refuse_changed(config: StudyConfig, fingerprint: str) -> None:
    """A repeat run before with other settings (or data) is refused with the difference, as a search would."""
    paths = StudyPaths(config.study_dir)
    frozen = read_frozen(paths)
    if not frozen:
        return
    changes = [line for line in diff_configs(frozen.get("config", {}), config.to_dict())
               if not line.startswith(RESUMABLE_CHANGES)]
    if frozen.get("data_fingerprint") not in (None, fingerprint):
        changes.append("data fingerprint (the training/validation images changed)")
    if changes:
        raise StudyError(f"compare: {paths.root} ran with other settings (then -> now: {'; '.join(changes)}); "
                         "give the settings it ran with, compare under new study names, or delete that folder")


# --------------------------------------------------------------------------- running the repeats
def _finished(config: StudyConfig) -> bool:
    """A repeat already finished with this budget (it spent it, or its oracle ended first)."""
    paths = StudyPaths(config.study_dir)
    state = read_state(paths, strict=False)
    frozen = (read_frozen(paths).get("config") or {}) if state else {}
    return state.get("status") == "finished" and frozen.get("budget") == config.budget.to_dict() \
        and frozen.get("oracle") == config.oracle.to_dict()


def _run_repeats(plans: Mapping[str, list[StudyConfig]], fit_verbose: int) -> dict[str, list[int]]:
    """Run (or resume) every repeat, in rounds; returns the trials each ran now."""
    ran: dict[str, list[int]] = {name: [] for name in plans}
    rounds = max(len(p) for p in plans.values())
    for index in range(rounds):
        for name, plan in plans.items():
            config = plan[index]
            head = f"[compare] {name} ({config.oracle.type}) repeat {index + 1}/{len(plan)}, seed {config.seed}"
            if _finished(config):
                log.info("%s: finished before, kept (%s)", head, config.study_dir)
                ran[name].append(0)
                continue
            log.info("%s: budget %s, in %s", head, config.budget.describe() if config.budget else "-",
                     config.study_dir)
            ran[name].append(run_study(config, fit_verbose=fit_verbose).trials_run)
    return ran


def _repeat(config: StudyConfig) -> Repeat:
    paths = StudyPaths(config.study_dir)
    state = read_state(paths, strict=False)
    return Repeat(load_trials(paths.root), seed=config.seed, budget_reached=state.get("budget_reached"))


def _studies_table(configs: Sequence[StudyConfig], plans: Mapping[str, list[StudyConfig]]) -> pd.DataFrame:
    return pd.DataFrame([{
        "study": c.name, "oracle": c.oracle.type, "family": c.family, "objective": c.objective.name,
        "repeats": len(plans[c.name]), "seeds": ", ".join(str(p.seed) for p in plans[c.name]),
        "run directories": str(StudyPaths(c.study_dir).root / "repeat-*")} for c in configs])


def compare_studies(studies: Sequence[StudyConfig | str | Path], *, repeats: int, budget_epochs: float | None = None,
                    budget_seconds: float | None = None, out_dir: str | Path | None = None,
                    data: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = (),
                    margin: float = 0.01, alpha: float = 0.05, verbose: bool = True,
                    fit_verbose: int = 0) -> ComparisonOutcome:
    """Run each study ``repeats`` times at an equal budget and write the comparison report.

    Args:
        studies: two or more study YAML paths (or ``StudyConfig`` objects) of one family, objective and data.
        repeats: repeats per study (R >= 1; see the report for the R a significant result needs).
        budget_epochs, budget_seconds: the equal budget of every repeat; give exactly one.
        out_dir: report folder (default: ``compare-<names>`` beside the first study's run directory).
        data: data folder or zip for every study (overrides the YAMLs' data).
        overrides: ``KEY=VALUE`` settings applied to every study.
        margin: distance to the overall best that counts as "as good".
        alpha: significance level of the pairwise tests (Holm-adjusted).
        verbose: log a line per repeat and per trial (False: only warnings).
        fit_verbose: Keras ``fit`` verbosity inside trials.

    Returns:
        A ``ComparisonOutcome`` (``.verdict``, ``.report.html``).

    Raises:
        ConfigError: bad arguments (repeats, budget, fewer than 2 studies, a name twice) or a bad YAML.
        StudyError: studies of other families, objectives or data; a repeat run before with other settings.
    """
    _check_arguments(len(studies), repeats, margin)
    budget = make_budget(epochs=budget_epochs, seconds=budget_seconds)
    configs = [resolve_config(s, data=data, overrides=overrides if not isinstance(s, StudyConfig) else ())
               for s in studies]
    fingerprints = _check_compatible(configs)
    plans = {c.name: [repeat_config(c, r, budget) for r in range(repeats)] for c in configs}
    for name, plan in plans.items():
        for config in plan:
            _refuse_changed(config, fingerprints[name])
    with quieted(not verbose):
        ran = _run_repeats(plans, fit_verbose)
        result, report = _report(configs, plans, budget, out_dir, margin=margin, alpha=alpha)
        log.info("[compare] %s", result.verdict)
        log.info("[compare] report: %s", report.html)
    return ComparisonOutcome({n: [c.study_dir for c in p] for n, p in plans.items()}, ran, result, report)


def _report(configs: Sequence[StudyConfig], plans: Mapping[str, list[StudyConfig]], budget: SearchBudget,
            out_dir: str | Path | None, *, margin: float, alpha: float) -> tuple[RepeatComparison, RepeatReport]:
    """The statistics of every repeat, and the report written from them."""
    first = configs[0]
    result = compare_repeats({n: [_repeat(c) for c in plan] for n, plan in plans.items()},
                             direction=first.objective.direction, margin=margin, alpha=alpha,
                             budget=(budget.kind, budget.amount), objective=first.objective.name)
    raised = [n for n in (_raised_note(c, budget) for c in configs) if n]
    notes = [f"So that the budget, not the oracle's own limit, ends each repeat, the limits were raised for the "
             f"repeats: {'; '.join(raised)}."] if raised else []
    out = Path(out_dir) if out_dir is not None else first.study_dir.parent / "-".join(["compare", *plans])
    return result, write_repeat_report(result, out_dir=out, studies=_studies_table(configs, plans), notes=notes)
