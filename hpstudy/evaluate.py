"""The single, guarded test evaluation of a finalized model.

``evaluate_study`` is the only place that reads the test split. It checks the model file belongs to
the study, refuses a second evaluation of the same file unless forced, runs the full leak check
(now including the test split), and writes ``evaluation/<model>/`` plus a ledger line.
"""

from __future__ import annotations

import getpass
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._io import atomic_path, file_sha256, utc_now
from hpstudy.config import resolve_config
from hpstudy.errors import EvaluationError, StudyError
from hpstudy.paths import MODELS, StudyPaths
from hpstudy.records import check_first_evaluation, ledger_entries, read_model_record, record_evaluation, write_metrics

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


def _load_test(config: Any, paths: StudyPaths) -> tuple[Any, np.ndarray, np.ndarray, Any, list[str]]:
    from hpstudy.data.discover import discover
    from hpstudy.data.leak import check_leaks
    from hpstudy.data.pipeline import load_split
    from hpstudy.data.prepare import load_data_stats

    stats = load_data_stats(paths.data_stats)
    source = discover(config.data, positive_class=config.positive_class, verify=True)
    leaks = check_leaks(source, severity=config.leak_check, out_csv=paths.leaks_all_splits)
    records = source.split("test")
    x, y = load_split(records, image_size=tuple(stats["image_size"]))
    return stats, x, y, leaks, [str(r.path.relative_to(source.root)) for r in records]


def evaluate_study(config: Any, *, model: str = "final", force: bool = False, data: str | Path | None = None,
                   n_boot: int = 1000) -> dict[str, Any]:
    """Evaluate a finalized model on the test split, once; returns the metrics with 95 % CIs.

    Raises:
        StudyError: no such model yet, or a model file that is not this study's.
        EvaluationError: the model was already evaluated and ``force`` is False.
    """
    import keras

    from hpstudy import metrics as ev
    from hpstudy import metrics_figures as figures
    from hpstudy.data.prepare import ordered_class_names

    config = resolve_config(config, data=data)
    paths = StudyPaths(config.study_dir)
    path = model_path(paths, model)
    sha = file_sha256(path)
    ledger = paths.ledger
    earlier = check_first_evaluation(ledger, sha, force=force)
    stats, x, y, leaks, names = _load_test(config, paths)
    stamp = {"model": model, "model_sha256": sha, "study": config.name, "user": _user(), "model_file": str(path),
             "forced": bool(earlier)}
    # Recorded before the model sees the test images: a crash from here on still counts as a use.
    record_evaluation(ledger, {**stamp, "status": "started", "time": utc_now()})
    probs = keras.models.load_model(path).predict(stats["normalizer"].apply(x), verbose=0).reshape(-1)
    metrics = ev.binary_metrics(y, probs)
    intervals = ev.bootstrap_ci(y, probs, n_boot=n_boot, seed=config.seed)
    out = paths.evaluation_of(model)
    class_names = ordered_class_names(stats)
    figures.plot_confusion_matrix(ev.confusion(y, probs), class_names, out / "confusion_matrix.png",
                                  title=f"{config.name} ({model}): test confusion matrix")
    figures.plot_roc(y, probs, out / "roc.png", title=f"{config.name} ({model}): test ROC",
                     auc_ci=intervals.get("roc_auc"))
    figures.plot_prediction_samples(x, y, probs, class_names, out / "samples.png", seed=config.seed)
    with atomic_path(paths.predictions_csv(model)) as tmp:
        pd.DataFrame({"path": names, "label": y.astype(int), "probability": probs}).to_csv(tmp, index=False)
    result = {"model": model, "model_sha256": sha, "n_test": int(len(y)), "threshold": 0.5,
              "metrics": metrics, "ci95": {k: list(v) for k, v in intervals.items()},
              "leaks_across_all_splits": int(len(leaks)), "forced": bool(earlier)}
    write_metrics(paths, model, result)
    record_evaluation(ledger, {**stamp, **result, "status": "completed", "time": utc_now()})
    log.info(_metrics_line(config.name, model, metrics, intervals))
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
