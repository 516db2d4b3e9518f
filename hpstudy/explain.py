"""Explain an evaluated model: Grad-CAM of its true/false positives and negatives on the test split, and
the shortcut probes (``hpstudy.probes``).

Both run after the single test evaluation and read its recorded predictions and the same test images;
neither is a second evaluation. Grad-CAM does not recompute the model's scores; the probes do, on masked
copies of the images, and are recorded in the ledger as probes (``"kind": "probe"``), which never count
as a use of the test set.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._io import file_sha256, utc_now, write_problem
from hpstudy.config import StudyConfig, frozen_fingerprint, stage_config
from hpstudy.errors import ConfigError, EvaluationError, StudyError
from hpstudy.evaluate import best_evaluated_model, model_path
from hpstudy.paths import StudyPaths
from hpstudy.probes import ProbeInputs, run_probes, status_word
from hpstudy.probes_figures import plot_probes
from hpstudy.records import (
    PROBE_KIND,
    evaluation_entries,
    read_metrics,
    record_evaluation,
    study_lock,
    write_probes,
)

__all__ = ["gradcam_study", "probe_study", "evaluation_threshold"]

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

    predictions = pd.read_csv(paths.predictions_csv(which), float_precision="round_trip")
    stats = load_data_stats(paths.data_stats)
    classifier = keras.models.load_model(model_path(paths, which))
    root = discover(config.data, positive_class=config.positive_class, verify=False).root
    groups = gc.outcome_groups(predictions["label"].to_numpy(), predictions["probability"].to_numpy(),
                               threshold=evaluation_threshold(read_metrics(paths, which) or {}))
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


def evaluation_threshold(evaluation: dict[str, Any]) -> float:
    """The threshold an evaluation's metrics were computed at (its operating point; 0.5 in older files)."""
    return float((evaluation.get("threshold_info") or {}).get("value", evaluation.get("threshold", 0.5)))


def _most_confident(predictions: pd.DataFrame, indices: np.ndarray, group: str) -> np.ndarray:
    """Indices of a group ordered from the most confident prediction to the least."""
    probs = predictions["probability"].to_numpy()[indices]
    order = np.argsort(-probs if group in ("tp", "fp") else probs, kind="stable")
    return np.asarray(indices)[order]


# --------------------------------------------------------------------------- shortcut probes

def probe_study(config: StudyConfig | str | Path, *, model: str = "final", data: str | Path | None = None,
                layer: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                n_boot: int = 1000) -> dict[str, Any]:
    """Run the shortcut probes (``hpstudy.probes``) on the test split of a model whose evaluation completed.

    Writes ``evaluation/<model>/probes.json`` and ``probes.png`` and records the run in the ledger as a
    probe (started, then completed or failed), never as an evaluation. Running it again recomputes it.

    Args:
        config: the study YAML or ``StudyConfig`` (run with the configuration the search froze).
        model: ``final`` or ``finetune``.
        data: data folder or zip; default: the one the search used.
        layer: Grad-CAM layer (default: the last convolutional one).
        overrides: ``probes.center=...`` / ``probes.border=...`` settings (later-stage settings only).
        n_boot: bootstrap resamples of the AUC intervals.

    Returns:
        The ``probes.json`` record: AUCs, mass fractions, one verdict sentence per probe, ``flagged``.

    Raises:
        EvaluationError: the model has not completed its test evaluation (the test split is not read).
        StudyError: no such model, a model file that is not this study's, or another test split than the
            evaluated one.
        ConfigError: a layer the model does not have, or bad probe regions.
    """
    from hpstudy.runtime import quiet_tensorflow

    quiet_tensorflow()
    config = stage_config(config, stage="probe", data=data, overrides=overrides)
    paths = StudyPaths(config.study_dir)
    with study_lock(paths, command="probe"):
        path = model_path(paths, model)
        sha = file_sha256(path)
        evaluation = _completed_evaluation(config, paths, model, sha)
        inputs = _probe_inputs(config, paths, model, evaluation)
        stamp = {"kind": PROBE_KIND, "model": model, "model_sha256": sha, "dataset": "test", "study": config.name,
                 "attempt": uuid.uuid4().hex[:12]}
        record_evaluation(paths.ledger, {**stamp, "status": "started", "time": utc_now()})
        try:
            result = {**stamp, **_probe(config, path, inputs, layer, n_boot), "time": utc_now()}
            write_probes(paths, model, result)
        except Exception as exc:
            reason = write_problem(exc) or f"{type(exc).__name__}: {exc}"
            record_evaluation(paths.ledger, {**stamp, "status": "failed", "reason": reason, "time": utc_now()})
            raise
        record_evaluation(paths.ledger, {**stamp, "status": "completed", "flagged": result["flagged"],
                                         "time": utc_now()})
        plot_probes(result, inputs.x[0], paths.probes_figure(model),
                    title=f"{config.name} ({model}): shortcut probes on the test split")
    for sentence in result["verdicts"]:
        log.info(f"[{config.name}] {model}: {sentence}")
    log.info(f"[{config.name}] shortcut probes of model '{model}': {status_word(result['flagged'])}; "
             f"{paths.probes_json(model)} and "
             f"{paths.probes_figure(model).name} (recorded in the ledger as a probe, not an evaluation)")
    return result


