"""The operating point chosen at finalize: its sources (re-evaluation runs, restored checkpoint, none) and records."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from hpstudy import calibration
from hpstudy.config import parse_study
from hpstudy.errors import StudyError
from hpstudy.operating import (
    ValidationPredictions,
    check_source,
    choose_operating_point,
    fit_operating_point,
    validation_predictions,
)
from hpstudy.paths import StudyPaths

SPACE = {"family": "baseline_cnn", "hyperparameters": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}}
Y_VAL = np.array([0, 1] * 10)


def config(tmp_path: Path, **settings: Any) -> Any:
    study = {"name": "op", "family": "baseline_cnn", "search_space": SPACE,
             "oracle": {"type": "random", "max_trials": 1, "epochs": 1}, **settings}
    return parse_study(study, source=tmp_path / "op.yaml")


def write_run(paths: StudyPaths, trial_id: str, seed: int, probs: np.ndarray, labels: np.ndarray = Y_VAL) -> Path:
    path = paths.selection_predictions(trial_id, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"index": np.arange(len(labels)), "label": labels, "probability": probs}).to_csv(path, index=False)
    return path


def write_best_config(paths: StudyPaths, **extra: Any) -> None:
    paths.final_dir.mkdir(parents=True, exist_ok=True)
    paths.best_config.write_text(json.dumps({
        "trial_id": "01", "score": 0.9, "objective": "val_auc", "hyperparameters": {}, "best_epoch": 2, "epochs": 2,
        "family": "baseline_cnn", "model": "model.keras", "model_sha256": "0" * 64, **extra}))


def test_re_evaluation_runs_are_pooled_and_said_so(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "op")
    rng = np.random.default_rng(0)
    runs = [expit(2 * (Y_VAL - 0.5) + rng.normal(0, 1, 20)) for _ in range(3)]
    for seed, probs in zip((12, 7, 30), runs):
        write_run(paths, "01", seed, probs)
    write_run(paths, "02", 1, runs[0])  # another trial's run is not pooled
    prepared = SimpleNamespace(y_val=Y_VAL)  # (a) needs no model: the checkpoint is never touched
    val = validation_predictions(config(tmp_path, threshold="youden"), paths, prepared, "01", {})
    assert len(val.probabilities) == 60 and val.n_val == 20 and np.array_equal(val.labels, np.tile(Y_VAL, 3))
    assert np.array_equal(val.probabilities, np.concatenate([runs[1], runs[0], runs[2]]))  # by seed: 7, 12, 30
    assert "3 re-evaluation run(s) of trial 01" in val.source and "pooled (60 predictions of 20 images" in val.source
    assert "val-01-seed7.csv" in val.source and "training split only" in val.source


def test_a_run_that_does_not_match_the_validation_split_is_refused(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "op")
    write_run(paths, "01", 1, np.full(20, 0.5), labels=1 - Y_VAL)
    with pytest.raises(StudyError, match=r"val-01-seed1\.csv does not match the 20 validation images .*confirm"):
        validation_predictions(config(tmp_path, threshold="youden"), paths, SimpleNamespace(y_val=Y_VAL), "01", {})


def test_no_source_is_a_one_line_error_before_training(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "op")
    check_source(config(tmp_path), paths, "01")  # the default needs nothing
    for settings in ({"threshold": {"sensitivity": 0.95}}, {"calibration": "temperature"}):
        with pytest.raises(StudyError, match=r"needs validation predictions of a model trained on the training "
                                             r"split only, but trial 01 has neither .* nor its checkpoint "
                                             r".*checkpoint\.weights\.h5.*hpstudy confirm.*--set threshold=0\.5 "
                                             r"--set calibration=none"):
            check_source(config(tmp_path, **settings), paths, "01")
    paths.trial_dir("01").mkdir(parents=True)
    paths.trial_checkpoint("01").write_bytes(b"weights")
    check_source(config(tmp_path, threshold="youden"), paths, "01")


def _val(probs: np.ndarray, labels: np.ndarray) -> ValidationPredictions:
    return ValidationPredictions(np.arange(len(labels)), labels, probs, "validation predictions of a sibling", 40)


def test_threshold_is_chosen_after_the_temperature(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(0, 3, 400)
    labels = (rng.random(400) < expit(z / 2)).astype(int)
    val = _val(expit(z), labels)
    settings = config(tmp_path, threshold={"sensitivity": 0.9}, calibration="temperature")
    threshold, fitted = fit_operating_point(settings, val)
    temperature = calibration.fit_temperature(labels, expit(z))
    scaled = calibration.apply_temperature(expit(z), temperature)
    expected = calibration.choose_threshold(labels, scaled, policy="sensitivity", target=0.9)
    assert fitted == {"method": "temperature", "temperature": temperature, "fitted_on": val.source}
    assert threshold["value"] == expected.threshold and threshold["val_sensitivity"] >= 0.9
    assert (threshold["policy"], threshold["target"], threshold["n_val"], threshold["n_predictions"]) == \
        ("sensitivity", 0.9, 40, 400)
    assert threshold["source"] == val.source + "; chosen after temperature scaling"
    plain, none = fit_operating_point(config(tmp_path, threshold={"sensitivity": 0.9}), val)
    assert none["method"] == "none" and plain["value"] == calibration.choose_threshold(
        labels, expit(z), policy="sensitivity", target=0.9).threshold
    fixed, _ = fit_operating_point(config(tmp_path, threshold=0.3, calibration="temperature"), val)
    assert fixed["value"] == 0.3 and fixed["policy"] == "fixed"


def test_one_class_validation_predictions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="hold one class only"):
        fit_operating_point(config(tmp_path, threshold="youden"), _val(np.full(5, 0.4), np.zeros(5, dtype=int)))


def test_the_default_computes_nothing_and_keeps_other_records(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "op")
    write_best_config(paths, selection={"winner": "01"})
    threshold, fitted = choose_operating_point(config(tmp_path), paths, None, "01", {})  # no data touched
    stored = json.loads(paths.best_config.read_text())
    assert stored["threshold"] == threshold and stored["calibration"] == fitted
    assert threshold["policy"] == "fixed" and threshold["value"] == 0.5 and threshold["n_val"] == 0
    assert fitted == {"method": "none", "temperature": None, "fitted_on": "not fitted (calibration: none)"}
    assert stored["selection"] == {"winner": "01"} and stored["model_sha256"] == "0" * 64
    assert not paths.operating_predictions.exists()


def test_a_chosen_threshold_is_stored_with_its_predictions(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "op")
    write_best_config(paths)
    probs = np.linspace(0.05, 0.95, 20)
    write_run(paths, "01", 3, probs)
    threshold, _ = choose_operating_point(config(tmp_path, threshold={"specificity": 0.8}), paths,
                                          SimpleNamespace(y_val=Y_VAL), "01", {})
    stored = json.loads(paths.best_config.read_text())["threshold"]
    saved = pd.read_csv(paths.operating_predictions)
    assert stored == threshold and list(saved.columns) == ["index", "label", "probability"]
    assert stored["value"] == calibration.choose_threshold(saved["label"], saved["probability"], policy="specificity",
                                                           target=0.8).threshold
    assert stored["val_specificity"] >= 0.8
