"""The operating point (threshold) and the temperature, chosen at ``finalize`` without the test set.

The final model is trained on train+val, so its own validation predictions are predictions on its
training data. The threshold (``threshold:``) and the temperature (``calibration: temperature``) are
therefore fitted on validation predictions of a sibling trained on the training split only:

(a) the re-evaluation runs of the winning configuration (``hpstudy confirm`` writes
    ``StudyPaths.selection_predictions(trial_id, seed)``), pooled over their seeds, when they exist;
(b) else the winning trial's own model, rebuilt from its hyperparameters and restored from its Keras Tuner
    checkpoint (weights at its best epoch; the best 3 trials keep theirs), predicting the validation split
    with the train-fitted normalizer, or from the cached validation features for the frozen-backbone family;
(c) else a one-line ``StudyError``, raised by ``check_source`` before the final model is trained.

The temperature is fitted first and the threshold is chosen on the rescaled probabilities, as ``evaluate``
applies them. Both transfer only approximately to the final model (and the fine-tuned one, which uses the
same records); the report says so. With the default ``threshold: 0.5`` and ``calibration: none`` nothing is
computed: the records say so and cost nothing. Both records are stored in ``final/best_config.json``
(keys ``threshold`` and ``calibration``) and the predictions they were fitted on in
``final/validation_predictions.csv``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpstudy._io import atomic_path
from hpstudy.calibration import TEMPERATURE_BOUNDS, apply_temperature, choose_threshold, fit_temperature
from hpstudy.config import StudyConfig
from hpstudy.errors import StudyError
from hpstudy.paths import StudyPaths
from hpstudy.records import update_best_config

__all__ = ["ValidationPredictions", "needs_validation", "check_source", "fixed_records", "fit_operating_point",
           "validation_predictions", "choose_operating_point"]

log = logging.getLogger("hpstudy")

_COLUMNS = ("index", "label", "probability")


@dataclass(frozen=True)
class ValidationPredictions:
    """Validation predictions of models trained on the training split only, and where they come from."""

    index: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    source: str
    n_val: int


def needs_validation(config: StudyConfig) -> bool:
    """True when the study's threshold policy or calibration is fitted on validation predictions."""
    return config.threshold.needs_predictions or config.calibration != "none"


def _settings(config: StudyConfig) -> str:
    policy = config.threshold.to_dict()
    return f"threshold: {policy}, calibration: {config.calibration}"


def check_source(config: StudyConfig, paths: StudyPaths, trial_id: str) -> None:
    """Refuse, before anything is trained, a policy that needs validation predictions nobody can give.

    Raises:
        StudyError: neither re-evaluation predictions nor the trial's checkpoint exist.
    """
    if not needs_validation(config):
        return
    if paths.selection_prediction_files(trial_id) or paths.trial_checkpoint(trial_id).is_file():
        return
    raise StudyError(
        f"{_settings(config)} needs validation predictions of a model trained on the training split only, but trial "
        f"{trial_id} has neither re-evaluation predictions in {paths.selection_dir} nor its checkpoint "
        f"({paths.trial_checkpoint(trial_id)}): run `hpstudy confirm` with --set selection.seeds=3 to retrain it on "
        "the training split, or finalize with --set threshold=0.5 --set calibration=none")


