"""Explain an evaluated model: Grad-CAM of its true/false positives and negatives on the test split.

Runs after the single test evaluation and reads only its recorded predictions and the same test images;
it is not a second evaluation (the model's scores are not recomputed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy.config import resolve_config
from hpstudy.errors import EvaluationError
from hpstudy.evaluate import best_evaluated_model, model_path
from hpstudy.paths import StudyPaths

__all__ = ["gradcam_study"]

log = logging.getLogger("hpstudy")


def gradcam_study(config: Any, *, model: str | None = None, per_group: int = 4, layer: str | None = None,
                  data: str | Path | None = None) -> dict[str, Path]:
    """Grad-CAM figures for the TP/TN/FP/FN groups of an evaluated model's test predictions."""
    import keras

    from hpstudy import gradcam as gc
    from hpstudy.data.discover import discover
    from hpstudy.data.pipeline import load_images
    from hpstudy.data.prepare import load_data_stats, ordered_class_names

    config = resolve_config(config, data=data)
    paths = StudyPaths(config.study_dir)
    which = model or best_evaluated_model(paths)
    predictions_csv = paths.predictions_csv(which)
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
        names = ordered_class_names(stats)
        titles = [f"{group.upper()}: true {names[int(r.label)]}, p({names[1]})={r.probability:.2f}"
                  for r in rows.itertuples()]
        figures[group] = gc.plot_gradcam_grid(
            images, maps, titles, paths.gradcam_figure(which, group),
            suptitle=f"{config.name} ({which}): Grad-CAM, {group.upper()} (explaining the {explain} class)")
    log.info(f"[{config.name}] Grad-CAM for model '{which}': " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    return figures


def _most_confident(predictions: pd.DataFrame, indices: np.ndarray, group: str) -> np.ndarray:
    """Indices of a group ordered from the most confident prediction to the least."""
    probs = predictions["probability"].to_numpy()[indices]
    order = np.argsort(-probs if group in ("tp", "fp") else probs, kind="stable")
    return np.asarray(indices)[order]
