"""Explain an evaluated model: Grad-CAM of its true/false positives and negatives on the test split.

Runs after the single test evaluation and reads only its recorded predictions and the same test images;
it is not a second evaluation (the model's scores are not recomputed).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from hpstudy.config import StudyConfig, stage_config
from hpstudy.errors import ConfigError, EvaluationError
from hpstudy.evaluate import best_evaluated_model, model_path
from hpstudy.paths import StudyPaths
from hpstudy.records import study_lock

__all__ = ["gradcam_study"]

log = logging.getLogger("hpstudy")


def gradcam_study(config: StudyConfig | str | Path, *, model: str | None = None, per_group: int = 4,
                  layer: str | None = None, data: str | Path | None = None) -> dict[str, Path]:
    """Grad-CAM figures for the TP/TN/FP/FN groups of an evaluated model's test predictions.

    Args:
        config: the study YAML or ``StudyConfig`` (run with the configuration the search froze).
        model: ``final`` or ``finetune``; default: the best evaluated model by test ROC AUC.
        per_group: how many images per group, the most confident first (at least 1).
        layer: the convolutional layer (default: the last one).
        data: data folder or zip; default: the one the search used.

    Returns:
        group -> figure path, for the groups that have images (an empty group is reported, not drawn).

    Raises:
        ConfigError: ``per_group`` below 1, or a layer the model does not have (the message lists candidates).
        EvaluationError: the model has not been evaluated yet.
    """
    if isinstance(per_group, bool) or not isinstance(per_group, int) or per_group < 1:
        raise ConfigError(f"--per-group must be a whole number >= 1, but got {per_group!r}")
    config = stage_config(config, stage="gradcam", data=data)
    paths = StudyPaths(config.study_dir)
    with study_lock(paths, command="gradcam"):
        which = model or best_evaluated_model(paths)
        if not paths.predictions_csv(which).exists():
            raise EvaluationError(f"model '{which}' has not been evaluated yet: run `hpstudy evaluate --model {which}`")
        figures, empty = _draw_groups(config, paths, which, per_group, layer)
    shown = ", ".join(f"{k}={v}" for k, v in figures.items())
    missing = f"; no {', '.join(g.upper() for g in empty)} on the test split, so no figure for it" if empty else ""
    log.info(f"[{config.name}] Grad-CAM for model '{which}': {shown or 'no figure'}{missing}")
    return figures


def _draw_groups(config: StudyConfig, paths: StudyPaths, which: str, per_group: int,
                 layer: str | None) -> tuple[dict[str, Path], list[str]]:
    import keras

    from hpstudy import gradcam as gc
    from hpstudy.data.discover import discover
    from hpstudy.data.pipeline import load_images
    from hpstudy.data.prepare import load_data_stats, ordered_class_names
    from hpstudy.gradcam_figures import plot_gradcam_grid

    predictions = pd.read_csv(paths.predictions_csv(which))
    stats = load_data_stats(paths.data_stats)
    classifier = keras.models.load_model(model_path(paths, which))
    root = discover(config.data, positive_class=config.positive_class, verify=False).root
    groups = gc.outcome_groups(predictions["label"].to_numpy(), predictions["probability"].to_numpy())
    names, figures, empty = ordered_class_names(stats), {}, []
    for group, indices in groups.items():
        chosen = _most_confident(predictions, indices, group)[:per_group]
        if len(chosen) == 0:
            empty.append(group)
            continue
        rows = predictions.iloc[chosen]
        images = load_images([root / p for p in rows["path"]], image_size=tuple(stats["image_size"]))
        explain = "positive" if group in ("tp", "fp") else "negative"
        try:
            maps = gc.heatmap(classifier, stats["normalizer"].apply(images), layer=layer, explain=explain)
        except ValueError as exc:  # e.g. an unknown layer: the message lists the candidates
            raise ConfigError(f"--layer: {exc}") from None
        titles = [f"{group.upper()}: true {names[int(r.label)]}, p({names[1]})={r.probability:.2f}"
                  for r in rows.itertuples()]
        figures[group] = plot_gradcam_grid(
            images, maps, titles, paths.gradcam_figure(which, group),
            suptitle=f"{config.name} ({which}): Grad-CAM, {group.upper()} (explaining the {explain} class)")
    return figures, empty


def _most_confident(predictions: pd.DataFrame, indices: np.ndarray, group: str) -> np.ndarray:
    """Indices of a group ordered from the most confident prediction to the least."""
    probs = predictions["probability"].to_numpy()[indices]
    order = np.argsort(-probs if group in ("tp", "fp") else probs, kind="stable")
    return np.asarray(indices)[order]
