"""The single, guarded test evaluation of a finalized model.

``evaluate_study`` is the only place that reads the test split. It checks the model file belongs to
the study, refuses a second evaluation of the same file unless forced, runs the full leak check
(now including the test split), and writes ``evaluation/<model>/`` plus the ledger's records.
"""

from __future__ import annotations

import getpass
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._io import atomic_path, file_sha256, utc_now, write_problem
from hpstudy.config import StudyConfig, frozen_fingerprint, stage_config
from hpstudy.errors import EvaluationError, StudyError
from hpstudy.paths import MODELS, StudyPaths
from hpstudy.records import (
    check_first_evaluation,
    ledger_entries,
    read_metrics,
    read_model_record,
    record_evaluation,
    study_lock,
    write_metrics,
)

__all__ = ["evaluate_study", "model_path", "best_evaluated_model"]

log = logging.getLogger("hpstudy")


def model_path(paths: StudyPaths, which: str) -> Path:
    """Path of the ``final`` or ``finetune`` model of a study, checked to belong to it.

    Raises:
        StudyError: unknown name, no model yet, or a file that is not the one this study saved.
    """
    if which not in MODELS:
        raise StudyError(f"--model must be one of {', '.join(MODELS)}, but got {which!r}")
    folder = paths.model_dir(which)
    path, record = paths.model_file(which), read_model_record(paths, which)
    if not path.exists():
        hint = ("run `hpstudy finalize` first" if which == "final" else
                f"fine-tuning kept the head model (see {paths.lr_backoff})" if record
                else "run `hpstudy finalize` on a transfer-model study first")
        raise StudyError(f"no {which} model at {path}: {hint}")
    expected = (record or {}).get("model_sha256")
    if not expected:
        recorded_in = paths.model_record(which)
        raise StudyError(f"{path} has no SHA-256 recorded in {recorded_in}, so hpstudy cannot tell it is the model "
                         "this study saved; re-run `hpstudy finalize`")
    if file_sha256(path) != expected:
        raise StudyError(f"{path} is not the model this study saved (its SHA-256 differs from the one recorded "
                         f"in {folder}); was it copied from another study? Re-run `hpstudy finalize`.")
    return path


@dataclass(frozen=True)
class _TestSet:
    """The test split as the study prepares it: images, labels, relative paths, and the train statistics."""

    x: np.ndarray
    y: np.ndarray
    names: list[str]
    stats: dict[str, Any]
    leaks: int


def _load_test(config: StudyConfig, paths: StudyPaths) -> _TestSet:
    from hpstudy.data.discover import check_fingerprint, discover
    from hpstudy.data.leak import check_leaks
    from hpstudy.data.pipeline import load_split
    from hpstudy.data.prepare import load_data_stats

    stats = load_data_stats(paths.data_stats)
    source = discover(config.data, positive_class=config.positive_class, verify=True)
    check_fingerprint(source, frozen_fingerprint(config))
    leaks = check_leaks(source, severity=config.leak_check, out_csv=paths.leaks_all_splits)
    records = source.split("test")
    x, y = load_split(records, image_size=tuple(stats["image_size"]))
    return _TestSet(x, y, [str(r.path.relative_to(source.root)) for r in records], stats, int(len(leaks)))


def _check_accepts(classifier: Any, path: Path, test: _TestSet, paths: StudyPaths) -> None:
    """Refuse, before the model sees any test image, a model whose input does not fit the prepared images."""
    expected = tuple(classifier.inputs[0].shape[1:])
    got = tuple(test.x.shape[1:])
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        shown = "x".join("?" if e is None else str(e) for e in expected)
        raise EvaluationError(f"{path} takes images of {shown} (height x width x channels), but the study prepares "
                              f"{'x'.join(map(str, got))} (image_size from {paths.frozen_config}); "
                              "the model was trained with other settings: run `hpstudy finalize` again. "
                              "The test set was not used.")


