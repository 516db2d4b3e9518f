"""The single, guarded test evaluation of a finalized model, and its evaluation on external sets.

``evaluate_study`` is the only place that reads the test split. It checks the model file belongs to
the study, refuses a second evaluation of the same file unless forced, runs the full leak check
(now including the test split), and writes ``evaluation/<model>/`` plus the ledger's records.
``evaluate_external`` does the same, once per model and set, for each external set
(``evaluation/<model>-<name>/``, ledger records with ``dataset: <name>``).

Both apply the operating point ``finalize`` stored in ``final/best_config.json`` (``hpstudy.operating``):
the temperature (when one was fitted) rescales the model's probabilities, and the chosen threshold
decides; ``metrics.json`` holds the metrics at that threshold and at 0.5, and the Brier score and ECE
(before and after the temperature), each with a 95 % bootstrap interval.
"""

from __future__ import annotations

import getpass
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._io import atomic_path, file_sha256, utc_now, write_problem
from hpstudy.config import StudyConfig, stage_config
from hpstudy.errors import EvaluationError, StudyError
from hpstudy.evaluation_sets import (
    TEST,
    EvaluationSet,
    external_sets,
    load_external_set,
    load_test_set,
    set_label,
)
from hpstudy.paths import MODELS, StudyPaths
from hpstudy.records import (
    check_first_evaluation,
    evaluation_entries,
    read_best_config,
    read_metrics,
    read_model_record,
    record_evaluation,
    study_lock,
    write_metrics,
)

__all__ = ["evaluate_study", "evaluate_external", "model_path", "best_evaluated_model", "operating_records"]

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


def _check_accepts(classifier: Any, path: Path, images: EvaluationSet, paths: StudyPaths) -> None:
    """Refuse, before the model sees any image of the set, a model whose input does not fit the prepared images."""
    expected = tuple(classifier.inputs[0].shape[1:])
    got = tuple(images.x.shape[1:])
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        shown = "x".join("?" if e is None else str(e) for e in expected)
        raise EvaluationError(f"{path} takes images of {shown} (height x width x channels), but the study prepares "
                              f"{'x'.join(map(str, got))} (image_size from {paths.frozen_config}); "
                              "the model was trained with other settings: run `hpstudy finalize` again. "
                              f"The {'test' if images.dataset == TEST else 'external'} set was not used.")


