"""The single, guarded test evaluation of a finalized model, and Grad-CAM on its test outcomes.

``evaluate_study`` is the only place that reads the test split. It checks the model file belongs to
the study, refuses a second evaluation of the same file unless forced, runs the full leak check
(now including the test split), and writes ``evaluation/<model>/`` plus a ledger line.
"""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._io import atomic_path, atomic_write_json
from hpstudy.errors import EvaluationError, StudyError
from hpstudy.finalize import file_sha256
from hpstudy.ledger import check_first_evaluation, read_ledger, record_evaluation
from hpstudy.paths import StudyPaths

__all__ = ["MODELS", "evaluate_study", "gradcam_study", "model_path", "best_evaluated_model"]

MODELS = ("final", "finetune")
LEDGER = "test_ledger.jsonl"


def model_path(paths: StudyPaths, which: str) -> Path:
    """Path of the ``final`` or ``finetune`` model of a study, checked to belong to it.

    Raises:
        StudyError: unknown name, no model yet, or a file that is not the one this study saved.
    """
    if which not in MODELS:
        raise StudyError(f"--model must be one of {', '.join(MODELS)}, but got {which!r}")
    folder = paths.final_dir if which == "final" else paths.finetune_dir
    path, record = folder / "model.keras", _model_record(paths, which)
    if not path.exists():
        hint = ("run `hpstudy finalize` first" if which == "final" else
                "fine-tuning kept the head model (see finetune/lr_backoff.json)" if record
                else "run `hpstudy finalize` on a transfer-model study first")
        raise StudyError(f"no {which} model at {path}: {hint}")
    expected = (record or {}).get("model_sha256")
    if not expected:
        recorded_in = folder / ("best_config.json" if which == "final" else "lr_backoff.json")
        raise StudyError(f"{path} has no SHA-256 recorded in {recorded_in}, so hpstudy cannot tell it is the model "
                         "this study saved; re-run `hpstudy finalize`")
    if file_sha256(path) != expected:
        raise StudyError(f"{path} is not the model this study saved (its SHA-256 differs from the one recorded "
                         f"in {folder}); was it copied from another study? Re-run `hpstudy finalize`.")
    return path


def _model_record(paths: StudyPaths, which: str) -> dict[str, Any] | None:
    record = paths.final_dir / "best_config.json" if which == "final" else paths.finetune_dir / "lr_backoff.json"
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _load_test(config: Any, paths: StudyPaths) -> tuple[Any, np.ndarray, np.ndarray, Any, list[str]]:
    from hpstudy.data.discover import discover
    from hpstudy.data.leak import check_leaks
    from hpstudy.data.pipeline import load_split
    from hpstudy.data.prepare import load_data_stats

    stats = load_data_stats(paths.data_stats)
    source = discover(config.data, positive_class=config.positive_class, verify=True)
    leaks = check_leaks(source, severity=config.leak_check, out_csv=paths.evaluation_dir / "leaks_all_splits.csv")
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

    from hpstudy import evaluate as ev
    from hpstudy.study import resolve_config

    config = resolve_config(config, data=data)
    paths = StudyPaths(config.study_dir)
    path = model_path(paths, model)
    sha = file_sha256(path)
    ledger = paths.evaluation_dir / LEDGER
    earlier = check_first_evaluation(ledger, sha, force=force)
    stats, x, y, leaks, names = _load_test(config, paths)
    stamp = {"model": model, "model_sha256": sha, "study": config.name, "user": _user(), "model_file": str(path),
             "forced": bool(earlier)}
    # Recorded before the model sees the test images: a crash from here on still counts as a use.
    record_evaluation(ledger, {**stamp, "status": "started", "time": _now()})
    probs = keras.models.load_model(path).predict(stats["normalizer"].apply(x), verbose=0).reshape(-1)
    metrics = ev.binary_metrics(y, probs)
    intervals = ev.bootstrap_ci(y, probs, n_boot=n_boot, seed=config.seed)
    out = paths.evaluation_dir / model
    class_names = _ordered_classes(stats)
    ev.plot_confusion_matrix(ev.confusion(y, probs), class_names, out / "confusion_matrix.png",
                             title=f"{config.name} ({model}): test confusion matrix")
    ev.plot_roc(y, probs, out / "roc.png", title=f"{config.name} ({model}): test ROC",
                auc_ci=intervals.get("roc_auc"))
    ev.plot_prediction_samples(x, y, probs, class_names, out / "samples.png", seed=config.seed)
    with atomic_path(out / "predictions.csv") as tmp:
        pd.DataFrame({"path": names, "label": y.astype(int), "probability": probs}).to_csv(tmp, index=False)
    result = {"model": model, "model_sha256": sha, "n_test": int(len(y)), "threshold": 0.5,
              "metrics": metrics, "ci95": {k: list(v) for k, v in intervals.items()},
              "leaks_across_all_splits": int(len(leaks)), "forced": bool(earlier)}
    atomic_write_json(out / "metrics.json", result)
    record_evaluation(ledger, {**stamp, **result, "status": "completed", "time": _now()})
    print(_metrics_line(config.name, model, metrics, intervals))
    return result


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _ordered_classes(stats: dict[str, Any]) -> list[str]:
    """Class names ordered (negative, positive) for the binary label 0/1."""
    positive = stats["positive_class"]
    negatives = [c for c in stats["class_names"] if c != positive]
    return [" / ".join(negatives), positive]