def fixed_records(config: StudyConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``threshold`` and ``calibration`` records when nothing is fitted (a fixed threshold, no calibration)."""
    value = float(config.threshold.target)
    threshold = {"policy": "fixed", "target": None, "value": value,
                 "source": f"fixed by the study (threshold: {value:g}); not chosen on any predictions", "n_val": 0}
    return threshold, _no_calibration()


def _no_calibration() -> dict[str, Any]:
    return {"method": "none", "temperature": None, "fitted_on": "not fitted (calibration: none)"}


def fit_operating_point(config: StudyConfig, val: ValidationPredictions) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the temperature (when asked), then choose the threshold on the (rescaled) validation predictions.

    Returns:
        The ``threshold`` and ``calibration`` records of ``best_config.json``.

    Raises:
        StudyError: the validation predictions hold one class only.
    """
    probs, calibration = val.probabilities, _no_calibration()
    if not 0 < int(val.labels.sum()) < len(val.labels):
        raise StudyError(f"the validation predictions ({val.source}) hold one class only: no threshold or "
                         "temperature can be fitted on them")
    if config.calibration == "temperature":
        temperature = fit_temperature(val.labels, probs)
        if not TEMPERATURE_BOUNDS[0] * 1.01 < temperature < TEMPERATURE_BOUNDS[1] / 1.01:
            log.warning(f"warning: the fitted temperature {temperature:.3g} is at the edge of its range "
                        f"{TEMPERATURE_BOUNDS}: the validation predictions carry almost no signal or are perfectly "
                        "separated, so the rescaled probabilities say little")
        probs = apply_temperature(probs, temperature)
        calibration = {"method": "temperature", "temperature": temperature, "fitted_on": val.source}
    if not config.threshold.needs_predictions:
        return fixed_records(config)[0], calibration
    policy, target = config.threshold.policy, config.threshold.target
    point = choose_threshold(val.labels, probs, policy=policy, target=target)
    scaled = "; chosen after temperature scaling" if calibration["method"] == "temperature" else ""
    threshold = {"policy": policy, "target": target, "value": point.threshold, "source": val.source + scaled,
                 "n_val": val.n_val, "n_predictions": int(len(probs)), "val_sensitivity": point.sensitivity,
                 "val_specificity": point.specificity}
    return threshold, calibration


# --------------------------------------------------------------------------- the validation predictions
def _selection_run(path: Path, y_val: np.ndarray) -> pd.DataFrame:
    """One re-evaluation run's predictions, checked against the validation split as prepared here."""
    try:
        frame = pd.read_csv(path, float_precision="round_trip")
    except (OSError, ValueError) as exc:
        raise StudyError(f"{path} cannot be read ({exc}); delete it or re-run `hpstudy confirm`") from None
    if not set(_COLUMNS) <= set(frame.columns):
        raise StudyError(f"{path} lacks the columns {', '.join(_COLUMNS)} (has {', '.join(map(str, frame.columns))})")
    index = pd.to_numeric(frame["index"], errors="coerce").to_numpy()
    probs = pd.to_numeric(frame["probability"], errors="coerce").to_numpy(dtype="float64")
    fits = (np.isfinite(index).all() and index.min(initial=0) >= 0 and index.max(initial=0) < len(y_val)
            and np.array_equal(frame["label"].to_numpy(), y_val[index.astype("int64")]))
    if not fits or not len(frame) or not np.all((probs >= 0) & (probs <= 1)):
        raise StudyError(f"{path} does not match the {len(y_val)} validation images of this study (index, label or "
                         "probability out of place): re-run `hpstudy confirm --overwrite`")
    return frame


def _from_selection(paths: StudyPaths, y_val: np.ndarray, trial_id: str) -> ValidationPredictions | None:
    files = paths.selection_prediction_files(trial_id)
    if not files:
        return None
    frame = pd.concat([_selection_run(path, y_val) for path in files], ignore_index=True)
    source = (f"validation predictions of {len(files)} re-evaluation run(s) of trial {trial_id}, each trained on the "
              f"training split only, pooled ({len(frame)} predictions of {len(y_val)} images; "
              f"{', '.join(p.name for p in files)})")
    return ValidationPredictions(frame["index"].to_numpy(dtype="int64"), frame["label"].to_numpy(dtype="int64"),
                                 frame["probability"].to_numpy(dtype="float64"), source, int(len(y_val)))


def _restore_and_predict(config: StudyConfig, paths: StudyPaths, prepared: Any, values: dict[str, Any],
                         checkpoint: Path) -> np.ndarray:
    """Rebuild the trial's model as the search built it, load its checkpoint and predict the validation split."""
    import keras

    from hpstudy import features
    from hpstudy.models import build_hypermodel, head_on_features, hyperparameters_object

    keras.backend.clear_session()
    hp = hyperparameters_object(config.search_space, dict(values))
    if features.uses_feature_cache(config):  # the search trained the head alone, on cached features
        cache = features.study_feature_cache(config, prepared, paths.cache_dir)
        val = features.split_features(cache, prepared, "val", 0)
        cache.release()
        model = head_on_features(config.search_space, prepared.input_shape, cache.backbone.source,
                                 config.jit_compile, val.dim).build(hp)
        inputs = val.features[0]
    else:
        model = build_hypermodel(config.family, config.search_space, input_shape=prepared.input_shape,
                                 weights=config.weights, jit_compile=config.jit_compile).build(hp)
        inputs = prepared.normalizer.apply(prepared.x_val)
    try:
        with warnings.catch_warnings():  # the checkpoint also holds the optimizer's slots, not needed to predict
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(checkpoint)
    except (OSError, ValueError) as exc:
        raise StudyError(f"{checkpoint} cannot be loaded into the model of its trial ({str(exc).splitlines()[0]}); "
                         "run `hpstudy confirm` to retrain it on the training split instead") from None
    return np.asarray(model.predict(inputs, verbose=0), dtype="float64").reshape(-1)


def _from_checkpoint(config: StudyConfig, paths: StudyPaths, prepared: Any, trial_id: str,
                     values: dict[str, Any]) -> ValidationPredictions | None:
    checkpoint = paths.trial_checkpoint(trial_id)
    if not checkpoint.is_file():
        return None
    probs = _restore_and_predict(config, paths, prepared, values, checkpoint)
    y_val = np.asarray(prepared.y_val, dtype="int64")
    source = (f"validation predictions ({len(y_val)} images) of trial {trial_id}'s own model, trained on the "
              f"training split only and restored from its checkpoint (weights at its best epoch)")
    return ValidationPredictions(np.arange(len(y_val)), y_val, probs, source, int(len(y_val)))


def validation_predictions(config: StudyConfig, paths: StudyPaths, prepared: Any, trial_id: str,
                           values: dict[str, Any]) -> ValidationPredictions:
    """The validation predictions to fit on: (a) re-evaluation runs, else (b) the restored trial (module docstring).

    Raises:
        StudyError: neither exists (c), or a file does not fit the validation split.
    """
    y_val = np.asarray(prepared.y_val, dtype="int64")
    found = _from_selection(paths, y_val, trial_id) or _from_checkpoint(config, paths, prepared, trial_id, values)
    if found is None:
        check_source(config, paths, trial_id)  # raises the message that says what is missing
        raise StudyError(f"no validation predictions for trial {trial_id}")  # unreachable unless files vanished
    return found


def choose_operating_point(config: StudyConfig, paths: StudyPaths, prepared: Any, trial_id: str,
                           values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the temperature and choose the threshold, and store both records in ``final/best_config.json``.

    Args:
        config: the stage configuration of ``finalize``.
        paths: the study's paths (``best_config.json`` must exist: the final model is saved).
        prepared: the study's prepared data (train-fitted normalizer, validation split).
        trial_id: the finalized (winning) trial.
        values: its hyperparameters.

    Returns:
        The ``threshold`` and ``calibration`` records.

    Raises:
        StudyError: no validation predictions (see ``validation_predictions``) or no ``best_config.json``.
    """
    if not needs_validation(config):
        threshold, calibration = fixed_records(config)
    else:
        val = validation_predictions(config, paths, prepared, trial_id, values)
        threshold, calibration = fit_operating_point(config, val)
        _write_predictions(paths, val, calibration)
    update_best_config(paths, threshold=threshold, calibration=calibration)
    log.info(f"[{config.name}] {_summary(threshold, calibration)}")
    return threshold, calibration


def _write_predictions(paths: StudyPaths, val: ValidationPredictions, calibration: dict[str, Any]) -> None:
    frame = pd.DataFrame({"index": val.index, "label": val.labels, "probability": val.probabilities})
    if calibration.get("temperature"):
        frame["probability_calibrated"] = apply_temperature(val.probabilities, calibration["temperature"])
    with atomic_path(paths.operating_predictions) as tmp:
        frame.to_csv(tmp, index=False)


def _summary(threshold: dict[str, Any], calibration: dict[str, Any]) -> str:
    text = f"threshold {threshold['value']:.4g} ({threshold['policy']}"
    if threshold.get("target") is not None:
        text += f" {threshold['target']:g}"
    if "val_sensitivity" in threshold:
        text += (f": sensitivity {threshold['val_sensitivity']:.3f}, specificity "
                 f"{threshold['val_specificity']:.3f} on validation")
    text += f"; source: {threshold['source']})"
    if calibration["method"] == "temperature":
        text += f"; temperature {calibration['temperature']:.3f} fitted on {calibration['fitted_on']}"
    return text