def evaluate_study(config: StudyConfig | str | Path, *, model: str = "final", force: bool = False,
                   data: str | Path | None = None, n_boot: int = 1000) -> dict[str, Any]:
    """Evaluate a finalized model on the test split, once; returns the metrics with 95 % CIs.

    The configuration is the one the search froze (``config.stage_config``). Everything that can fail
    without showing the model a test image is checked first (the model file, earlier uses, the data, the
    model's input shape); then ``started`` is recorded, the model predicts, and the metrics are written
    before any figure. An attempt that fails after ``started`` is recorded as ``failed`` with the reason
    and does not use the test set up. When the metrics exist but a figure is missing (e.g. the disk filled
    up while drawing), running again draws the figures from the saved predictions: no new evaluation.
    The threshold and temperature ``finalize`` stored (``operating_records``) are applied; the result holds
    the metrics at that threshold and at 0.5, and the calibration, with 95 % bootstrap intervals.

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
        return _guarded(config, paths, model, TEST, lambda: load_test_set(config, paths), force=force, n_boot=n_boot)


def evaluate_external(config: StudyConfig | str | Path, *, sets: Mapping[str, str | Path] | Sequence[str],
                      model: str = "final", force: bool = False, data: str | Path | None = None,
                      n_boot: int = 1000) -> dict[str, dict[str, Any]]:
    """Evaluate a finalized model on external sets, each once, with the study's normalization and operating point.

    Each set (a folder or zip with a ``test/`` split or the class folders at its top, the study's class
    names) is checked for leaks against the study's train/val/test first (``leak_check``; the pairs go to
    ``evaluation/leaks_external_<name>.csv``), then evaluated under the same protocol as the test split:
    ``started``/``completed``/``failed`` ledger records with ``dataset: <name>``, a second evaluation only
    with ``force``. Results go to ``evaluation/<model>-<name>/``.

    Args:
        config: the study YAML or ``StudyConfig``.
        sets: ``["NAME=PATH", ...]`` or ``{NAME: PATH}``; NAME a safe folder name other than ``test``.
        model: ``final`` or ``finetune``.
        force: evaluate again a set this model was evaluated on (recorded as forced).
        data: the study's data folder or zip (default: the search's).
        n_boot: bootstrap resamples of the intervals.

    Returns:
        NAME -> the ``metrics.json`` result, for every set (in the order given; the first error stops).

    Raises:
        ConfigError: a bad NAME=PATH.
        DataError: an unusable set, or other class names than the study's (both lists named).
        LeakError: shared images with ``leak_check: error``.
        EvaluationError, StudyError: as ``evaluate_study``.
    """
    from hpstudy.runtime import quiet_tensorflow

    named = external_sets(sets)
    quiet_tensorflow()
    config = stage_config(config, stage="evaluate", data=data)
    paths = StudyPaths(config.study_dir)
    results = {}
    with study_lock(paths, command="evaluate"):
        for name, path in named.items():
            def load(name: str = name, path: Path = path) -> EvaluationSet:
                return load_external_set(config, paths, name, path)

            results[name] = _guarded(config, paths, model, name, load, force=force, n_boot=n_boot)
    return results


def _guarded(config: StudyConfig, paths: StudyPaths, model: str, dataset: str, load: Callable[[], EvaluationSet], *,
             force: bool, n_boot: int) -> dict[str, Any]:
    """The once-per-model-and-set protocol: redraw missing figures, or refuse a repeat, or evaluate."""
    path = model_path(paths, model)
    sha = file_sha256(path)
    done = _completed(paths, model, sha, dataset)
    if done is not None and not force and _missing_figures(paths, model, dataset):
        return _redraw(config, paths, model, load(), done)
    earlier = check_first_evaluation(paths.ledger, sha, force=force, dataset=dataset)
    return _evaluate(config, paths, model, path, sha, load(), forced=bool(earlier), n_boot=n_boot)


def _evaluate(config: StudyConfig, paths: StudyPaths, model: str, path: Path, sha: str, images: EvaluationSet, *,
              forced: bool, n_boot: int) -> dict[str, Any]:
    import keras

    classifier = keras.models.load_model(path)
    _check_accepts(classifier, path, images, paths)
    stamp = {"model": model, "model_sha256": sha, "study": config.name, "user": _user(), "model_file": str(path),
             "forced": forced, "dataset": images.dataset, "attempt": uuid.uuid4().hex[:12]}
    if images.dataset != TEST:
        stamp["external_path"] = str(images.origin)
    # Recorded before the model sees the images: a crash (kill -9) from here on still counts as a use.
    record_evaluation(paths.ledger, {**stamp, "status": "started", "time": utc_now()})
    try:
        raw = classifier.predict(images.stats["normalizer"].apply(images.x), verbose=0).reshape(-1)
        result, probs = _results(config, paths, model, sha, images, raw, forced=forced, n_boot=n_boot)
        _write_results(paths, model, result, images, raw, probs)
    except Exception as exc:
        _record_failure(paths, stamp, exc)
        raise
    record_evaluation(paths.ledger, {**stamp, **result, "status": "completed", "time": utc_now()})
    log.info(_metrics_line(config.name, model, images.dataset, result))
    _draw(config, paths, model, images, probs, result, raw if probs is not raw else None)
    return result


def operating_records(paths: StudyPaths) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``threshold`` and ``calibration`` records ``finalize`` stored (0.5 and none for older studies)."""
    extra = getattr(read_best_config(paths), "extra", {}) or {}
    threshold = extra.get("threshold") or {
        "policy": "fixed", "target": None, "value": 0.5, "n_val": 0,
        "source": "0.5: best_config.json holds no threshold (finalized before thresholds were chosen)"}
    calibration = extra.get("calibration") or {"method": "none", "temperature": None, "fitted_on": "not fitted"}
    return threshold, calibration


def _results(config: StudyConfig, paths: StudyPaths, model: str, sha: str, images: EvaluationSet, raw: np.ndarray,
             *, forced: bool, n_boot: int) -> tuple[dict[str, Any], np.ndarray]:
    """The ``metrics.json`` result and the probabilities it was computed on (after the temperature, if any)."""
    from hpstudy.calibration import apply_temperature, evaluation_summary

    threshold, calibration = operating_records(paths)
    temperature = calibration.get("temperature")
    probs = apply_temperature(raw, temperature) if temperature else raw
    summary = evaluation_summary(images.y, probs, threshold=float(threshold["value"]),
                                 uncalibrated=raw if temperature else None, n_boot=n_boot, seed=config.seed)
    summary["calibration"] = {**calibration, **summary["calibration"]}
    leaks = {"leaks_across_all_splits": images.leaks} if images.dataset == TEST else {"leaks_with_study": images.leaks}
    return {"model": model, "model_sha256": sha, "dataset": images.dataset, "n_test": int(len(images.y)), **summary,
            "threshold_info": threshold, **leaks, "forced": forced}, probs


def _write_results(paths: StudyPaths, model: str, result: dict[str, Any], images: EvaluationSet, raw: np.ndarray,
                   probs: np.ndarray) -> None:
    columns = {"path": images.names, "label": images.y.astype(int), "probability": probs}
    if probs is not raw:
        columns["probability_uncalibrated"] = raw
    with atomic_path(paths.predictions_csv(model, images.dataset)) as tmp:
        pd.DataFrame(columns).to_csv(tmp, index=False)
    write_metrics(paths, model, result, images.dataset)


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


_FIGURES = ("confusion_matrix.png", "roc.png", "samples.png", "reliability.png")


def _missing_figures(paths: StudyPaths, model: str, dataset: str) -> bool:
    return any(not (paths.evaluation_of(model, dataset) / name).is_file() for name in _FIGURES)


