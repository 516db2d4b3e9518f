"""The re-evaluation runs: their seeds and order, ``selection.csv``, prediction files, and the training.

Each run is a fresh model of a trial's exact hyperparameters, trained as the search trained it (prepared
data, dataset factories, class weights and feature cache from ``search.session``; the search's early
stopping and per-trial epoch budget) with a new seed, followed by its predictions on the validation split.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._io import atomic_path, digest
from hpstudy.config import StudyConfig
from hpstudy.errors import StudyError
from hpstudy.paths import StudyPaths
from hpstudy.selection.winner import best_of_history

__all__ = ["RUN_COLUMNS", "PlannedRun", "RunResult", "reevaluation_seed", "plan_runs", "read_runs", "write_runs",
           "write_predictions", "make_trainer"]

RUN_COLUMNS = ("trial_id", "seed_index", "seed", "score", "best_epoch", "epochs_run", "seconds")
_SEED_RANGE = 2**31 - 1


@dataclass(frozen=True)
class PlannedRun:
    trial_id: str
    seed_index: int
    seed: int


@dataclass(frozen=True)
class RunResult:
    """One re-evaluation fit: its score and best epoch, and its validation predictions in split order."""

    score: float | None
    best_epoch: int | None
    epochs_run: int
    seconds: float
    labels: np.ndarray
    probabilities: np.ndarray


def reevaluation_seed(base_seed: int, trial_id: str, index: int) -> int:
    """Seed of run ``index`` of a trial: fixed by the study seed, trial id and index; never the trial's own seed."""
    from hpstudy.search.tuners import trial_seed  # imports TensorFlow

    seed = int(digest({"study_seed": int(base_seed), "trial": str(trial_id), "run": int(index)}, 15), 16)
    seed %= _SEED_RANGE
    return seed if seed != trial_seed(base_seed, trial_id) else (seed + 1) % _SEED_RANGE


def plan_runs(trial_ids: Sequence[str], seeds: int, base_seed: int) -> list[PlannedRun]:
    """Every run, seed by seed (each candidate's first run, then each one's second, ...).

    In this order a confirm stopped half-way leaves every candidate with about as many runs.
    """
    return [PlannedRun(t, i, reevaluation_seed(base_seed, t, i)) for i in range(seeds) for t in trial_ids]


def read_runs(paths: StudyPaths) -> pd.DataFrame:
    """``selection.csv`` (empty, with ``RUN_COLUMNS``, before the first run).

    Raises:
        StudyError: the file exists but is not a readable table of runs.
    """
    if not paths.selection_csv.is_file():
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    try:
        runs = pd.read_csv(paths.selection_csv, dtype={"trial_id": str}, float_precision="round_trip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        runs, problem = None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    else:
        missing = [c for c in RUN_COLUMNS if c not in runs.columns]
        problem = f"columns {', '.join(missing)} are missing" if missing else None
    if runs is None or problem is not None:
        raise StudyError(f"{paths.selection_csv} is not a readable table of re-evaluation runs ({problem}); restore "
                         "it, or pass --overwrite to `hpstudy confirm` to delete the runs and re-evaluate")
    return runs


def write_runs(paths: StudyPaths, runs: pd.DataFrame) -> None:
    with atomic_path(paths.selection_csv) as tmp:
        runs[list(RUN_COLUMNS)].to_csv(tmp, index=False)


def write_predictions(paths: StudyPaths, run: PlannedRun, result: RunResult) -> None:
    frame = pd.DataFrame({"index": np.arange(len(result.labels)), "label": result.labels.astype(int),
                          "probability": result.probabilities})
    with atomic_path(paths.selection_predictions(run.trial_id, run.seed)) as tmp:
        frame.to_csv(tmp, index=False)


def make_trainer(config: StudyConfig) -> Callable[[Mapping[str, Any], int], RunResult]:
    """Prepare the study's data as the search did and return ``train(hyperparameters, seed) -> RunResult``.

    ``prepare(chief=False)`` checks the configuration and the train/val data against the frozen ones and
    writes nothing (no study.yaml, no statistics): re-evaluation must not change the search's record.
    """
    from hpstudy.models import build_hypermodel
    from hpstudy.search.session import prepare, search_datasets

    session = prepare(config, chief=False)
    hypermodel = session.cached.hypermodel if session.cached is not None else build_hypermodel(
        config.family, config.search_space, input_shape=session.prepared.input_shape, weights=config.weights,
        jit_compile=config.jit_compile)
    data = search_datasets(session)
    return lambda values, seed: _train_run(session.config, session.paths, hypermodel, data, values, seed)


def _train_run(config: StudyConfig, paths: StudyPaths, hypermodel: Any, data: tuple[Any, Any, dict[str, Any]],
               values: Mapping[str, Any], seed: int) -> RunResult:
    """A fresh model of ``values`` trained with ``seed`` as a search trial is, then its validation predictions."""
    import keras

    from hpstudy.models import FALLBACKS, hyperparameters_object
    from hpstudy.models.training import history_table
    from hpstudy.search.session import search_callbacks

    train, val, fit_kwargs = data
    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(int(seed))  # weights, dropout, and the shuffle/augmentation streams of tf.data
    start = time.perf_counter()
    hp = hyperparameters_object(config.search_space, dict(values))
    model = hypermodel.build(hp)
    callbacks = search_callbacks(replace(config, tensorboard=False), paths)  # the search's logs stay the search's
    history = history_table(hypermodel.fit(hp, model, train, validation_data=val, epochs=config.oracle.trial_epochs,
                                           callbacks=callbacks, verbose=0, **fit_kwargs))
    labels, probabilities = _predict(model, val(int(values.get("batch_size", FALLBACKS["batch_size"]))))
    score, best_epoch = best_of_history(history, objective=config.objective.name, direction=config.objective.direction)
    del model
    keras.backend.clear_session()
    gc.collect()
    return RunResult(score, best_epoch, int(len(history)), time.perf_counter() - start, labels, probabilities)


def _predict(model: Any, batches: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predicted probabilities over a validation dataset, in its (split) order.

    Called batch by batch rather than with ``predict``, which traces a new function for every fresh model
    and makes TensorFlow warn about retracing after a few runs.
    """
    pairs = [(np.asarray(y).reshape(-1), np.asarray(model(x, training=False), dtype=float).reshape(-1))
             for x, y in batches]
    return np.concatenate([y for y, _ in pairs]), np.concatenate([p for _, p in pairs])
