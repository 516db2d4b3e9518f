"""``hpstudy confirm``: which selection to run with, the candidates, the missing runs, the record; and
what finalize trains.

The settings are this command's ``--set selection.*``, else those the existing runs were made with, else the
study's. Runs made with other settings are never mixed in: a change is refused with the difference (nothing
is written), and ``--overwrite`` deletes the old runs.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from hpstudy._io import format_duration, utc_now
from hpstudy.config import SelectionConfig, StudyConfig, diff_configs, stage_config
from hpstudy.errors import StudyError
from hpstudy.paths import StudyPaths
from hpstudy.records import (
    read_best_config,
    read_selection,
    read_state,
    study_lock,
    write_best_config,
    write_selection,
)
from hpstudy.selection.runs import (
    RUN_COLUMNS,
    PlannedRun,
    make_trainer,
    plan_runs,
    read_runs,
    write_predictions,
    write_runs,
)
from hpstudy.selection.winner import Candidate, Selection, choose_winner, summary_lines
from hpstudy.trials import best_trial, load_trials, ranked_trials, trial_hyperparameters

__all__ = ["FinalChoice", "confirm_study", "choose_for_finalize", "record_in_best_config", "status_lines"]

log = logging.getLogger("hpstudy")


def confirm_study(study: StudyConfig | str | Path, *, data: str | Path | None = None,
                  overrides: Sequence[str] | Mapping[str, Any] = (), overwrite: bool = False) -> Selection | None:
    """Re-evaluate the ``selection.top_k`` best trials with ``selection.seeds`` new seeds each; pick the winner.

    Runs with the configuration the search froze (``config.stage_config``); ``selection`` may be given here
    (``overrides=["selection.top_k=3"]``). Running it again continues an interrupted re-evaluation and keeps
    every finished run; a finished one is summarized again.

    Args:
        study: the study YAML (or ``StudyConfig``).
        data: data folder or zip; default: the one the search used (its train/val images must be the same).
        overrides: ``KEY=VALUE`` settings of the later stages, e.g. ``selection.seeds=3``.
        overwrite: delete earlier re-evaluation runs (needed to change ``selection`` once runs exist).

    Returns:
        The ``Selection`` (None with the default ``top_k: 1, seeds: 1``: nothing is re-evaluated).

    Raises:
        ConfigError: a bad YAML file or override (e.g. ``selection.top_k=0``).
        StudyError: no search or no completed trial yet, ``selection`` changed against existing runs, a broken
            ``selection.csv``, other data than the search's, or another process using the study.
    """
    from hpstudy.runtime import quiet_tensorflow

    quiet_tensorflow()
    config = stage_config(study, stage="confirm", data=data, overrides=overrides)
    paths = StudyPaths(config.study_dir)
    with study_lock(paths, command="confirm"):
        settings = _settings(config, paths, overrides=overrides, overwrite=overwrite)
        if overwrite:
            _delete_runs(paths)
        if settings.is_default:
            log.info(f"[{config.name}] selection is top_k 1, seeds 1: nothing to re-evaluate, the winner is the "
                     "search's best trial (re-evaluate with e.g. --set selection.top_k=3 --set selection.seeds=3)")
            return None
        return _reevaluate(config, paths, settings)


def _sets_selection(overrides: Sequence[str] | Mapping[str, Any]) -> bool:
    """True when this command's own overrides set ``selection`` (rather than taking the study's or the runs')."""
    keys = overrides.keys() if isinstance(overrides, Mapping) else [overrides] if isinstance(overrides, str) \
        else overrides
    return any(str(k).partition("=")[0].strip().split(".")[0] == "selection" for k in keys)


def _settings(config: StudyConfig, paths: StudyPaths, *, overrides: Sequence[str] | Mapping[str, Any],
              overwrite: bool) -> SelectionConfig:
    """The selection to run with: this command's, else the one existing runs were made with, else the study's.

    Raises:
        StudyError: this command sets a selection other than the existing runs' (nothing is written), or the
            runs' settings cannot be read.
    """
    given, runs = config.selection, (0 if overwrite else len(read_runs(paths)))
    if not runs:
        return given
    record = read_selection(paths)
    try:
        recorded = SelectionConfig(**record["settings"])  # type: ignore[index]
    except (TypeError, KeyError):
        raise StudyError(f"{paths.selection_csv} holds {runs} re-evaluation run(s) but {paths.selection_json} (the "
                         "settings they were made with) is missing or unreadable: pass --overwrite to `hpstudy "
                         "confirm` to delete the runs and re-evaluate") from None
    if recorded == given:
        return given
    keep = " ".join(f"--set selection.{k}={v}" for k, v in recorded.to_dict().items())
    if not _sets_selection(overrides):
        log.info(f"note: using the selection the {runs} existing re-evaluation run(s) were made with (top_k "
                 f"{recorded.top_k}, seeds {recorded.seeds}), not the study's (top_k {given.top_k}, seeds "
                 f"{given.seeds}); `hpstudy confirm --overwrite` deletes them and re-evaluates with the study's")
        return recorded
    difference = "; ".join(diff_configs({"selection": recorded.to_dict()}, {"selection": given.to_dict()}))
    target = config.source or "STUDY.yaml"
    raise StudyError(f"{paths.selection_csv} holds {runs} re-evaluation run(s) made with another selection (runs -> "
                     f"given: {difference}); keep theirs ({keep}), or delete them and re-evaluate with `hpstudy "
                     f"confirm {target} --set ... --overwrite`")