def _metrics_line(name: str, model: str, metrics: dict[str, Any], intervals: dict[str, Any]) -> str:
    parts = []
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1"):
        low, high = intervals.get(key, (np.nan, np.nan))
        parts.append(f"{key} {metrics[key]:.3f} [{low:.3f}, {high:.3f}]")
    return f"[{name}] test ({model}): " + "; ".join(parts)


def best_evaluated_model(paths: StudyPaths) -> str:
    """The model with the best test ROC AUC in the ledger (the course's rule for Grad-CAM)."""
    entries = [e for e in read_ledger(paths.evaluation_dir / LEDGER) if e.get("model") in MODELS and e.get("metrics")]
    if not entries:
        raise EvaluationError(f"no evaluation in {paths.evaluation_dir / LEDGER}: run `hpstudy evaluate` first")
    latest = {e["model"]: e for e in entries}
    return max(latest.values(), key=lambda e: e["metrics"].get("roc_auc", -1.0))["model"]


def gradcam_study(config: Any, *, model: str | None = None, per_group: int = 4, layer: str | None = None,
                  data: str | Path | None = None) -> dict[str, Path]:
    """Grad-CAM figures for the TP/TN/FP/FN groups of an evaluated model's test predictions."""
    import keras

    from hpstudy import gradcam as gc
    from hpstudy.data.discover import discover
    from hpstudy.data.pipeline import load_images
    from hpstudy.data.prepare import load_data_stats
    from hpstudy.study import resolve_config

    config = resolve_config(config, data=data)
    paths = StudyPaths(config.study_dir)
    which = model or best_evaluated_model(paths)
    predictions_csv = paths.evaluation_dir / which / "predictions.csv"
    if not predictions_csv.exists():
        raise EvaluationError(f"model '{which}' has not been evaluated yet: run `hpstudy evaluate --model {which}`")
    predictions = pd.read_csv(predictions_csv)
    stats = load_data_stats(paths.data_stats)
    classifier = keras.models.load_model(model_path(paths, which))
    root = discover(config.data, positive_class=config.positive_class, verify=False).root
    groups = gc.outcome_groups(predictions["label"].to_numpy(), predictions["probability"].to_numpy())
    figures = {}
    for group, indices in groups.items():
        chosen = _most_confident(predictions, indices, group)[:per_group]
        if len(chosen) == 0:
            continue
        rows = predictions.iloc[chosen]
        images = load_images([root / p for p in rows["path"]], image_size=tuple(stats["image_size"]))
        explain = "positive" if group in ("tp", "fp") else "negative"
        maps = gc.heatmap(classifier, stats["normalizer"].apply(images), layer=layer, explain=explain)
        names = _ordered_classes(stats)
        titles = [f"{group.upper()}: true {names[int(r.label)]}, p({names[1]})={r.probability:.2f}"
                  for r in rows.itertuples()]
        figures[group] = gc.plot_gradcam_grid(
            images, maps, titles, paths.evaluation_dir / which / f"gradcam_{group}.png",
            suptitle=f"{config.name} ({which}): Grad-CAM, {group.upper()} (explaining the {explain} class)")
    print(f"[{config.name}] Grad-CAM for model '{which}': " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    return figures


def _most_confident(predictions: pd.DataFrame, indices: np.ndarray, group: str) -> np.ndarray:
    """Indices of a group ordered from the most confident prediction to the least."""
    probs = predictions["probability"].to_numpy()[indices]
    order = np.argsort(-probs if group in ("tp", "fp") else probs, kind="stable")
    return np.asarray(indices)[order]