def _completed_evaluation(config: StudyConfig, paths: StudyPaths, model: str, sha: str) -> dict[str, Any]:
    """The metrics of this model file's completed test evaluation; refuses before it (nothing read yet)."""
    done = [e for e in evaluation_entries(paths) if e.get("model_sha256") == sha
            and e.get("dataset", "test") == "test" and e.get("status", "completed") == "completed"]
    metrics = read_metrics(paths, model)
    if not done or not metrics or metrics.get("model_sha256") != sha or not paths.predictions_csv(model).is_file():
        target = config.source or f"studies/{config.name}.yaml"
        raise EvaluationError(f"model '{model}' has not completed its test evaluation (none of this model file in "
                              f"{paths.ledger}): run `hpstudy evaluate {target} --model {model}` first; the probes "
                              "read the test split only after its single evaluation")
    return metrics


def _probe_inputs(config: StudyConfig, paths: StudyPaths, model: str, evaluation: dict[str, Any]) -> ProbeInputs:
    from hpstudy.data.discover import check_fingerprint, discover
    from hpstudy.data.pipeline import load_split
    from hpstudy.data.prepare import load_data_stats

    stats = load_data_stats(paths.data_stats)
    source = discover(config.data, positive_class=config.positive_class, verify=False)
    check_fingerprint(source, frozen_fingerprint(config))
    records = source.split("test")
    predictions = pd.read_csv(paths.predictions_csv(model), float_precision="round_trip")
    if [str(r.path.relative_to(source.root)) for r in records] != list(predictions["path"]):
        raise StudyError(f"the test split of {config.data} is not the one evaluated ({paths.predictions_csv(model)} "
                         "lists other images): probe the data that was evaluated")
    x, y = load_split(records, image_size=tuple(stats["image_size"]))
    threshold = evaluation_threshold(evaluation)
    raw = predictions["probability_uncalibrated"].to_numpy() if "probability_uncalibrated" in predictions else None
    return ProbeInputs(x, y, predictions["probability"].to_numpy(), stats["normalizer"],
                       [r.path for r in records], source.root, float(threshold), raw)


def _probe(config: StudyConfig, path: Path, inputs: ProbeInputs, layer: str | None, n_boot: int) -> dict[str, Any]:
    import keras

    classifier = keras.models.load_model(path)
    return run_probes(classifier, inputs, center=config.probes.center, border=config.probes.border, layer=layer,
                      n_boot=n_boot, seed=config.seed)