def _delete_runs(paths: StudyPaths) -> None:
    if paths.selection_csv.exists() or paths.selection_json.exists() or paths.selection_dir.exists():
        log.info("--overwrite: deleting the earlier re-evaluation runs (%s, %s, %s/)", paths.selection_csv.name,
                 paths.selection_json.name, paths.selection_dir.name)
    paths.selection_csv.unlink(missing_ok=True)
    paths.selection_json.unlink(missing_ok=True)
    shutil.rmtree(paths.selection_dir, ignore_errors=True)


def _candidates(config: StudyConfig, paths: StudyPaths,
                top_k: int) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """The ``top_k`` best completed configurations: (trial id -> search score, best first; its hyperparameters).

    A trial with the same hyperparameters as a better one (a Hyperband continuation of its parent) is the
    same configuration: it is not re-evaluated twice. Fewer are returned when fewer exist (and it is said).
    A broken ``trial.json`` stops here, before anything trains.
    """
    ranked = ranked_trials(load_trials(paths.root), direction=config.objective.direction)
    if ranked.empty:
        raise StudyError(f"study '{config.name}' has no completed trial with a score: nothing to re-evaluate; run "
                         "`hpstudy search` first")
    scores: dict[str, float] = {}
    values: dict[str, dict[str, Any]] = {}
    for trial_id, score in zip(ranked["trial_id"].astype(str), ranked["score"]):
        if len(scores) == top_k:
            break
        mine = trial_hyperparameters(paths, trial_id)
        twin = next((t for t, v in values.items() if v == mine), None)
        if twin is not None:
            log.info(f"note: trial {trial_id} has the hyperparameters of trial {twin} (a Hyperband continuation): "
                     "the configuration is re-evaluated once")
            continue
        scores[trial_id], values[trial_id] = float(score), mine
    if len(scores) < top_k:
        log.info(f"note: selection.top_k is {top_k} but only {len(scores)} completed trial(s) with distinct "
                 f"hyperparameters exist: re-evaluating those {len(scores)}")
    if read_state(paths, strict=False).get("status") != "finished":
        log.info("note: the search has not finished: the candidates are its best trials so far")
    return scores, values


def _reevaluate(config: StudyConfig, paths: StudyPaths, settings: SelectionConfig) -> Selection:
    """Run the missing runs of the plan (keeping finished ones), then record and report the winner."""
    search, values = _candidates(config, paths, settings.top_k)
    plan, runs = plan_runs(list(search), settings.seeds, config.seed), read_runs(paths)
    _note_new_candidates(paths, search)
    done = {(str(t), int(i)) for t, i in zip(runs["trial_id"], runs["seed_index"])}
    todo = [run for run in plan if (run.trial_id, run.seed_index) not in done]
    _record(config, paths, settings, search, runs, len(plan))
    if todo:
        log.info(f"[{config.name}] re-evaluating the {len(search)} best trial(s) with {settings.seeds} new seed(s) "
                 f"each: {len(todo)} of {len(plan)} run(s) to go, up to {config.oracle.trial_epochs} epochs each "
                 "with the search's early stopping")
        runs = _run_all(config, paths, settings, search, values, todo, runs, len(plan))
    else:
        log.info(f"[{config.name}] all {len(plan)} re-evaluation runs are done ({paths.selection_csv})")
    selection = _record(config, paths, settings, search, runs, len(plan))
    log.info("\n".join(summary_lines(read_selection(paths) or {})))
    if selection is None:
        raise StudyError(f"no re-evaluation run of study '{config.name}' has a score ({config.objective.name} was "
                         f"missing or NaN in every run, e.g. a diverging loss); see {paths.selection_csv}")
    return selection


def _note_new_candidates(paths: StudyPaths, search: Mapping[str, float]) -> None:
    before = (read_selection(paths) or {}).get("candidates")
    if before and list(before) != list(search):
        log.info(f"note: the best trials changed since the last confirm ({', '.join(before)} -> {', '.join(search)}), "
                 "e.g. because the search went on: runs of trials no longer among them stay in selection.csv, unused")