def _draw(config: StudyConfig, paths: StudyPaths, model: str, images: EvaluationSet, probs: np.ndarray,
          result: dict[str, Any], uncalibrated: np.ndarray | None) -> None:
    """The figures of an evaluation, drawn after its metrics are saved; a write problem is a one-line error."""
    from hpstudy import metrics
    from hpstudy import metrics_figures as figures
    from hpstudy.data.prepare import ordered_class_names

    out, names = paths.evaluation_of(model, images.dataset), ordered_class_names(images.stats)
    threshold, where = float(result.get("threshold", 0.5)), f"{config.name} ({model}): {set_label(images.dataset)}"
    points = [("chosen", threshold), ("0.5", 0.5)] if threshold != 0.5 else [("threshold", 0.5)]
    try:
        figures.plot_confusion_matrix(metrics.confusion(images.y, probs, threshold=threshold), names, out / _FIGURES[0],
                                      title=f"{where}, confusion matrix at threshold {threshold:.4g}")
        figures.plot_roc(images.y, probs, out / _FIGURES[1], title=f"{where}, ROC",
                         auc_ci=tuple(result["ci95"]["roc_auc"]), operating_points=points)
        figures.plot_prediction_samples(images.x, images.y, probs, names, out / _FIGURES[2], seed=config.seed,
                                        threshold=threshold)
        figures.plot_reliability(_reliability_curves(images.y, probs, uncalibrated), out / _FIGURES[3],
                                 title=f"{where}, reliability")
    except OSError as exc:
        if not write_problem(exc):
            raise
        raise StudyError(f"the metrics are saved ({paths.metrics_json(model, images.dataset)}), but the figures could "
                         f"not be drawn: {write_problem(exc, rerun=False)}; run `hpstudy evaluate` again to draw them "
                         "from the saved predictions (no new evaluation)") from exc


def _reliability_curves(y: np.ndarray, probs: np.ndarray, uncalibrated: np.ndarray | None) -> dict[str, Any]:
    from hpstudy.calibration import expected_calibration_error, reliability

    tables = {"model": uncalibrated, "after temperature scaling": probs} if uncalibrated is not None else \
        {"model": probs}
    return {f"{label} (ECE {expected_calibration_error(y, p):.3f})": reliability(y, p) for label, p in tables.items()}


def _completed(paths: StudyPaths, model: str, sha: str, dataset: str) -> dict[str, Any] | None:
    """The saved result of this model file's completed evaluation on ``dataset``, when its predictions are there."""
    result = read_metrics(paths, model, dataset)
    if not result or result.get("model_sha256") != sha or not paths.predictions_csv(model, dataset).is_file():
        return None
    completed = [e for e in evaluation_entries(paths) if e.get("model_sha256") == sha and e.get("status") == "completed"
                 and e.get("dataset", TEST) == dataset]
    return result if completed else None


def _redraw(config: StudyConfig, paths: StudyPaths, model: str, images: EvaluationSet,
            result: dict[str, Any]) -> dict[str, Any]:
    """Draw the missing figures of a completed evaluation from its saved predictions (the model is not run)."""
    csv = paths.predictions_csv(model, images.dataset)
    predictions = pd.read_csv(csv, float_precision="round_trip")
    if list(predictions["path"]) != images.names:
        raise StudyError(f"{csv} does not list the images of the {set_label(images.dataset)} ({images.origin}); "
                         "run `hpstudy evaluate --force` to evaluate again (recorded in the ledger)")
    log.info(f"[{config.name}] model '{model}' was evaluated already on the {set_label(images.dataset)}; drawing its "
             f"missing figures from {csv} (no new evaluation)")
    raw = predictions["probability_uncalibrated"].to_numpy() if "probability_uncalibrated" in predictions else None
    _draw(config, paths, model, images, predictions["probability"].to_numpy(), result, raw)
    return result


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _metrics_line(name: str, model: str, dataset: str, result: dict[str, Any]) -> str:
    metrics, intervals, parts = result["metrics"], result["ci95"], []
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1"):
        low, high = intervals.get(key, (np.nan, np.nan))
        parts.append(f"{key} {metrics[key]:.3f} [{low:.3f}, {high:.3f}]")
    calibration = result.get("calibration") or {}
    for key in ("brier", "ece"):
        if key in calibration:
            low, high = calibration[f"{key}_ci95"]
            parts.append(f"{key} {calibration[key]:.3f} [{low:.3f}, {high:.3f}]")
    where = "test" if dataset == TEST else f"external set {dataset}"
    return f"[{name}] {where} ({model}), threshold {result.get('threshold', 0.5):.3g}: " + "; ".join(parts)


def best_evaluated_model(paths: StudyPaths) -> str:
    """The model with the best test ROC AUC in the ledger (the course's rule for Grad-CAM)."""
    entries = [e for e in evaluation_entries(paths) if e.get("model") in MODELS and e.get("metrics")
               and e.get("dataset", TEST) == TEST]
    if not entries:
        raise EvaluationError(f"no evaluation in {paths.ledger}: run `hpstudy evaluate` first")
    latest = {e["model"]: e for e in entries}
    return max(latest.values(), key=lambda e: e["metrics"].get("roc_auc", -1.0))["model"]
