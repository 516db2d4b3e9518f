"""Per-study report sections for the data (Task 1) and the hyperparameter search (Tasks 2 and 3).

Every builder returns a non-empty ``Section``: when an artefact is missing, the section says so and
names the command that produces it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from hpstudy._io import format_duration
from hpstudy.boundary import settled_sentence
from hpstudy.report.assets import Assets, caption_from_name, read_csv
from hpstudy.report.compare import compare_oracles
from hpstudy.report.document import Block, Figure, Note, Para, Section, Table
from hpstudy.report.figures import plot_best_so_far, plot_hyperparameters, plot_learning_curves
from hpstudy.report.runs import StudyRun
from hpstudy.trials import useful_fraction

__all__ = ["data_section", "search_section", "key_value_table", "chain_sentence"]

_TOP = 10
_MAX_EXPLORE_ROWS = 30


def key_value_table(mapping: dict[str, Any], *, key: str = "setting", value: str = "value") -> pd.DataFrame:
    """A two-column table; nested dicts shown as ``k=v`` lists, long values shortened."""
    rows = [{key: name, value: _flat(item)} for name, item in mapping.items()]
    return pd.DataFrame(rows, columns=[key, value])


def _flat(item: Any, limit: int = 240) -> str:
    if isinstance(item, dict):
        text = ", ".join(f"{k}={_flat(v, limit)}" for k, v in item.items())
    elif isinstance(item, (list, tuple)):
        text = "[" + ", ".join(_flat(v, limit) for v in item) + "]"
    else:
        text = "" if item is None else str(item)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- Task 1

def data_section(run: StudyRun, anchor: str, assets: Assets, explore_dir: Path | None) -> Section:
    """Task 1: exploration figures and tables, and the leak check of the training splits."""
    section = Section("Task 1 — Data exploration", anchor)
    folder = explore_dir if explore_dir is not None else run.paths.root / "explore"
    pictures = _explore_order(folder.glob("*.png")) if folder.is_dir() else []
    tables = _explore_order(folder.glob("*.csv")) if folder.is_dir() else []
    if pictures or tables:
        section.add(Para(f"Exploration outputs from `{folder}`."))
        for index, picture in enumerate(pictures):
            section.add(Figure(assets.copy(picture, f"explore_{index:02d}_{picture.name}"), _explore_caption(picture)))
        for csv in tables:
            section.add(*_explore_table(csv))
    else:
        data = run.config.get("data") or "DATA"
        section.add(Note(f"No data exploration outputs found in `{folder}`: run "
                         f"`hpstudy explore {data} --out {folder}` "
                         "(or pass the exploration folder to the report)."))
    section.add(*_leak_blocks(run))
    return section


_EXPLORE_CAPTIONS = {
    "counts": "Images per split and class", "sizes": "Image sizes", "samples": "Sample training images per class",
    "mean_std_images": "Mean and standard-deviation image per class", "histograms": "Pixel intensity histograms",
    "normalization": "Pixel values before and after normalization (statistics fitted on train)",
    "augmentation": "Augmentation examples (training batches only)", "stats": "Statistics per split and class",
    "leaks": "Images found in more than one split (all splits, from exploration)",
}


def _explore_order(files: Iterable[Path]) -> list[Path]:
    """Exploration files in the order ``hpstudy explore`` writes them, unknown ones after, by name."""
    order = list(_EXPLORE_CAPTIONS)
    return sorted(files, key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.name))


def _explore_caption(path: Path) -> str:
    return _EXPLORE_CAPTIONS.get(path.stem, caption_from_name(path))


def _explore_table(csv: Path) -> list[Block]:
    frame = read_csv(csv)
    if frame is None:
        return []
    if frame.empty:
        return [Para("Exploration leak check over all splits: no image appears in more than one split.")] \
            if csv.stem == "leaks" else []
    more = f" (first {_MAX_EXPLORE_ROWS} of {len(frame)} rows)" if len(frame) > _MAX_EXPLORE_ROWS else ""
    return [Table(frame.head(_MAX_EXPLORE_ROWS), caption=f"{_explore_caption(csv)} ({csv.name}){more}")]


def _leak_blocks(run: StudyRun) -> list[Block]:
    leaks = read_csv(run.paths.leaks_csv)
    if leaks is None:
        return [Note(f"No leak-check result at `{run.paths.leaks_csv}`: it is written by "
                     f"`hpstudy search {run.command_target}` before any training starts.")]
    if leaks.empty:
        return [Para("Leak check: no image appears in more than one of the training splits (train, val).")]
    return [Note(f"Leak check: {len(leaks)} image pair(s) appear in more than one split; see "
                 f"`{run.paths.leaks_csv}`."),
            Table(leaks.head(_MAX_EXPLORE_ROWS), caption="Images found in several splits")]


# ---------------------------------------------------------------- Tasks 2 and 3

def search_section(run: StudyRun, anchor: str, assets: Assets) -> Section:
    """Tasks 2-3: configuration, environment, top trials, progress, best-trial curves, boundary flags."""
    section = Section("Tasks 2–3 — Hyperparameter search", anchor)
    section.children.append(_configuration(run, f"{anchor}-config"))
    if run.trials is None:
        section.add(Note(f"No trials yet: run `hpstudy search {run.command_target}`."))
        return section
    section.add(Para(_progress_sentence(run)))
    section.children += [_top_trials(run, f"{anchor}-top"), _progress(run, f"{anchor}-progress", assets),
                         _best_curves(run, f"{anchor}-curves", assets), _boundary(run, f"{anchor}-boundary")]
    if run.history is not None:
        section.children.insert(1, _history(run, f"{anchor}-history", assets))
    return section


def chain_sentence(history: pd.DataFrame) -> str:
    """Which positions of a merged history belong to which study, and which trials were warm starts."""
    parts = []
    for study, rows in history.groupby("study", sort=False):
        warm = rows[rows["warm_start_of"].notna()]
        verb = "repeats an earlier trial" if len(warm) == 1 else "repeat earlier trials"
        repeat = f", of which {len(warm)} {verb} ({', '.join(warm['warm_start_of'])})" if not warm.empty else ""
        parts.append(f"trials {rows['position'].min()}–{rows['position'].max()} are study {study}'s{repeat}")
    return "One history, oldest study first: " + "; ".join(parts) + "."


def _history(run: StudyRun, anchor: str, assets: Assets) -> Section:
    """The studies this one follows (``initial_trials.from``) and this one, as one search."""
    assert run.history is not None
    section = Section("History across the follow-up studies", anchor)
    history = run.history
    section.add(Para(f"This study is a follow-up (`hpstudy extend`) of {' -> '.join(run.lineage[:-1])}: its search "
                     "space widens the ranges whose best values sat at an edge, and it first re-ran the best trials "
                     "of the study before it. " + chain_sentence(history)))
    label = " -> ".join(run.lineage)
    curve = history.assign(trial_id=history["position"].astype(str))
    data = compare_oracles({label: curve}, direction=run.direction, margin=0.0, oracles={label: run.oracle})
    section.add(Figure(plot_best_so_far(data, assets.path("history_best_so_far.png"), objective=run.objective),
                       f"Best {run.objective} so far along the whole history ({label})"))
    done = history[(history["status"] == "COMPLETED") & pd.to_numeric(history["score"], errors="coerce").notna()]
    done = done.sort_values("score", ascending=run.direction == "min", kind="stable").head(_TOP)
    columns = ["study", "trial_id", "warm_start_of"]
    shown = _display_trials(done)
    section.add(Table(pd.concat([done[columns].reset_index(drop=True), shown.reset_index(drop=True)
                                 .drop(columns=["trial_id"])], axis=1),
                      caption=f"Best {len(done)} trials of the whole history by {run.objective} ({run.direction})"))
    return section


def _configuration(run: StudyRun, anchor: str) -> Section:
    section = Section("Configuration and environment", anchor)
    if not run.frozen:
        return section.add(Note(f"No frozen configuration (`{run.paths.frozen_config}`): "
                                f"run `hpstudy search {run.command_target}` first."))
    environment = {"seed": run.frozen.get("seed"), "data fingerprint": run.frozen.get("data_fingerprint"),
                   "frozen at": run.frozen.get("frozen_at"), **(run.frozen.get("versions") or {})}
    section.add(Para(f"Resolved configuration frozen in `{run.paths.frozen_config}`."),
                Table(key_value_table(run.config), caption="Study configuration"),
                Table(key_value_table(environment, key="item"), caption="Environment and reproducibility"))
    return section


def _progress_sentence(run: StudyRun) -> str:
    trials = run.trials if run.trials is not None else pd.DataFrame()
    counts = trials["status"].value_counts().to_dict() if not trials.empty else {}
    planned = run.state.get("planned_trials")
    status = run.state.get("status", "unknown (no study.json)")
    seconds = pd.to_numeric(trials.get("seconds"), errors="coerce").sum() if not trials.empty else 0.0
    parts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())) or "none"
    of = f" of {planned} planned" if planned else ""
    return (f"Status: {status}. {len(trials)} trial(s){of} ({parts}); "
            f"{format_duration(float(seconds))} of training in all.{_useful_sentence(trials)}")


def _useful_sentence(trials: pd.DataFrame) -> str:
    fraction = useful_fraction(trials) if not trials.empty else None
    if fraction is None:
        return ""
    return (f" Useful-work fraction: {fraction:.2f} (seconds inside the epochs, less tracing, over the trials' wall "
            "time; the rest is process start, model build, tracing and checkpoints).")


def _display_trials(frame: pd.DataFrame) -> pd.DataFrame:
    columns = ["trial_id", "score", "best_epoch", "epochs_run", "seconds",
               *[c for c in frame.columns if str(c).startswith("hp_")]]
    return frame[[c for c in columns if c in frame.columns]].rename(columns=lambda c: str(c).removeprefix("hp_"))


def _completed(run: StudyRun) -> pd.DataFrame:
    trials = run.trials if run.trials is not None else pd.DataFrame(columns=["status", "score"])
    done = trials[(trials["status"] == "COMPLETED") & pd.to_numeric(trials["score"], errors="coerce").notna()]
    return done.sort_values("score", ascending=run.direction == "min", kind="stable")


def _top_trials(run: StudyRun, anchor: str) -> Section:
    section = Section("Top trials", anchor)
    done = _completed(run)
    if done.empty:
        section.add(Note("No trial has completed with a score yet, so there is no best trial."))
    else:
        section.add(Table(_display_trials(done.head(_TOP)),
                          caption=f"Best {min(_TOP, len(done))} of {len(done)} completed trials by {run.objective} "
                                  f"({run.direction}); score = {run.objective} at the best epoch"))
    trials = run.trials if run.trials is not None else pd.DataFrame(columns=["status"])
    failed = trials[trials["status"].isin(["FAILED", "INVALID"])]
    if not failed.empty:
        columns = [c for c in ("trial_id", "status", "message") if c in failed.columns]
        section.add(Table(failed[columns],
                          caption=f"{len(failed)} failed trial(s) (their time still counts as budget)"))
    return section


def _progress(run: StudyRun, anchor: str, assets: Assets) -> Section:
    section = Section("Search progress and hyperparameters", anchor)
    assert run.trials is not None
    data = compare_oracles({run.name: run.trials}, direction=run.direction, margin=0.0, oracles={run.name: run.oracle})
    section.add(Figure(plot_best_so_far(data, assets.path("best_so_far.png"), objective=run.objective),
                       f"Best {run.objective} so far against trials, wall-clock time and epochs ({run.oracle} oracle)"))
    hp_path = plot_hyperparameters(data, assets.path("hyperparameters.png"), objective=run.objective)
    if hp_path is None:
        section.add(Note("No hyperparameter values of completed trials to plot."))
    else:
        section.add(Figure(hp_path, f"{run.objective} of each completed trial against the hyperparameter values tried"))
    return section


def _best_curves(run: StudyRun, anchor: str, assets: Assets) -> Section:
    section = Section("Learning curves of the best trial", anchor)
    done = _completed(run)
    if done.empty:
        return section.add(Note("No completed trial yet, so there are no learning curves of a best trial."))
    best = done.iloc[0]
    history_path = run.paths.trial_history(str(best["trial_id"]))
    history = read_csv(history_path)
    if history is None or history.empty:
        return section.add(Note(f"No training history for the best trial {best['trial_id']} (`{history_path}` is "
                                "missing): it is written by `hpstudy search` when a trial ends."))
    best_epoch = None if pd.isna(best.get("best_epoch")) else int(best["best_epoch"])
    path = plot_learning_curves(history, assets.path("best_trial_curves.png"), best_epoch=best_epoch,
                                title=f"{run.name}: trial {best['trial_id']} ({run.objective}={best['score']:.4f})")
    return section.add(Figure(path, f"Training and validation curves of the best trial {best['trial_id']}"
                                    + (f"; dotted line: best epoch {best_epoch}" if best_epoch else "")))


def _boundary(run: StudyRun, anchor: str) -> Section:
    section = Section("Boundary check", anchor)
    if "boundary" not in run.state:
        return section.add(Note(f"No boundary check yet: it is written to `{run.paths.state}` when "
                                f"`hpstudy search {run.command_target}` finishes."))
    flags = run.state.get("boundary") or []
    if not flags:
        return section.add(Para("No boundary flags: the best values lie inside their search ranges."))
    columns = ["hyperparameter", "side", "limit", "best_value", "trials_at_limit", "suggestion"]
    frame = pd.DataFrame(flags)
    settled = settled_sentence(flags)
    section.add(Para(settled[0].upper() + settled[1:] + ".") if settled else
                Note(f"{sum(bool(f.get('extendable', True)) for f in flags)} hyperparameter(s) have their best value "
                     "at an edge of the searched range that can move: widen the range and search again "
                     f"(`hpstudy extend {run.command_target}` writes a follow-up study with those widened, starting "
                     "from this study's best trials)."),
                Table(frame[[c for c in columns if c in frame.columns]], caption="Boundary flags (from study.json)"))
    return section