def evaluate_study(config: StudyConfig | str | Path, *, model: str = "final", force: bool = False,
                   data: str | Path | None = None, n_boot: int = 1000) -> dict[str, Any]:
    """Evaluate a finalized model on the test split, once; returns the metrics with 95 % CIs.

    The configuration is the one the search froze (``config.stage_config``). Everything that can fail
    without showing the model a test image is checked first (the model file, earlier uses, the data, the
    model's input shape); then ``started`` is recorded, the model predicts, and the metrics are written
    before any figure. An attempt that fails after ``started`` is recorded as ``failed`` with the reason
    and does not use the test set up. When the metrics exist but a figure is missing (e.g. the disk filled
    up while drawing), running again draws the figures from the saved predictions: no new evaluation.

    Raises:
        StudyError: no such model yet, a model file that is not this study's, other data than the
            search's, or another process using the study.
        EvaluationError: the model was already evaluated and ``force`` is False, its input does not fit
            the prepared images, or the attempt failed (recorded as failed).
    """
    from hpstudy.runtime import quiet_tensorflow

    quiet_tensorflow()
    config = stage_config(config, stage="evaluate", data=data)
    paths = StudyPaths(config.study_dir)
    with study_lock(paths, command="evaluate"):
        path = model_path(paths, model)
        sha = file_sha256(path)
        done = _completed(paths, model, sha)
        if done is not None and not force and _missing_figures(paths, model):
            return _redraw(config, paths, model, done)
        earlier = check_first_evaluation(paths.ledger, sha, force=force)
        return _evaluate(config, paths, model, path, sha, forced=bool(earlier), n_boot=n_boot)


def _evaluate(config: StudyConfig, paths: StudyPaths, model: str, path: Path, sha: str, *, forced: bool,
              n_boot: int) -> dict[str, Any]:
    import keras

    test = _load_test(config, paths)
    classifier = keras.models.load_model(path)
    _check_accepts(classifier, path, test, paths)
    stamp = {"model": model, "model_sha256": sha, "study": config.name, "user": _user(), "model_file": str(path),
             "forced": forced, "dataset": "test", "attempt": uuid.uuid4().hex[:12]}
    # Recorded before the model sees the test images: a crash (kill -9) from here on still counts as a use.
    record_evaluation(paths.ledger, {**stamp, "status": "started", "time": utc_now()})
    try:
        probs = classifier.predict(test.stats["normalizer"].apply(test.x), verbose=0).reshape(-1)
        result = _results(config, model, sha, test, probs, forced=forced, n_boot=n_boot)
        _write_results(paths, model, result, test, probs)
    except Exception as exc:
        _record_failure(paths, stamp, exc)
        raise
    record_evaluation(paths.ledger, {**stamp, **result, "status": "completed", "time": utc_now()})
    log.info(_metrics_line(config.name, model, result["metrics"], result["ci95"]))
    _draw(config, paths, model, test, probs, result)
    return result


def _results(config: StudyConfig, model: str, sha: str, test: _TestSet, probs: np.ndarray, *, forced: bool,
             n_boot: int) -> dict[str, Any]:
    from hpstudy import metrics

    intervals = metrics.bootstrap_ci(test.y, probs, n_boot=n_boot, seed=config.seed)
    return {"model": model, "model_sha256": sha, "n_test": int(len(test.y)), "threshold": 0.5,
            "metrics": metrics.binary_metrics(test.y, probs), "ci95": {k: list(v) for k, v in intervals.items()},
            "leaks_across_all_splits": test.leaks, "forced": forced}


def _write_results(paths: StudyPaths, model: str, result: dict[str, Any], test: _TestSet, probs: np.ndarray) -> None:
    with atomic_path(paths.predictions_csv(model)) as tmp:
        pd.DataFrame({"path": test.names, "label": test.y.astype(int), "probability": probs}).to_csv(tmp, index=False)
    write_metrics(paths, model, result)


def _record_failure(paths: StudyPaths, stamp: dict[str, Any], exc: Exception) -> None:
    """Record an attempt that ended before any metric was reported; a write problem becomes a one-line error."""
    reason = write_problem(exc) or f"{type(exc).__name__}: {exc}"
    try:
        record_evaluation(paths.ledger, {**stamp, "status": "failed", "reason": reason, "time": utc_now()})
    except OSError:  # the ledger cannot be written either: its `started` line stands, the set counts as used
        raise EvaluationError(f"the evaluation failed ({reason}) and the ledger {paths.ledger} could not record it; "
                              "the test set counts as used: rerun with --force once the problem is fixed") from exc
    if write_problem(exc):
        raise EvaluationError(f"the evaluation failed: {reason}. It is recorded as failed in {paths.ledger}, so the "
                              "test set is not used up: run the same command again") from exc