def _run_all(config: StudyConfig, paths: StudyPaths, settings: SelectionConfig, search: Mapping[str, float],
             values: Mapping[str, Mapping[str, Any]], todo: Sequence[PlannedRun], runs: pd.DataFrame,
             planned: int) -> pd.DataFrame:
    train = make_trainer(config)
    for run in todo:
        result = train(values[run.trial_id], run.seed)
        write_predictions(paths, run, result)  # before its row: a run in selection.csv has its predictions
        row = {"trial_id": run.trial_id, "seed_index": run.seed_index, "seed": run.seed, "score": result.score,
               "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "seconds": round(result.seconds, 3)}
        runs = pd.DataFrame([*runs.to_dict("records"), row], columns=list(RUN_COLUMNS))
        write_runs(paths, runs)
        _record(config, paths, settings, search, runs, planned)
        score = "no score" if result.score is None else f"{config.objective.name}={result.score:.4f} at epoch " \
            f"{result.best_epoch}"
        log.info(f"[{config.name}] re-evaluation run {_count(runs, search)}/{planned}: trial {run.trial_id} seed "
                 f"{run.seed_index + 1}/{settings.seeds} ({run.seed}) -> {score} ({result.epochs_run} epochs, "
                 f"{format_duration(result.seconds)})")
    return runs


def _count(runs: pd.DataFrame, search: Mapping[str, float]) -> int:
    return int(runs["trial_id"].astype(str).isin(list(search)).sum())


def _record(config: StudyConfig, paths: StudyPaths, settings: SelectionConfig, search: Mapping[str, float],
            runs: pd.DataFrame, planned: int) -> Selection | None:
    """Write ``selection.json`` (settings, candidates, progress, result so far); returns the result, if any."""
    try:
        selection = choose_winner(search, runs, direction=config.objective.direction, top_k=settings.top_k,
                                  seeds=settings.seeds)
    except StudyError:
        selection = None  # no run with a score yet
    done = _count(runs, search)
    write_selection(paths, {"settings": settings.to_dict(), "objective": config.objective.name,
                            "direction": config.objective.direction, "study_seed": config.seed,
                            "candidates": list(search), "runs_planned": planned, "runs_done": done,
                            "complete": done >= planned, "updated": utc_now(),
                            "result": None if selection is None else selection.to_dict()})
    return selection


# --------------------------------------------------------------------------- finalize
@dataclass(frozen=True)
class FinalChoice:
    """What finalize trains: the winner, its search score, the epoch count it builds on, and the record."""

    trial_id: str
    score: float
    best_epoch: int
    record: dict[str, Any]
    epochs_from: str
    score_text: str

    @property
    def best(self) -> dict[str, Any]:
        """A trials-table-like row (``trial_id``, ``score``, ``best_epoch``)."""
        return {"trial_id": self.trial_id, "score": self.score, "best_epoch": self.best_epoch}


def choose_for_finalize(config: StudyConfig, paths: StudyPaths, *,
                        overrides: Sequence[str] | Mapping[str, Any] = ()) -> FinalChoice:
    """The trial finalize trains, re-evaluating first when ``selection`` asks for it and it is not complete.

    With the default selection (and no earlier re-evaluation) it is the search's best trial at its best epoch;
    otherwise the re-evaluation winner at the median best epoch of its runs. Call it holding the study lock.

    Raises:
        StudyError: as ``confirm_study``.
    """
    settings = _settings(config, paths, overrides=overrides, overwrite=False)
    if settings.is_default:
        best = best_trial(load_trials(paths.root), direction=config.objective.direction)
        return _single_run_choice(str(best["trial_id"]), float(best["score"]), int(best["best_epoch"]),
                                  config.objective.name)
    record = read_selection(paths) or {}
    if not record.get("complete") or record.get("settings") != settings.to_dict():
        log.info(f"[{config.name}] finalize: re-evaluating the best trials first (selection top_k {settings.top_k}, "
                 f"seeds {settings.seeds}; {record.get('runs_done', 0)} run(s) done before)")
    selection = _reevaluate(config, paths, settings)
    winner = selection.candidate(selection.winner)
    assert winner.median_best_epoch is not None  # a candidate with a mean has best epochs
    spread = f" ± {winner.sd:.4f}" if winner.sd is not None else ""
    return FinalChoice(winner.trial_id, winner.search_score, winner.median_best_epoch, selection.to_dict(),
                       f"the median best epoch of its {winner.n} re-evaluation runs",
                       f"{config.objective.name} mean {winner.mean:.4f}{spread} over {winner.n} re-evaluation runs, "
                       f"{winner.search_score:.4f} in the search")


def _single_run_choice(trial_id: str, score: float, best_epoch: int, objective: str) -> FinalChoice:
    candidate = Candidate(trial_id, score, None, None, None, 0, None)
    sentence = (f"trial {trial_id} was best in the search ({score:.3f}) and is chosen on that single run: not "
                "re-evaluated (selection top_k 1, seeds 1), so its seed noise is unknown and its score, the best of "
                "all trials on the same validation set, is biased upward")
    record = Selection(1, 1, (candidate,), trial_id, trial_id, False, sentence).to_dict()
    return FinalChoice(trial_id, score, best_epoch, record, "the best epoch of the search", f"{objective}={score:.4f}")


def record_in_best_config(paths: StudyPaths, record: Mapping[str, Any]) -> None:
    """Put the ``selection`` record into ``final/best_config.json`` (kept as it is when already there)."""
    current = read_best_config(paths)
    if current is None or current.extra.get("selection") == record:
        return
    write_best_config(paths, replace(current, extra={**current.extra, "selection": dict(record)}))


def status_lines(paths: StudyPaths) -> list[str]:
    """``summary_lines`` of a study's ``selection.json`` (nothing when confirm has not run)."""
    return summary_lines(read_selection(paths) or {})