_FIGURES = ("confusion_matrix.png", "roc.png", "samples.png")


def _missing_figures(paths: StudyPaths, model: str) -> bool:
    return any(not (paths.evaluation_of(model) / name).is_file() for name in _FIGURES)


def _draw(config: StudyConfig, paths: StudyPaths, model: str, test: _TestSet, probs: np.ndarray,
          result: dict[str, Any]) -> None:
    """The figures of an evaluation, drawn after its metrics are saved; a write problem is a one-line error."""
    from hpstudy import metrics
    from hpstudy import metrics_figures as figures
    from hpstudy.data.prepare import ordered_class_names

    out, names = paths.evaluation_of(model), ordered_class_names(test.stats)
    try:
        figures.plot_confusion_matrix(metrics.confusion(test.y, probs), names, out / _FIGURES[0],
                                      title=f"{config.name} ({model}): test confusion matrix")
        figures.plot_roc(test.y, probs, out / _FIGURES[1], title=f"{config.name} ({model}): test ROC",
                         auc_ci=tuple(result["ci95"]["roc_auc"]))
        figures.plot_prediction_samples(test.x, test.y, probs, names, out / _FIGURES[2], seed=config.seed)
    except OSError as exc:
        if not write_problem(exc):
            raise
        raise StudyError(f"the metrics are saved ({paths.metrics_json(model)}), but the figures could not be drawn: "
                         f"{write_problem(exc, rerun=False)}; run `hpstudy evaluate` again to draw them from the "
                         "saved predictions (no new evaluation)") from exc


def _completed(paths: StudyPaths, model: str, sha: str) -> dict[str, Any] | None:
    """The saved result of this model file's completed evaluation, when its predictions are there too."""
    result = read_metrics(paths, model)
    if not result or result.get("model_sha256") != sha or not paths.predictions_csv(model).is_file():
        return None
    completed = [e for e in ledger_entries(paths) if e.get("model_sha256") == sha and e.get("status") == "completed"]
    return result if completed else None


def _redraw(config: StudyConfig, paths: StudyPaths, model: str, result: dict[str, Any]) -> dict[str, Any]:
    """Draw the missing figures of a completed evaluation from its saved predictions (the model is not run)."""
    test = _load_test(config, paths)
    predictions = pd.read_csv(paths.predictions_csv(model))
    if list(predictions["path"]) != test.names:
        raise StudyError(f"{paths.predictions_csv(model)} does not list the test images of {config.data}; "
                         "run `hpstudy evaluate --force` to evaluate again (recorded in the ledger)")
    log.info(f"[{config.name}] model '{model}' was evaluated already; drawing its missing figures from "
             f"{paths.predictions_csv(model)} (no new evaluation)")
    _draw(config, paths, model, test, predictions["probability"].to_numpy(), result)
    return result


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _metrics_line(name: str, model: str, metrics: dict[str, Any], intervals: dict[str, Any]) -> str:
    parts = []
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1"):
        low, high = intervals.get(key, (np.nan, np.nan))
        parts.append(f"{key} {metrics[key]:.3f} [{low:.3f}, {high:.3f}]")
    return f"[{name}] test ({model}): " + "; ".join(parts)


def best_evaluated_model(paths: StudyPaths) -> str:
    """The model with the best test ROC AUC in the ledger (the course's rule for Grad-CAM)."""
    entries = [e for e in ledger_entries(paths) if e.get("model") in MODELS and e.get("metrics")]
    if not entries:
        raise EvaluationError(f"no evaluation in {paths.ledger}: run `hpstudy evaluate` first")
    latest = {e["model"]: e for e in entries}
    return max(latest.values(), key=lambda e: e["metrics"].get("roc_auc", -1.0))["model"]
